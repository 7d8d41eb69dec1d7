/**
 * The soak's town: a Temporal server and N `gt worker` hosts (provisioning/prod-stack.ts's `workerHost`: each its own
 * GT_HOME, host id and fixed gateway port, all on one town queue with one gateway secret), in one of two shapes:
 *  - `prod`: the production topology of provisioning/prod-stack.ts (Debian PostgreSQL, the full Temporal server v1.29
 *    with SQL visibility, configured from docker-compose.yml). Every fault kind applies, `restart-postgres` included.
 *  - `dev`: the CLI's embedded dev server on a SQLite file (faster to start and lighter on a loaded machine); its
 *    kill-server restarts it on the same file and port. There is no PostgreSQL to restart.
 * The faults act through the stack's components: kill -9 of a host (worker and every process it started, i.e. its
 * agents and gates), of the server or of PostgreSQL (postmaster and backends), each started again on the same data
 * and port.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { startDevServer, type DevServer } from '../../provisioning/dev-server';
import { freePort, startProdStack, workerHost, type WorkerHostComponent } from '../../provisioning/prod-stack';

export const STACK_KINDS = ['prod', 'dev'] as const;
export type StackKind = (typeof STACK_KINDS)[number];

export interface SoakStack {
  kind: StackKind;
  address: string;
  namespace: string;
  taskQueue: string;
  hosts: WorkerHostComponent[];
  /** kill -9 of the Temporal server; `restart` starts it again on the same persistence and port. */
  killServer(): Promise<{ pid: number; restart: () => Promise<void> }>;
  /** kill -9 of PostgreSQL's postmaster and backends; `restart` starts it on the same data directory and port. */
  killPostgres?(): Promise<{ pid: number; restart: () => Promise<void> }>;
  /** Components that exited without being asked to (a fault's victim restarted by the chaos driver is not one). */
  unexpectedExits: string[];
  stop(): Promise<void>;
}

export interface SoakStackOptions {
  kind: StackKind;
  scratch: string;
  hosts: number;
  /** The town's settings every host gets (GT_WORKFLOW_BUNDLE, …) on top of the stack's own. */
  workerEnv: Record<string, string>;
  gatewaySecret: string;
  log: (line: string) => void;
}

export async function startSoakStack(o: SoakStackOptions): Promise<SoakStack> {
  const unexpectedExits: string[] = [];
  const onExit = (_component: string, reason: string) => {
    unexpectedExits.push(reason);
    o.log(`UNEXPECTED EXIT: ${reason}`);
  };
  if (o.kind === 'prod') {
    // A directory of its own beside the scratch one: as root, PostgreSQL runs as the postgres user, who must pass
    // through every ancestor of its data, while the scratch directory (agents' copied tokens) stays the owner's only.
    const stateDir = mkdtempSync(join(tmpdir(), `${basename(o.scratch)}-stack-`));
    o.log(`stack state (PostgreSQL's data, hosts' GT_HOMEs, logs): ${stateDir}`);
    const stack = await startProdStack({
      stateDir,
      hosts: o.hosts,
      uiPort: false,
      workerEnv: { GT_GATEWAY_SECRET: o.gatewaySecret, ...o.workerEnv },
      onProgress: (m) => o.log(`stack: ${m}`),
      onExit,
    });
    const killOf = (c: typeof stack.server) => async () => {
      const pid = c.pid();
      if (!pid) throw new Error(`${c.name} is not running`);
      await c.kill();
      return { pid, restart: () => c.start() };
    };
    return {
      kind: 'prod',
      address: stack.address,
      namespace: stack.namespace,
      taskQueue: stack.taskQueue,
      hosts: stack.hosts,
      killServer: killOf(stack.server),
      killPostgres: killOf(stack.postgres),
      unexpectedExits,
      stop: () => stack.stop(),
    };
  }

  const logs = join(o.scratch, 'logs');
  mkdirSync(logs, { recursive: true });
  const dbFilename = join(o.scratch, 'temporal.db');
  const namespace = 'default';
  const taskQueue = 'soak';
  const serverOptions = { dbFilename, namespace, logFile: join(logs, 'temporal-dev-server.log') };
  // A server killed on purpose exits too: only other exits are reported.
  let killed = false;
  const serverExit = (reason: string) => {
    if (!killed) onExit('dev-server', reason);
  };
  let server: DevServer = await startDevServer({ ...serverOptions, onExit: serverExit });
  const port = Number(server.address.split(':').pop());
  const hosts: WorkerHostComponent[] = [];
  for (let i = 0; i < o.hosts; i++) {
    const hostId = `host-${i + 1}`;
    hosts.push(
      workerHost({
        hostId,
        gtHome: join(o.scratch, 'hosts', hostId),
        gatewayPort: await freePort(),
        env: {
          TEMPORAL_ADDRESS: server.address,
          TEMPORAL_NAMESPACE: namespace,
          GT_TASK_QUEUE: taskQueue,
          GT_GATEWAY_SECRET: o.gatewaySecret,
          ...o.workerEnv,
        },
        logFile: join(logs, `${hostId}.log`),
        onExit,
      }),
    );
  }
  await Promise.all(hosts.map((h) => h.start()));
  return {
    kind: 'dev',
    address: server.address,
    namespace,
    taskQueue,
    hosts,
    async killServer() {
      const pid = server.pid;
      if (!pid) throw new Error('the server pid is unknown (SDK-downloaded CLI)');
      killed = true;
      const exited = new Promise<void>((done) => waitForExit(pid, done));
      process.kill(pid, 'SIGKILL');
      await exited;
      return {
        pid,
        restart: async () => {
          server = await startDevServer({ ...serverOptions, port, onExit: serverExit });
          killed = false;
        },
      };
    },
    unexpectedExits,
    async stop() {
      for (const h of hosts) await h.stop().catch(() => undefined);
      if (!killed) await server.stop();
    },
  };
}

/** Calls `done` once `pid` is gone (polled: the dev server is not a child handle we hold here). */
function waitForExit(pid: number, done: () => void): void {
  const poll = setInterval(() => {
    try {
      process.kill(pid, 0);
    } catch {
      clearInterval(poll);
      done();
    }
  }, 50);
}
