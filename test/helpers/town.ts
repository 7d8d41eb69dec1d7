/**
 * A real town for a test: a client and a worker (town queue + host queue + gateway) on the shared dev server,
 * with its own task queue and GT_HOME, and fast policies so failure paths run in seconds.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { afterAll, beforeAll, inject } from 'vitest';
import type { AgentRuntimeDriver } from '../../agents/runtime';
import type { AgentRuntime, RigConfigInput, RunPolicy } from '../../domain/rig';
import { Town } from '../../client/town';
import { createTownWorker, type TownWorker } from '../../worker/worker';
import { freePort, startChild, type Child } from './processes';
import { temporalAddress } from './server';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
/** tsx's loader, for `node --import` of a TypeScript entry in a child process. */
export const tsxLoader = join(repoRoot, 'node_modules/tsx/dist/loader.mjs');
export const gtBin = join(repoRoot, 'bin', 'gt');
export const agentScript = (name: string) => join(repoRoot, 'test', 'agents', `${name}.sh`);

export const FAST_POLICY: Partial<RunPolicy> = {
  startTimeout: 30_000,
  heartbeatTimeout: 10_000,
  stallTimeout: 60_000,
  retryBackoff: 200,
  maxAttempts: 3,
  maxRounds: 3,
};

export interface TestTown {
  town: Town;
  client: Client;
  taskQueue: string;
  gtHome: string;
  worker: TownWorker;
  address: string;
  namespace: string;
  /** Adds a rig with fast policies; `agent` defaults to the `good` scripted agent. */
  addRig(rig: Partial<RigConfigInput> & { name: string; repo: string }): ReturnType<Town['addRig']>;
  /** Environment for running `bin/gt` against this town. */
  cliEnv(extra?: Record<string, string>): NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export interface TestTownOptions {
  hostId?: string;
  runtimes?: Partial<Record<AgentRuntime, AgentRuntimeDriver>>;
  gtHome?: string;
  taskQueue?: string;
  /** How often supervision probes an agent's status (default 200 ms). */
  pollIntervalMs?: number;
  /** A Temporal server of the test's own (default: the file's shared one, test/helpers/server.ts). */
  address?: string;
}

let counter = 0;
let runtimeInstalled = false;

/** Worker logs at WARN, so a failing test's output shows what went wrong rather than state changes. */
export function quietRuntime() {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger((process.env.GT_TEST_LOG_LEVEL as 'WARN' | undefined) ?? 'WARN') });
}

