/**
 * The embedded Temporal dev server (`temporal server start-dev`: SQLite file, Web UI), started and watched here.
 *
 * Invariants:
 * - Started means: our own child process listens on the port and answers. A port already taken is a one-line error
 *   before anything starts, and a server that answers from another process is never taken for ours.
 * - The server dies with the process that started it: on Linux it runs under `setpriv --pdeathsig KILL`, so even a
 *   kill -9 of its parent leaves no orphan holding the port and the SQLite file. (libuv spawns from the main thread,
 *   whose death is the process's: the signal cannot fire early.)
 * - With a `pidFile` (gt up: one per GT_HOME), the server and its owner are recorded by pid and start time; before a
 *   new server starts, a leftover of an earlier owner that is gone — found by the record or by serving the same SQLite
 *   file — is stopped, and a live owner is a one-line error. A recycled pid is never signalled.
 * - The server listens on `ip` only (default 127.0.0.1: frontend, Web UI, HTTP and metrics ports); the dev server
 *   has no authentication, so exposing it is an explicit choice of the caller.
 * - The dynamic config is TOWN_DYNAMIC_CONFIG (the history queue readers, eager activities) and
 *   DEV_SERVER_DYNAMIC_CONFIG (its search attributes cached, as a full server's are), and a server on a file keeps its
 *   SQLite journal as SQLITE_PRAGMAS say (provisioning/server-settings.ts), unless the caller asks for the server's
 *   defaults (the bench's baseline).
 * - A server that exits while we did not stop it is reported once through `onExit` with its exit status and the
 *   tail of its log; this module never restarts it behind its owner's back.
 * All of this needs a local CLI (TEMPORAL_CLI_PATH, PATH, the cache); the SDK's download is started by the SDK with
 * the same settings but none of this supervision (startSdkDownloaded).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { Connection } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { z } from 'zod';
import { ALL_SEARCH_ATTRIBUTES } from '../domain/search-attributes';
import { allPids, commandLine, isSameProcessAlive, listenersOf, parentPid, processStartTime } from './proc';
import {
  dynamicConfigArgs,
  DEV_SERVER_DYNAMIC_CONFIG,
  TOWN_DYNAMIC_CONFIG,
  SQLITE_PRAGMAS,
  sqlitePragmaArgs,
  type DynamicConfig,
  type ServerSettings,
} from './server-settings';
import { findOnPath, PROVISIONING_HELP, resolveTemporalCli, type ResolvedCli } from './temporal-cli';

export interface DevServerOptions {
  /** SQLite file; omitted = in memory. */
  dbFilename?: string;
  /** gRPC frontend port; omitted = any free port. */
  port?: number;
  /** Web UI port; omitted = headless. */
  uiPort?: number;
  /** The address every port of the server binds to. */
  ip?: string;
  namespace?: string;
  /** `server-default`: leave the dynamic config and the SQLite journal at Temporal's defaults (only to measure what ours change). */
  settings?: ServerSettings;
  /** More dynamic config (`--dynamic-config-value`), applied after ours. */
  dynamicConfig?: DynamicConfig;
  /** Where the server and its owner are recorded; a leftover recorded here is stopped before starting. */
  pidFile?: string;
  /** The server's stdout and stderr; omitted = only the last lines of stderr, quoted when it fails. */
  logFile?: string;
  onProgress?: (message: string) => void;
  /** The server exited without `stop()`: `reason` is one line, ready to print. */
  onExit?: (reason: string) => void;
}

export interface DevServer {
  env: TestWorkflowEnvironment;
  address: string;
  namespace: string;
  uiUrl?: string;
  cli: ResolvedCli;
  /** The server's process; unknown only for the SDK-downloaded CLI, which the SDK starts. */
  pid?: number;
  /** Closes the connections, stops the server (SIGTERM, then SIGKILL) and removes its record. */
  stop(): Promise<void>;
}

const DEFAULT_IP = '127.0.0.1';
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;

