/**
 * The production topology on one machine, without images: Debian PostgreSQL on loopback, the schemas made by
 * Temporal's own SQL tool, the full multi-service Temporal server (frontend, history, matching and worker services
 * in one process, as the temporalio/server image runs them) with SQL visibility, the namespace and the town's
 * search attributes, the Temporal Web UI server, and N `gt worker` hosts (each its own GT_HOME, host id and
 * gateway, all sharing the town's task queue and gateway secret). `npm run stack:prod` runs it; tests use it.
 *
 * Invariants:
 *  - Every setting comes from docker-compose.yml (provisioning/compose-settings.ts): the server's environment feeds
 *    the release's own config template, the schema and namespace steps are compose's own scripts run by `sh`, and
 *    the dynamic config is compose's file. Only addresses, ports and paths differ (HOST_OVERRIDES), and the
 *    server's version must equal compose's image tag.
 *  - Everything listens on 127.0.0.1 only; ports are chosen once per state directory and kept (ports.json), so a
 *    restarted stack or server is found where it was.
 *  - Every process is a child of the harness and dies with it (`setpriv --pdeathsig KILL`): a kill -9 of the
 *    harness leaves nothing running. Data survives in the state directory (PostgreSQL's cluster, each host's
 *    GT_HOME), so the next start resumes the town.
 *  - A component that exits without being asked to is reported once through `onExit`; nothing is restarted
 *    behind the caller's back (chaos tests kill and start components on purpose through this API).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { z } from 'zod';
import { ALL_SEARCH_ATTRIBUTES } from '../domain/search-attributes';
import { startPostgres, type Postgres } from './postgres';
import { allPids, parentPid } from './proc';
import { HOST_OVERRIDES, readComposeSettings, repoRoot, type ComposeSettings } from './compose-settings';
import { findOnPath, resolveTemporalCli } from './temporal-cli';
import { resolveTemporalServer, TEMPORAL_SERVER_VERSION } from './temporal-server';

const run = promisify(execFile);
const gtBin = join(repoRoot, 'bin', 'gt');
const isRoot = () => process.getuid?.() === 0;
const READY_TIMEOUT_MS = 180_000;

export interface ProdStackOptions {
  /** PostgreSQL's cluster, the hosts' GT_HOMEs, logs, ports and the gateway secret live here. */
  stateDir: string;
  /** Worker hosts (default 2). */
  hosts?: number;
  /** The frontend's gRPC port (default: chosen once per state directory). */
  port?: number;
  /** Web UI: a port, or false for none (default: a port when the UI server was built). */
  uiPort?: number | false;
  /** More environment for every worker host (e.g. GT_WORKFLOW_BUNDLE). */
  workerEnv?: Record<string, string>;
  /** Environment that docker compose would read (POSTGRES_PASSWORD, TEMPORAL_NAMESPACE, …); default process.env. */
  composeEnv?: NodeJS.ProcessEnv;
  onProgress?: (message: string) => void;
  /** A component exited without being asked to: one line, ready to print. */
  onExit?: (component: string, reason: string) => void;
}

export interface Component {
  readonly name: string;
  pid(): number | undefined;
  running(): boolean;
  logFile: string;
  /** Starts it (again) and waits until it serves. */
  start(): Promise<void>;
  /** Asks it to stop (SIGTERM or the component's own signal), SIGKILL after a grace period. */
  stop(): Promise<void>;
  /** kill -9: of the process and, for a worker host, of every process it started (its agents). */
  kill(): Promise<number[]>;
}

export interface WorkerHostComponent extends Component {
  hostId: string;
  gtHome: string;
  gatewayPort: number;
}

