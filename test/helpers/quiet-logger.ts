/** A logger for the bundler and workers in tests: errors only. */
const noop = () => undefined;
export const quietLogger = {
  trace: noop,
  debug: noop,
  info: noop,
  warn: noop,
  error: (m: string) => console.error(m),
  log: noop,
};