/** The SDK's own dev-server defaults (sdk-core ephemeral_server), which the town relies on (updates). */
const SDK_DYNAMIC_CONFIG: DynamicConfig = {
  'frontend.enableServerVersionCheck': false,
  'frontend.enableUpdateWorkflowExecution': true,
  'frontend.enableUpdateWorkflowExecutionAsyncAccepted': true,
};

const ServerRecord = z.object({
  pid: z.number().int(),
  startTime: z.string(),
  ownerPid: z.number().int(),
  ownerStartTime: z.string(),
  dbFilename: z.string().optional(),
  port: z.number().int(),
});
type ServerRecord = z.infer<typeof ServerRecord>;

/**
 * Starts the dev server; once more if its first start lost a port it had just checked was free (another process can
 * take a port between the check and the server's own bind, and a stopped leftover's sockets may outlive its exit for a
 * moment): the retry checks the port again, so a port really in use is still refused in one line.
 */
export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  try {
    return await startDevServerOnce(options);
  } catch (err) {
    if (!(err instanceof Error) || !/exited during start/.test(err.message) || !lostPortOnStart(err, options))
      throw err;
    options.onProgress?.('The Temporal dev server lost its port while starting; trying once more…');
    await new Promise((r) => setTimeout(r, 1_000));
    return startDevServerOnce(options);
  }
}

function lostPortOnStart(err: Error, options: DevServerOptions): boolean {
  const said =
    options.logFile && existsSync(options.logFile) ? readFileSync(options.logFile, 'utf8').slice(-20_000) : '';
  return /address already in use/.test(err.message) || /address already in use/.test(said);
}

async function startDevServerOnce(options: DevServerOptions): Promise<DevServer> {
  const cli = await resolveTemporalCli({ onProgress: options.onProgress });
  const namespace = options.namespace ?? 'default';
  const ip = options.ip ?? DEFAULT_IP;
  const dbFilename = options.dbFilename && resolve(options.dbFilename);
  const dynamicConfig = {
    ...(options.settings === 'server-default' ? {} : { ...TOWN_DYNAMIC_CONFIG, ...DEV_SERVER_DYNAMIC_CONFIG }),
    ...options.dynamicConfig,
  };
  const sqlitePragmas = dbFilename && options.settings !== 'server-default' ? SQLITE_PRAGMAS : {};
  if (!cli.path)
    return startSdkDownloaded(cli, { ...options, namespace, ip, dbFilename, dynamicConfig, sqlitePragmas });
  if (options.pidFile) await stopLeftover(options.pidFile, dbFilename, options.onProgress);
  const port = options.port ?? (await freePort(ip));
  await assertPortFree(ip, port, 'Temporal port', '--port');
  if (options.uiPort) await assertPortFree(ip, options.uiPort, 'Web UI port', '--ui-port');

  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    '--namespace',
    namespace,
    '--log-format',
    'json',
    '--log-level',
    'warn',
    ...(dbFilename ? ['--db-filename', dbFilename] : []),
    ...sqlitePragmaArgs(sqlitePragmas),
    ...(options.uiPort ? ['--ui-port', String(options.uiPort)] : ['--headless']),
    ...ALL_SEARCH_ATTRIBUTES.flatMap((k) => [
      '--search-attribute',
      `${k.name}=${TypedSearchAttributes.toMetadataType(k.type)}`,
    ]),
    ...dynamicConfigArgs({ ...SDK_DYNAMIC_CONFIG, ...dynamicConfig }),
  ];
  const setpriv = process.platform === 'linux' ? findOnPath('setpriv') : undefined;
  const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', cli.path, ...args]] : [cli.path, args];
  const log = options.logFile ? openSync(options.logFile, 'a') : undefined;
  // Its own process group: a terminal's Ctrl-C reaches only the owner, which stops the server after its worker drained.
  const child = spawn(file, argv, { stdio: ['ignore', log ?? 'ignore', log ?? 'pipe'], detached: true });
  if (log !== undefined) closeSync(log);
  // Without a log file, the last lines of stderr are kept for the messages below (its shutdown chatter is not shown).
  let recent: string[] = [];
  child.stderr?.on('data', (d: Buffer) => (recent = [...recent, ...d.toString().trim().split('\n')].slice(-3)));
  const exited = new Promise<string>((done) =>
    child.once('exit', (code, signal) => done(signal ? `killed by ${signal}` : `exit code ${code}`)),
  );
  const pid = await new Promise<number>((ok, fail) => {
    child.once('spawn', () => ok(child.pid!));
    child.once('error', (err) =>
      fail(new Error(`could not start the Temporal dev server (${cli.path}): ${err.message}`)),
    );
  });
  const logTail = () =>
    options.logFile
      ? `; its log ${options.logFile} ends: ${tail(options.logFile)}`
      : recent.length
        ? `; it said: ${recent.join(' | ')}`
        : '';
  let stopping = false;
  const kill = () => stopChild(child, exited);
  try {
    const address = `${ip === '0.0.0.0' ? DEFAULT_IP : ip}:${port}`;
    await waitUntilServing(child, pid, port, address, exited, logTail);
    if (options.pidFile) {
      const record: ServerRecord = {
        pid,
        startTime: processStartTime(pid) ?? '',
        ownerPid: process.pid,
        ownerStartTime: processStartTime(process.pid) ?? '',
        dbFilename,
        port,
      };
      writeFileSync(options.pidFile, `${JSON.stringify(record)}\n`);
    }
    const env = await TestWorkflowEnvironment.createFromExistingServer({ address, namespace });
    void exited.then((status) => {
      if (!stopping) options.onExit?.(`the Temporal dev server (pid ${pid}) exited on its own (${status})${logTail()}`);
    });
    return {
      env,
      address,
      namespace,
      uiUrl: options.uiPort ? `http://${ip === '0.0.0.0' ? 'localhost' : ip}:${options.uiPort}` : undefined,
      cli,
      pid,
      async stop() {
        stopping = true;
        await env.teardown();
        await kill();
        if (options.pidFile) removeRecordOf(options.pidFile, pid);
      },
    };
  } catch (err) {
    stopping = true;
    await kill();
    throw err;
  }
}