export interface ProdStack {
  address: string;
  namespace: string;
  taskQueue: string;
  uiUrl?: string;
  stateDir: string;
  /** What `gt` needs to talk to this town (standard Temporal variables, read by @temporalio/envconfig). */
  clientEnv: Record<string, string>;
  postgres: Component;
  server: Component;
  ui?: Component;
  hosts: WorkerHostComponent[];
  compose: ComposeSettings;
  /** The environment the server runs with: compose's, with HOST_OVERRIDES.server changed, plus PATH/HOME/TZ. */
  serverEnv: Readonly<Record<string, string>>;
  /** Stops every component (hosts drain first) and removes the stack's record. */
  stop(): Promise<void>;
}

const Ports = z.object({
  postgres: z.number().int(),
  frontend: z.number().int(),
  ui: z.number().int(),
  internal: z.record(z.string(), z.number().int()),
  gateways: z.array(z.number().int()),
});
type Ports = z.infer<typeof Ports>;

const canBind = (port: number) =>
  new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });

/**
 * A free port below 32768: the server stores its membership ports in a SMALLINT column (a port of the kernel's
 * ephemeral range, 32768 and up, fails its start with "out of range for type smallint"), and ports there are also
 * never handed out to outgoing connections, so a port chosen once stays free across restarts.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * 22_000);
    if (await canBind(port)) return port;
  }
}

/** The server's internal ports (compose leaves them at their defaults inside the container). */
const INTERNAL_PORT_KEYS = HOST_OVERRIDES.server.filter((k) => /_PORT$/.test(k) && !/^(DB|POSTGRES)_/.test(k));

async function loadPorts(file: string, hosts: number, wanted: { frontend?: number; ui?: number }): Promise<Ports> {
  const saved = existsSync(file) ? Ports.safeParse(JSON.parse(readFileSync(file, 'utf8'))) : undefined;
  const old = saved?.success ? saved.data : undefined;
  const internal: Record<string, number> = {};
  for (const k of INTERNAL_PORT_KEYS.filter((k) => k !== 'FRONTEND_GRPC_PORT'))
    internal[k] = old?.internal[k] ?? (await freePort());
  const gateways = old?.gateways.slice(0, hosts) ?? [];
  while (gateways.length < hosts) gateways.push(await freePort());
  const ports: Ports = {
    postgres: old?.postgres ?? (await freePort()),
    frontend: wanted.frontend ?? old?.frontend ?? (await freePort()),
    ui: wanted.ui ?? old?.ui ?? (await freePort()),
    internal,
    gateways,
  };
  writeFileSync(file, `${JSON.stringify(ports, null, 2)}\n`);
  return ports;
}

/** The environment a container would have: nothing of the caller's shell but what programs need to run. */
export const baseEnv = (): Record<string, string> => ({
  PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
  HOME: process.env.HOME ?? '/tmp',
  ...(process.env.TZ ? { TZ: process.env.TZ } : {}),
});

/** Every live descendant of `pid` (children first found, then theirs). */
export function descendantsOf(pid: number): number[] {
  const parents = new Map(allPids().map((p) => [p, parentPid(p)]));
  const found: number[] = [];
  let frontier = [pid];
  while (frontier.length) {
    const next = [...parents].filter(([, ppid]) => ppid !== undefined && frontier.includes(ppid)).map(([p]) => p);
    found.push(...next);
    frontier = next;
  }
  return found;
}

interface ManagedSpec {
  name: string;
  file: string;
  args: string[];
  env: Record<string, string>;
  logFile: string;
  /** Resolves once the process serves; `output` is what it printed so far. */
  ready: (proc: ChildProcess, output: () => string) => Promise<void>;
  stopSignal?: NodeJS.Signals;
  stopGraceMs?: number;
  onExit?: (component: string, reason: string) => void;
}

