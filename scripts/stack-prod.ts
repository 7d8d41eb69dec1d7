/**
 * `npm run stack:prod`: the production topology on this machine (provisioning/prod-stack.ts): PostgreSQL, the full
 * Temporal server with SQL visibility, the Web UI server and N `gt worker` hosts, configured from docker-compose.yml.
 * It runs in the foreground until Ctrl-C (or `npm run stack:prod -- stop` from another shell) and prints how to point
 * `gt` at it. Data stays in the state directory between runs; `--reset` starts from nothing.
 *
 *   npm run stack:prod [-- [start] [--state-dir DIR] [--hosts N] [--port P] [--ui-port P | --no-ui] [--reset]]
 *   npm run stack:prod -- stop [--state-dir DIR]
 *
 * One stack per state directory: its supervisor is recorded (pid and start time) in DIR/stack.json; a second start
 * on the same directory is refused while the first runs, and `stop` signals only the recorded process.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { startProdStack, type ProdStack } from '../provisioning/prod-stack';
import { isSameProcessAlive, processStartTime } from '../provisioning/proc';
import { TEMPORAL_SERVER_VERSION } from '../provisioning/temporal-server';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'state-dir': { type: 'string' },
    hosts: { type: 'string', default: '2' },
    port: { type: 'string' },
    'ui-port': { type: 'string' },
    'no-ui': { type: 'boolean', default: false },
    reset: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

const port = z.coerce.number().int().min(1).max(65535);
const Args = z.object({
  command: z.enum(['start', 'stop']),
  stateDir: z.string().min(1),
  hosts: z.coerce.number().int().min(1).max(16),
  port: port.optional(),
  uiPort: port.optional(),
  noUi: z.boolean(),
  reset: z.boolean(),
});
const uid = process.getuid?.() ?? 'user';
const parsed = Args.safeParse({
  command: positionals[0] ?? 'start',
  // Under the temporary directory by default: as root, PostgreSQL runs as the postgres user, who cannot enter /root.
  stateDir: resolve(values['state-dir'] ?? join(tmpdir(), `gastown-stack-prod-${uid}`)),
  hosts: values.hosts,
  port: values.port,
  uiPort: values['ui-port'],
  noUi: values['no-ui'],
  reset: values.reset,
});
if (values.help || !parsed.success) {
  if (!parsed.success)
    console.error(`stack:prod: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  console.error(
    'usage: npm run stack:prod -- [start|stop] [--state-dir DIR] [--hosts N] [--port P] [--ui-port P | --no-ui] [--reset]',
  );
  process.exit(values.help ? 0 : 2);
}
const args = parsed.data;
const recordFile = join(args.stateDir, 'stack.json');
const Record = z.object({ pid: z.number().int(), startTime: z.string(), address: z.string() });

function liveRecord(): z.infer<typeof Record> | undefined {
  if (!existsSync(recordFile)) return undefined;
  const r = Record.safeParse(JSON.parse(readFileSync(recordFile, 'utf8')));
  return r.success && isSameProcessAlive(r.data.pid, r.data.startTime) ? r.data : undefined;
}

if (args.command === 'stop') {
  const r = liveRecord();
  if (!r) {
    console.log(`no stack runs from ${args.stateDir}`);
    process.exit(0);
  }
  process.kill(r.pid, 'SIGTERM');
  const deadline = Date.now() + 90_000;
  while (isSameProcessAlive(r.pid, r.startTime) && Date.now() < deadline)
    await new Promise((ok) => setTimeout(ok, 250));
  // Its children die with it (parent-death signal), so a supervisor that did not drain in time is killed whole.
  if (isSameProcessAlive(r.pid, r.startTime)) process.kill(r.pid, 'SIGKILL');
  console.log(`stack of ${args.stateDir} stopped (was serving ${r.address})`);
  process.exit(0);
}

const running = liveRecord();
if (running) {
  console.error(
    `a stack already runs from ${args.stateDir} (pid ${running.pid}, ${running.address}); stop it with \`npm run stack:prod -- stop --state-dir ${args.stateDir}\``,
  );
  process.exit(1);
}
if (args.reset) rmSync(args.stateDir, { recursive: true, force: true });
mkdirSync(args.stateDir, { recursive: true });

let stopping = false;
/** The stack once it is up: a component that dies before that fails the start instead. */
const current: { stack?: ProdStack } = {};
const stack = await startProdStack({
  stateDir: args.stateDir,
  hosts: args.hosts,
  port: args.port,
  uiPort: args.noUi ? false : args.uiPort,
  onProgress: (m) => console.error(m),
  onExit: (component, reason) => {
    if (stopping) return;
    // Nothing restarts a component behind the operator's back: the stack stops whole and says why.
    console.error(`stack:prod: ${reason}; stopping the stack.`);
    process.exitCode = 1;
    void shutdown();
  },
}).catch((err: unknown) => {
  console.error(`stack:prod: ${(err as Error).message}`);
  process.exit(1);
});
current.stack = stack;
// A component that died while the rest was still starting: stop now (shutdown waited for the stack to exist).
if (process.exitCode === 1) await shutdown();
writeFileSync(
  recordFile,
  `${JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) ?? '', address: stack.address })}\n`,
);
const exports = Object.entries(stack.clientEnv)
  .map(([k, v]) => `export ${k}=${v}`)
  .join('\n');
writeFileSync(join(args.stateDir, 'env'), `${exports}\n`);

console.log(
  [
    '',
    `Production-topology stack up (state in ${args.stateDir}; logs in ${join(args.stateDir, 'logs')}):`,
    `  PostgreSQL   127.0.0.1 (data ${join(args.stateDir, 'postgres')})`,
    `  Temporal     ${stack.address}  server ${TEMPORAL_SERVER_VERSION}, PostgreSQL persistence + SQL visibility, namespace ${stack.namespace}`,
    `  Web UI       ${stack.uiUrl ?? '(none)'}`,
    ...stack.hosts.map(
      (h) => `  Host         ${h.hostId}: gt worker, GT_HOME ${h.gtHome}, gateway 127.0.0.1:${h.gatewayPort}`,
    ),
    '',
    'Point gt at it (standard Temporal variables; also in the file below):',
    ...exports.split('\n').map((l) => `  ${l}`),
    `  # or: source ${join(args.stateDir, 'env')}`,
    '  gt rig add demo --repo /path/to/repo --gate "npm test" --agent "…"   # then gt sling / gt convoy start',
    '',
    `Ctrl-C here, or \`npm run stack:prod -- stop --state-dir ${args.stateDir}\`, stops it; data stays (--reset wipes it).`,
  ].join('\n'),
);

async function shutdown(): Promise<void> {
  if (stopping || !current.stack) return;
  stopping = true;
  console.error('stack:prod: stopping (hosts drain first)…');
  await current.stack.stop();
  rmSync(recordFile, { force: true });
  console.error('stack:prod: stopped.');
  process.exit();
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());