/**
 * The SDK's own download (internet-connected machines without Go or a `temporal` on PATH) has no path of ours to
 * spawn, so the SDK starts it: same settings and address, but no pdeathsig, no record and no exit report — a kill -9
 * of the owner can leave it running, and the next start then fails on the taken port. Said once at start.
 */
async function startSdkDownloaded(
  cli: ResolvedCli,
  o: DevServerOptions & {
    namespace: string;
    ip: string;
    dynamicConfig: DynamicConfig;
    sqlitePragmas: Readonly<Record<string, string>>;
  },
): Promise<DevServer> {
  o.onProgress?.(
    'Using the SDK-downloaded Temporal CLI: its server is not supervised (a kill -9 of this process can leave it running); `npm run provision` avoids that.',
  );
  if (o.port) await assertPortFree(o.ip, o.port, 'Temporal port', '--port');
  let env: TestWorkflowEnvironment;
  try {
    env = await TestWorkflowEnvironment.createLocal({
      server: {
        executable: cli.executable,
        dbFilename: o.dbFilename,
        ip: o.ip,
        port: o.port,
        ...(o.uiPort ? { uiPort: o.uiPort } : { ui: false }),
        namespace: o.namespace,
        searchAttributes: ALL_SEARCH_ATTRIBUTES,
        log: { format: 'json', level: 'warn' },
        extraArgs: [...dynamicConfigArgs(o.dynamicConfig), ...sqlitePragmaArgs(o.sqlitePragmas)],
      },
    });
  } catch (err) {
    throw new Error(
      `could not start the Temporal dev server (${cli.source}): ${(err as Error).message}\n${PROVISIONING_HELP}`,
    );
  }
  return {
    env,
    address: env.address,
    namespace: o.namespace,
    uiUrl: o.uiPort ? `http://${o.ip === '0.0.0.0' ? 'localhost' : o.ip}:${o.uiPort}` : undefined,
    cli,
    stop: () => env.teardown(),
  };
}