/** One process of the stack: our child (pdeathsig), its own process group, its output appended to its log. */
function managed(spec: ManagedSpec): Component {
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopping = false;
  // Exits before it served are the start's failure (thrown), not a report.
  let served = false;
  const setpriv = findOnPath('setpriv');
  const alive = () => !!proc && proc.exitCode === null && proc.signalCode === null;
  return {
    name: spec.name,
    logFile: spec.logFile,
    pid: () => (alive() ? proc!.pid : undefined),
    running: alive,
    async start() {
      if (alive()) return;
      stopping = false;
      served = false;
      const [file, args] = setpriv
        ? [setpriv, ['--pdeathsig', 'KILL', '--', spec.file, ...spec.args]]
        : [spec.file, spec.args];
      const log = openSync(spec.logFile, 'a');
      writeSync(log, `--- ${new Date().toISOString()} start ${spec.name}\n`);
      const child = spawn(file, args, { env: spec.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      proc = child;
      let output = '';
      const onData = (d: Buffer) => {
        output = (output + d.toString()).slice(-64 * 1024);
        writeSync(log, d);
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      exited = new Promise<void>((done) =>
        child.once('exit', (code, signal) => {
          closeSync(log);
          if (!stopping && served)
            spec.onExit?.(
              spec.name,
              `${spec.name} (pid ${child.pid}) exited on its own (${signal ? `killed by ${signal}` : `exit code ${code}`}); see ${spec.logFile}`,
            );
          done();
        }),
      );
      await new Promise<void>((ok, fail) => {
        child.once('spawn', ok);
        child.once('error', (err) => fail(new Error(`could not start ${spec.name} (${spec.file}): ${err.message}`)));
      });
      try {
        await spec.ready(child, () => output);
        served = true;
      } catch (err) {
        stopping = true;
        child.kill('SIGKILL');
        await exited;
        throw new Error(`${spec.name} did not start: ${(err as Error).message}\n(log: ${spec.logFile})`);
      }
    },
    async stop() {
      if (!alive()) return;
      stopping = true;
      proc!.kill(spec.stopSignal ?? 'SIGTERM');
      const timer = setTimeout(() => proc?.kill('SIGKILL'), spec.stopGraceMs ?? 20_000);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (!alive()) return [];
      stopping = true;
      const pid = proc!.pid!;
      // Frozen first, so nothing it started can start more while the kills land.
      const all = [pid, ...descendantsOf(pid)];
      for (const p of all) safeKill(p, 'SIGSTOP');
      const more = all.flatMap((p) => descendantsOf(p)).filter((p) => !all.includes(p));
      for (const p of [...all, ...more]) safeKill(p, 'SIGKILL');
      await exited;
      return [...all, ...more];
    },
  };
}

const safeKill = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
};

async function until(what: string, proc: ChildProcess, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`exited (${proc.exitCode ?? proc.signalCode}) before ${what}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${READY_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The frontend answers and every search attribute of the town can be queried (visibility knows them). */
async function serverAnswers(address: string, namespace?: string): Promise<boolean> {
  const connection = await Connection.connect({ address, connectTimeout: '2s' });
  try {
    await connection.workflowService.getSystemInfo({});
    if (namespace) {
      const query = ALL_SEARCH_ATTRIBUTES.map((k) =>
        k.type === 'INT' ? `${k.name} = 0` : `${k.name} = 'harness-probe'`,
      ).join(' AND ');
      await connection.workflowService.listWorkflowExecutions({ namespace, query, pageSize: 1 });
    }
    return true;
  } finally {
    await connection.close();
  }
}

async function sh(script: string, env: Record<string, string>, what: string): Promise<string> {
  try {
    const { stdout, stderr } = await run('/bin/sh', ['-c', script], { env, maxBuffer: 16 * 1024 * 1024 });
    return stdout + stderr;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${what} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

const searchAttributeList = () =>
  ALL_SEARCH_ATTRIBUTES.map((k) => `${k.name}=${TypedSearchAttributes.toMetadataType(k.type)}`)
    .sort()
    .join(' ');

export interface WorkerHostOptions {
  hostId: string;
  gtHome: string;
  gatewayPort: number;
  /** The town's settings (TEMPORAL_*, GT_TASK_QUEUE, GT_GATEWAY_SECRET, …); GT_HOME and GT_HOST_ID are set here. */
  env: Record<string, string>;
  logFile: string;
  onExit?: (component: string, reason: string) => void;
}

/**
 * One `gt worker` host: its own GT_HOME, host id and gateway port (fixed, so the GT_GATEWAY_URL its agents hold stays
 * valid across its restarts). It inherits the caller's environment but for TEMPORAL_*, GT_* and OTEL_* (the town's
 * settings come only from `env`). kill() is kill -9 of the worker and of every process it started (its agents).
 */
export function workerHost(o: WorkerHostOptions): WorkerHostComponent {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] => e[1] !== undefined && !/^(TEMPORAL_|GT_|OTEL_)/.test(e[0]),
    ),
  );
  mkdirSync(o.gtHome, { recursive: true });
  const c = managed({
    name: `worker ${o.hostId}`,
    file: gtBin,
    args: ['worker', '--gateway-port', String(o.gatewayPort), '--gateway-host', '127.0.0.1'],
    env: { ...inherited, ...o.env, GT_HOME: o.gtHome, GT_HOST_ID: o.hostId },
    logFile: o.logFile,
    ready: (proc, output) =>
      until(`${o.hostId}'s gateway`, proc, () => Promise.resolve(/gateway http:\/\/127\.0\.0\.1:\d+/.test(output()))),
    // gt worker drains on SIGINT (the Runtime's shutdown), as on Ctrl-C.
    stopSignal: 'SIGINT',
    stopGraceMs: 45_000,
    onExit: o.onExit,
  });
  return Object.assign(c, { hostId: o.hostId, gtHome: o.gtHome, gatewayPort: o.gatewayPort });
}