export async function startTestTown(options: TestTownOptions = {}): Promise<TestTown> {
  quietRuntime();
  const address = options.address ?? temporalAddress();
  const namespace = inject('temporalNamespace');
  const gtHome = options.gtHome ?? mkdtempSync(join(tmpdir(), 'gt-home-'));
  process.env.GT_HOME = gtHome;
  const taskQueue = options.taskQueue ?? `test-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace });
  const native = await NativeConnection.connect({ address });
  const worker = await createTownWorker({
    connection: native,
    namespace,
    taskQueue,
    hostId: options.hostId ?? 'test-host',
    workflowBundle: { codePath: inject('workflowBundlePath') },
    runtimes: options.runtimes,
    pollIntervalMs: options.pollIntervalMs ?? 200,
    shutdownGraceTime: '2s',
  });
  const running = worker.run();
  const town = new Town(client, taskQueue);
  return {
    town,
    client,
    taskQueue,
    gtHome,
    worker,
    address,
    namespace,
    addRig: (rig) => town.addRig({ agent: agentScript('good'), ...rig, policy: { ...FAST_POLICY, ...rig.policy } }),
    cliEnv: (extra = {}) => ({
      ...process.env,
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: namespace,
      GT_TASK_QUEUE: taskQueue,
      GT_HOME: gtHome,
      ...extra,
    }),
    async stop() {
      await worker.shutdown();
      await running.catch(() => undefined);
      await native.close();
      await connection.close();
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `gt` command. */
export function runGt(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(gtBin, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls `fn` until it returns a truthy value (integration tests wait on real processes, not timers). */
export async function eventually<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 30_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
}

export interface WorkerProcessHost {
  taskQueue: string;
  gtHome: string;
  /** Starts a real `gt worker` for this host (again after a kill: same GT_HOME, queue and gateway port). */
  start: () => Promise<Child>;
}

/**
 * One host of a town served by real `gt worker` processes, for tests that kill them: its own GT_HOME and task queue,
 * and a fixed gateway port, so the GT_GATEWAY_URL a live agent was given stays valid across workers.
 */
export async function workerProcessHost(
  name: string,
  children: Child[],
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<WorkerProcessHost> {
  const taskQueue = `${name}-${process.pid}-${Date.now()}`;
  const gtHome = mkdtempSync(join(tmpdir(), `gt-home-${name}-`));
  const port = await freePort();
  const env = {
    ...process.env,
    TEMPORAL_ADDRESS: temporalAddress(),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    GT_TASK_QUEUE: taskQueue,
    GT_HOME: gtHome,
    GT_HOST_ID: `${name}-host`,
    GT_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
    ...extraEnv,
  };
  return {
    taskQueue,
    gtHome,
    start: async () => {
      const w = startChild(gtBin, ['worker', '--gateway-port', String(port)], env);
      children.push(w);
      await w.waitFor(/gateway http:\/\/127\.0\.0\.1:\d+/);
      return w;
    },
  };
}

/**
 * For a test file that runs real `gt worker` child processes: registers the file's hooks (a connection to the test
 * server; every child killed once the file's tests ended) and makes hosts, each with a town bound to its queue.
 */
export function workerProcesses() {
  let connection: Connection | undefined;
  const children: Child[] = [];
  beforeAll(async () => {
    connection = await Connection.connect({ address: temporalAddress() });
  });
  afterAll(async () => {
    for (const c of children) await c.stop('SIGKILL');
    await connection?.close();
  });
  return {
    children,
    async host(name: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<WorkerProcessHost & { town: Town }> {
      const host = await workerProcessHost(name, children, extraEnv);
      const client = new Client({ connection: connection!, namespace: inject('temporalNamespace') });
      return { ...host, town: new Town(client, host.taskQueue) };
    },
  };
}

/**
 * The workflow's result, or — after `timeoutMs` — an error that says where it stands: its pending activities (type,
 * attempt, last failure) and the tail of each worker process's output, so a hang in CI explains itself.
 */
export async function resultOrExplain<H extends WorkflowHandle>(
  handle: H,
  workers: Child[],
  timeoutMs: number,
): Promise<Awaited<ReturnType<H['result']>>> {
  type T = Awaited<ReturnType<H['result']>>;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
  try {
    const outcome = await Promise.race([handle.result() as Promise<T>, timedOut]);
    if (outcome !== 'timeout') return outcome;
  } finally {
    clearTimeout(timer);
  }
  const pending = ((await handle.describe().catch(() => undefined))?.raw.pendingActivities ?? []).map(
    (a) => `${a.activityType?.name} attempt ${a.attempt ?? 0} ${a.state ?? ''} ${a.lastFailure?.message ?? ''}`,
  );
  const tails = workers.map((w, i) => `--- worker ${i} (pid ${w.proc.pid}):\n${w.output().slice(-4_000)}`);
  throw new Error(
    `${handle.workflowId} had no result after ${timeoutMs} ms; pending activities:\n  ${pending.join('\n  ') || '(none)'}\n${tails.join('\n')}`,
  );
}

/** True once the bead's supervision activity was retried and heartbeats again: a new worker re-attached to its run. */
export async function supervisionReattached(handle: WorkflowHandle): Promise<boolean> {
  const pending = (await handle.describe()).raw.pendingActivities ?? [];
  return pending.some(
    (a) =>
      a.activityType?.name === 'superviseAgentRun' &&
      (a.attempt ?? 0) >= 2 &&
      a.lastStartedTime &&
      a.lastHeartbeatTime &&
      Number(a.lastHeartbeatTime.seconds) >= Number(a.lastStartedTime.seconds),
  );
}