async function waitUntilServing(
  child: ChildProcess,
  pid: number,
  port: number,
  address: string,
  exited: Promise<string>,
  logTail: () => string,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the Temporal dev server exited during start (${await exited})${logTail()}`);
    }
    // Where /proc tells, the port must be held by our child: an answer from anything else is not our server.
    const ours = process.platform !== 'linux' || listenersOf(pid).some((l) => l.port === port);
    if (ours) {
      try {
        const connection = await Connection.connect({ address, connectTimeout: 1000 });
        await connection.close();
        return;
      } catch (err) {
        lastError = (err as Error).message;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `the Temporal dev server did not answer on ${address} within ${READY_TIMEOUT_MS / 1000} s${lastError ? ` (${lastError})` : ''}${logTail()}`,
  );
}

async function stopChild(child: ChildProcess, exited: Promise<string>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * Stops what an earlier owner of this pid file left running: the recorded server if its owner is gone, and any
 * other dev server serving the same SQLite file (a leftover of a version that kept no record).
 */
async function stopLeftover(
  pidFile: string,
  dbFilename: string | undefined,
  onProgress?: (message: string) => void,
): Promise<void> {
  const record = readRecord(pidFile);
  if (record && record.ownerPid !== process.pid && isSameProcessAlive(record.ownerPid, record.ownerStartTime)) {
    throw new Error(
      `another gt up (pid ${record.ownerPid}) is running with this GT_HOME; stop it first (its record: ${pidFile})`,
    );
  }
  const leftovers = new Set<number>();
  if (record && isSameProcessAlive(record.pid, record.startTime)) leftovers.add(record.pid);
  for (const pid of dbFilename ? allPids() : []) {
    const argv = commandLine(pid) ?? [];
    const db = argv.indexOf('--db-filename');
    if (leftovers.has(pid) || !argv.includes('start-dev') || db < 0 || resolve(argv[db + 1] ?? '') !== dbFilename)
      continue;
    // Unrecorded: a leftover only if orphaned (its owner died, it was handed to init); a live parent owns it.
    const ppid = parentPid(pid);
    if (ppid !== undefined && ppid > 1)
      throw new Error(
        `a Temporal dev server (pid ${pid}, started by pid ${ppid}) already serves ${dbFilename}; stop it first`,
      );
    leftovers.add(pid);
  }
  for (const pid of leftovers) {
    onProgress?.(`Stopping a Temporal dev server left running by an earlier gt up (pid ${pid})…`);
    await killAndWait(pid);
  }
  if (record) rmSync(pidFile, { force: true });
}

async function killAndWait(pid: number): Promise<void> {
  const startTime = processStartTime(pid);
  if (!startTime) return;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      // Gone already.
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (isSameProcessAlive(pid, startTime)) {
    if (Date.now() > deadline) signal('SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
  }
}

function readRecord(pidFile: string): ServerRecord | undefined {
  try {
    return ServerRecord.parse(JSON.parse(readFileSync(pidFile, 'utf8')));
  } catch {
    // No record, or one this version cannot read: the scan by SQLite file still finds its server.
    return undefined;
  }
}

function removeRecordOf(pidFile: string, pid: number): void {
  if (readRecord(pidFile)?.pid === pid) rmSync(pidFile, { force: true });
}

function tail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim());
    return lines.slice(-3).join(' | ') || '(empty)';
  } catch {
    return '(unreadable)';
  }
}

function freePort(ip: string): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, ip, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => ok(port));
    });
  });
}

function assertPortFree(ip: string, port: number, what: string, flag: string): Promise<void> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      fail(
        new Error(
          err.code === 'EADDRINUSE'
            ? `${what} ${ip}:${port} is already in use by another process: stop it or choose another ${flag}`
            : `${what} ${ip}:${port}: ${err.message}`,
        ),
      ),
    );
    srv.listen(port, ip, () => srv.close(() => ok()));
  });
}