export async function startProdStack(options: ProdStackOptions): Promise<ProdStack> {
  const progress = options.onProgress ?? (() => undefined);
  const hostCount = options.hosts ?? 2;
  const stateDir = options.stateDir;
  const compose = readComposeSettings(options.composeEnv ?? process.env);
  if (`v${compose.serverImageVersion}` !== TEMPORAL_SERVER_VERSION)
    throw new Error(
      `docker-compose.yml runs temporalio/server:${compose.serverImageVersion} but this harness runs ${TEMPORAL_SERVER_VERSION}: change both together (provisioning/temporal-server.ts)`,
    );
  const declared = (compose.namespace.env.GT_SEARCH_ATTRIBUTES ?? '').split(/\s+/).filter(Boolean).sort().join(' ');
  if (declared !== searchAttributeList())
    throw new Error(
      `docker-compose.yml registers search attributes "${declared}", the code defines "${searchAttributeList()}"`,
    );
  const installed = await resolveTemporalServer({ onProgress: progress });
  if (!installed.available) throw new Error(installed.reason);
  const cli = await resolveTemporalCli({ onProgress: progress });
  if (!cli.path) throw new Error('the namespace step needs a local `temporal` CLI (npm run provision builds one)');

  mkdirSync(join(stateDir, 'logs'), { recursive: true });
  // PostgreSQL runs as the postgres user when we are root: it must be able to pass through the state directory.
  if (isRoot()) chmodSync(stateDir, 0o711);
  const logs = (name: string) => join(stateDir, 'logs', `${name}.log`);
  const ports = await loadPorts(join(stateDir, 'ports.json'), hostCount, {
    frontend: options.port,
    ui: options.uiPort || undefined,
  });
  const address = `127.0.0.1:${ports.frontend}`;
  const namespace = compose.namespace.env.GT_NAMESPACE ?? 'default';
  const taskQueue = compose.workerEnv.GT_TASK_QUEUE ?? 'gastown';
  const onExit = options.onExit;
  const started: Component[] = [];
  const stopAll = async () => {
    for (const c of [...started].reverse()) await c.stop().catch(() => undefined);
  };

  try {
    // PostgreSQL, as the compose `postgresql` service (its user and password).
    let pg: Postgres | undefined;
    let pgStopping = false;
    const pgLog = logs('postgres');
    const postgres: Component = {
      name: 'postgres',
      logFile: pgLog,
      pid: () => (pg && pg.proc.exitCode === null && pg.proc.signalCode === null ? pg.pid : undefined),
      running: () => !!pg && pg.proc.exitCode === null && pg.proc.signalCode === null,
      async start() {
        if (postgres.running()) return;
        pg = await startPostgres({
          dataDir: join(stateDir, 'postgres'),
          port: ports.postgres,
          user: compose.serverEnv.POSTGRES_USER ?? 'temporal',
          password: compose.serverEnv.POSTGRES_PWD ?? 'temporal',
          logFile: pgLog,
          onProgress: progress,
        });
        pgStopping = false;
        const { proc, pid } = pg;
        proc.once('exit', (code, signal) => {
          if (!pgStopping)
            onExit?.(
              'postgres',
              `PostgreSQL (pid ${pid}) exited on its own (${signal ?? `exit code ${code}`}); see ${pgLog}`,
            );
        });
      },
      stop: async () => {
        pgStopping = true;
        await pg?.stop();
      },
      async kill() {
        const pid = postgres.pid();
        if (!pid) return [];
        pgStopping = true;
        const all = [pid, ...descendantsOf(pid)];
        for (const p of all) safeKill(p, 'SIGKILL');
        await new Promise<void>((done) => (pg!.proc.exitCode !== null ? done() : pg!.proc.once('exit', () => done())));
        return all;
      },
    };
    progress(`PostgreSQL on 127.0.0.1:${ports.postgres} (data ${join(stateDir, 'postgres')})…`);
    await postgres.start();
    started.push(postgres);

    // The schemas: compose's `temporal-admin-tools` script, with the release's SQL tool and schema files.
    progress('Setting up the temporal and temporal_visibility schemas (temporal-sql-tool)…');
    await sh(
      compose.schema.script,
      {
        ...baseEnv(),
        ...compose.schema.env,
        PATH: `${dirname(installed.sqlTool)}:${baseEnv().PATH}`,
        POSTGRES_SEEDS: '127.0.0.1',
        DB_PORT: String(ports.postgres),
        SCHEMA_DIR: join(installed.postgresSchemaDir, 'v12'),
      },
      'the schema setup (temporal-admin-tools script)',
    );

    // The server: the release's config template, fed compose's environment of the `temporal` service.
    const serverEnv: Record<string, string> = {
      ...baseEnv(),
      ...compose.serverEnv,
      POSTGRES_SEEDS: '127.0.0.1',
      DB_PORT: String(ports.postgres),
      // The template reads the visibility store's port from POSTGRES_PORT (DB_PORT is the default store's).
      POSTGRES_PORT: String(ports.postgres),
      BIND_ON_IP: '127.0.0.1',
      DYNAMIC_CONFIG_FILE_PATH: compose.dynamicConfigFile,
      FRONTEND_GRPC_PORT: String(ports.frontend),
      ...Object.fromEntries(Object.entries(ports.internal).map(([k, v]) => [k, String(v)])),
      LOG_LEVEL: compose.serverEnv.LOG_LEVEL ?? 'warn',
    };
    // `render-config` reads --config without --root, `start` joins them: an absolute --config under root / suits both.
    const serverArgs = ['--root', '/', '--config', installed.configDir, '--env', 'docker', '--allow-no-auth'];
    // The configuration the server runs with, rendered by the server itself: for reading, and for the tests.
    const rendered = await run(installed.server, [...serverArgs, 'render-config'], { env: serverEnv });
    writeFileSync(join(stateDir, 'temporal-config.yaml'), rendered.stdout);
    const server = managed({
      name: 'temporal-server',
      file: installed.server,
      args: [...serverArgs, 'start'],
      env: serverEnv,
      logFile: logs('temporal-server'),
      ready: (proc) => until(`the frontend at ${address} answering`, proc, () => serverAnswers(address)),
      onExit,
    });
    progress(`Temporal server ${TEMPORAL_SERVER_VERSION} (PostgreSQL persistence and visibility) on ${address}…`);
    await server.start();
    started.push(server);

    // The namespace and search attributes: compose's `temporal-create-namespace` script, with the real CLI.
    progress(`Namespace ${namespace} and the town's search attributes…`);
    await sh(
      compose.namespace.script,
      {
        ...baseEnv(),
        ...compose.namespace.env,
        PATH: `${dirname(cli.path)}:${baseEnv().PATH}`,
        TEMPORAL_ADDRESS: address,
      },
      'the namespace setup (temporal-create-namespace script)',
    );
    // The frontend caches namespaces and search attributes: the town may start workflows once a query on all of them works.
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await serverAnswers(address, namespace).catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`the search attributes never became queryable on ${address}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    // A restarted server must find its namespace again: the chaos tests restart it through this.
    const restartableServer: Component = {
      ...server,
      async start() {
        await server.start();
        const deadline = Date.now() + READY_TIMEOUT_MS;
        while (!(await serverAnswers(address, namespace).catch(() => false))) {
          if (Date.now() > deadline) throw new Error(`the restarted server does not serve ${namespace}`);
          await new Promise((r) => setTimeout(r, 500));
        }
      },
    };
    started[started.length - 1] = restartableServer;

    // The Web UI server, as the temporalio/ui image runs it (its docker.yaml template and compose's environment).
    let ui: Component | undefined;
    let uiUrl: string | undefined;
    if (options.uiPort !== false && installed.ui.available) {
      const uiConfig = join(stateDir, 'ui-config');
      mkdirSync(uiConfig, { recursive: true });
      // base.yaml is read before docker.yaml: it binds to loopback (the image leaves that to its container).
      writeFileSync(join(uiConfig, 'base.yaml'), 'host: 127.0.0.1\n');
      copyFileSync(join(installed.ui.configDir, 'docker.yaml'), join(uiConfig, 'docker.yaml'));
      uiUrl = `http://127.0.0.1:${ports.ui}`;
      const url = uiUrl;
      ui = managed({
        name: 'temporal-ui',
        file: installed.ui.server,
        args: ['--root', stateDir, '--config', 'ui-config', '--env', 'docker', 'start'],
        env: { ...baseEnv(), ...compose.uiEnv, TEMPORAL_ADDRESS: address, TEMPORAL_UI_PORT: String(ports.ui) },
        logFile: logs('temporal-ui'),
        ready: (proc) => until(`the Web UI at ${url}`, proc, async () => (await fetch(url)).ok),
        onExit,
      });
      progress(`Temporal Web UI on ${uiUrl}…`);
      await ui.start();
      started.push(ui);
    } else if (options.uiPort !== false && !installed.ui.available) {
      progress(`no Web UI: ${installed.ui.reason}`);
    }

    // The worker hosts: compose's `worker` environment; one GT_HOME, host id and gateway each; one town secret.
    const secretFile = join(stateDir, 'gateway.secret');
    if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    const secret = readFileSync(secretFile, 'utf8').trim();
    const hosts: WorkerHostComponent[] = [];
    for (let i = 0; i < hostCount; i++) {
      const hostId = `host-${i + 1}`;
      hosts.push(
        workerHost({
          hostId,
          gtHome: join(stateDir, 'hosts', hostId),
          gatewayPort: ports.gateways[i]!,
          env: {
            ...compose.workerEnv,
            TEMPORAL_ADDRESS: address,
            TEMPORAL_NAMESPACE: namespace,
            GT_TASK_QUEUE: taskQueue,
            GT_GATEWAY_SECRET: secret,
            ...options.workerEnv,
          },
          logFile: logs(hostId),
          onExit,
        }),
      );
    }
    progress(`${hostCount} worker hosts (gt worker) on task queue ${taskQueue}…`);
    await Promise.all(hosts.map((h) => h.start()));
    started.push(...hosts);

    return {
      address,
      namespace,
      taskQueue,
      uiUrl,
      stateDir,
      clientEnv: { TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: namespace, GT_TASK_QUEUE: taskQueue },
      postgres,
      server: restartableServer,
      ui,
      hosts,
      compose,
      serverEnv,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
