import { UserError } from '../errors';
import type { Town } from '../town';

/**
 * Connects, runs `fn` with the town, and always closes the connection (so the CLI exits promptly). The Temporal
 * client is imported here, when a command runs, not when it is registered: `--help` and argument errors stay fast.
 */
export async function withTown<T>(fn: (town: Town) => Promise<T>): Promise<T> {
  const [{ connectClient }, { Town }] = await Promise.all([import('../../host/connection'), import('../town')]);
  const { client, connection } = await connectClient();
  try {
    return await fn(new Town(client));
  } finally {
    await connection.close();
  }
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function intArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got '${value}'`);
    return n;
  };
}

/** `name=value` flags (`--var`, `--formula-var`) as a record; a malformed one is a one-line UserError. */
export function varFlags(flags: readonly string[], flag = '--var'): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const f of flags) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new UserError(`${flag} takes name=value, got '${f}'`);
    vars[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return vars;
}
