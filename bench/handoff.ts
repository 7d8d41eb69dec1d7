/**
 * The Temporal baseline of the bench's stack: how long one hand-off takes (a task scheduled → a worker started it),
 * measured on the same dev server by a bare worker running chains of no-op steps. Every step of a bead (activity,
 * signal, child start, reply, timer) passes through such hand-offs, so this is the share of a bead's latency that
 * Temporal and the machine set, whatever Gas Town does. It is measured twice — with our server settings (history queue
 * readers, eager activities and SQLite journal, provisioning/server-settings.ts) and at Temporal's defaults — so the
 * report shows what the settings buy. (The figures' field keeps its first name, `queueReaders`, so earlier reports
 * still render.)
 *
 * It also measures what a step costs the machine where the server is busy, as a convoy keeps it: CPU per activity step
 * of the server's processes and of the worker, with COST_CHAINS chains at once (`StepCost`). With our settings only:
 * at Temporal's defaults the queue readers' rate limit, not the CPU, sets the pace of such a load.
 *
 *   npx tsx bench/handoff.ts [--steps 60] [--repeats 3] [--set key=value ...] [--stack prod]
 *
 * runs only this baseline, on two fresh dev servers (SQLite files, as `gt up`). With `--set`, it runs only Temporal's
 * defaults plus the values given (e.g. one queue reader at a time, to see what each changes). With `--stack prod`,
 * only our settings, on the production topology instead (provisioning/prod-stack.ts: the full server on PostgreSQL,
 * whose processes' CPU counts as the server's): whether a step's CPU is the dev server's SQLite or Temporal's own.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { descendantsOf, startProdStack, type ProdStack } from '../provisioning/prod-stack';
import type { DynamicConfig, ServerSettings } from '../provisioning/server-settings';
import { handoffChain, timerChain, upsertChain } from './handoff-workflow';
import { processesCpuMs } from './cpu';
import { parseEvents, type HistoryEvent } from './histories';
import { percentiles, type Percentiles } from './stats';

const TASK_QUEUE = 'bench-handoff';
/** Short: a 1 ms durable timer takes about a second here whatever the setting (docs/performance.md). */
const TIMER_STEPS = 5;
/** Chains at once for a step's cost: more than two cores can serve, as at a convoy's width 16. */
export const COST_CHAINS = 16;
const COST_STEPS = 40;

/** What one activity step costs the machine with COST_CHAINS chains running at once (core-ms, and wall ms). */
export interface StepCost {
  chains: number;
  steps: number;
  /** The server's processes' CPU per step (on the production topology, PostgreSQL's included). */
  serverMs: number;
  /** This process's CPU per step: the chains' worker (the bench's town worker beside it is idle meanwhile). */
  workerMs: number;
  /** The time of a chain / its steps: each chain's pace with the others beside it. */
  wallMs: number;
}

/** Which server settings a baseline ran at (the figures' field keeps its first name). */
export type QueueReaders = ServerSettings;

export interface HandoffFigures {
  /** Absent in reports written before it existed: those ran at Temporal's defaults. */
  queueReaders?: QueueReaders;
  steps: number;
  /** ActivityTaskScheduled → ActivityTaskStarted. */
  activityTaskMs: Percentiles;
  /** WorkflowTaskScheduled → WorkflowTaskStarted. */
  workflowTaskMs: Percentiles;
  /** The whole activity chain / steps: one activity and one workflow task per step. */
  perStepMs: number;
  /** A chain of TIMER_STEPS 1 ms timers / its steps: one timer and one workflow task per step. */
  timerStepMs?: number;
  /** A chain that upserts a search attribute at every step closed → a visibility query sees its last value. */
  visibilityLagMs?: number;
  /** Absent at Temporal's defaults, for a server whose pid is unknown, and in reports from before 2026-12-04. */
  cost?: StepCost;
}

export interface HandoffTarget {
  nativeConnection: NativeConnection;
  client: Client;
  namespace: string;
  /**
   * The server's processes, for `cost`: read as that measure starts, once the baseline's chains have opened the server's
   * connections (PostgreSQL starts a process per connection; one that ends meanwhile takes its CPU time with it).
   */
  serverPids?: () => number[];
}

export async function measureHandoffs(
  target: HandoffTarget,
  queueReaders: QueueReaders,
  steps: number,
  repeats: number,
): Promise<HandoffFigures[]> {
  const measureCost = queueReaders === 'ours' && !!target.serverPids;
  const worker = await Worker.create({
    connection: target.nativeConnection,
    namespace: target.namespace,
    taskQueue: TASK_QUEUE,
    workflowsPath: fileURLToPath(new URL('./handoff-workflow.ts', import.meta.url)),
    activities: { noop: () => Promise.resolve() },
  });
  const figures: HandoffFigures[] = [];
  const id = (what: string, r: number) => `bench-${what}-${queueReaders}-${Date.now()}-${r}`;
  await worker.runUntil(async () => {
    for (let r = 1; r <= repeats; r++) {
      const chain = await target.client.workflow.start(handoffChain, {
        taskQueue: TASK_QUEUE,
        workflowId: id('handoff', r),
        args: [steps],
      });
      await chain.result();
      const events = parseEvents((await chain.fetchHistory()).events ?? []);
      const timeOf = new Map(events.map((e) => [e.id, e.time]));
      const waits = (pick: (raw: HistoryEvent['raw']) => { scheduledEventId?: unknown } | null | undefined) =>
        events.flatMap((e) => {
          const started = pick(e.raw);
          return started ? [e.time - (timeOf.get(Number(started.scheduledEventId)) ?? NaN)] : [];
        });
      const timers = await target.client.workflow.start(timerChain, {
        taskQueue: TASK_QUEUE,
        workflowId: id('timers', r),
        args: [TIMER_STEPS],
      });
      await timers.result();
      figures.push({
        queueReaders,
        steps,
        activityTaskMs: percentiles(waits((e) => e.activityTaskStartedEventAttributes)),
        workflowTaskMs: percentiles(waits((e) => e.workflowTaskStartedEventAttributes)),
        perStepMs: span(events) / steps,
        timerStepMs: span(parseEvents((await timers.fetchHistory()).events ?? [])) / TIMER_STEPS,
        visibilityLagMs: await visibilityLag(target.client, id('visibility', r), steps),
        ...(measureCost ? { cost: await stepCost(target, id('cost', r)) } : {}),
      });
    }
  });
  return figures;
}

async function stepCost(target: HandoffTarget, workflowId: string): Promise<StepCost | undefined> {
  const pids = target.serverPids!();
  const [server, self, at] = [processesCpuMs(pids), process.cpuUsage(), Date.now()];
  await Promise.all(
    Array.from({ length: COST_CHAINS }, (_, i) =>
      target.client.workflow.execute(handoffChain, {
        taskQueue: TASK_QUEUE,
        workflowId: `${workflowId}-${i}`,
        args: [COST_STEPS],
      }),
    ),
  );
  const [serverAfter, selfSpent, wallMs] = [processesCpuMs(pids), process.cpuUsage(self), Date.now() - at];
  if (server === undefined || serverAfter === undefined) return undefined;
  const n = COST_CHAINS * COST_STEPS;
  return {
    chains: COST_CHAINS,
    steps: COST_STEPS,
    serverMs: (serverAfter - server) / n,
    workerMs: (selfSpent.user + selfSpent.system) / 1000 / n,
    wallMs: wallMs / COST_STEPS,
  };
}

const span = (events: HistoryEvent[]) => (events.at(-1)?.time ?? NaN) - (events[0]?.time ?? NaN);

async function visibilityLag(client: Client, workflowId: string, steps: number): Promise<number> {
  const handle = await client.workflow.start(upsertChain, { taskQueue: TASK_QUEUE, workflowId, args: [steps] });
  await handle.result();
  const closed = (await handle.describe()).closeTime!.getTime();
  const query = `WorkflowId = "${workflowId}" AND GtRound = ${steps}`;
  while ((await client.workflow.count(query)).count === 0) await new Promise((r) => setTimeout(r, 5));
  return Date.now() - closed;
}

/** A dev server as a target: its own process is the server's, when it is a dev server of our own CLI (a pid). */
export function devServerTarget(server: DevServer, client: Client): HandoffTarget {
  const { pid } = server;
  const target = { nativeConnection: server.env.nativeConnection, client, namespace: server.namespace };
  return pid === undefined ? target : { ...target, serverPids: () => [pid] };
}

/** A fresh dev server on a SQLite file (as `gt up`) for one setting of the queue readers; stopped and removed after. */
export async function withHandoffServer<T>(
  queueReaders: QueueReaders,
  dynamicConfig: DynamicConfig,
  use: (target: HandoffTarget, server: DevServer) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'gt-handoff-'));
  const server = await startDevServer({ dbFilename: join(dir, 'temporal.db'), settings: queueReaders, dynamicConfig });
  try {
    const client = new Client({ connection: server.env.connection, namespace: server.namespace });
    return await use(devServerTarget(server, client), server);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The production topology's server processes: the Temporal server's and PostgreSQL's (its backends are children). */
export function prodServerPids(stack: Pick<ProdStack, 'server' | 'postgres'>): number[] {
  const [server, pg] = [stack.server.pid(), stack.postgres.pid()];
  return [server, pg, ...(pg === undefined ? [] : descendantsOf(pg))].filter((p): p is number => p !== undefined);
}

/**
 * The production topology on a scratch state directory (no worker hosts, no UI), stopped and removed after. Its
 * server's processes are the Temporal server's and PostgreSQL's, whose backends are its children.
 */
async function withProdStack<T>(use: (target: HandoffTarget) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'gt-handoff-prod-'));
  const stack = await startProdStack({ stateDir: dir, hosts: 0, uiPort: false, onProgress: (m) => console.error(m) });
  try {
    const nativeConnection = await NativeConnection.connect({ address: stack.address });
    const connection = await Connection.connect({ address: stack.address });
    try {
      const client = new Client({ connection, namespace: stack.namespace });
      return await use({
        nativeConnection,
        client,
        namespace: stack.namespace,
        serverPids: () => prodServerPids(stack),
      });
    } finally {
      await Promise.all([nativeConnection.close(), connection.close()]);
    }
  } finally {
    await stack.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function describeHandoffs(figures: HandoffFigures[]): string {
  const med = (xs: (number | undefined)[], digits = 0) => {
    const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
    return v.length ? `${v[Math.floor(v.length / 2)]!.toFixed(digits)} ms` : '–';
  };
  return (
    `${figures[0]?.queueReaders ?? 'server-default'}: ${med(figures.map((f) => f.perStepMs))} per activity step ` +
    `(activity task p50 ${med(figures.map((f) => f.activityTaskMs.p50))}, workflow task p50 ${med(figures.map((f) => f.workflowTaskMs.p50))}), ` +
    `${med(figures.map((f) => f.timerStepMs))} per timer step, visibility lag ${med(figures.map((f) => f.visibilityLagMs))}` +
    (figures.some((f) => f.cost)
      ? `; ${COST_CHAINS} chains at once: server ${med(
          figures.map((f) => f.cost?.serverMs),
          1,
        )} and worker ` +
        `${med(
          figures.map((f) => f.cost?.workerMs),
          1,
        )} of CPU per step, ${med(figures.map((f) => f.cost?.wallMs))} a step`
      : '') +
    ` (each a median of ${figures.length})`
  );
}

async function main(argv: string[]): Promise<void> {
  const flag = (name: string, fallback: number) => {
    const i = argv.indexOf(name);
    const value = i >= 0 ? Number(argv[i + 1]) : fallback;
    if (!Number.isInteger(value) || value < 1) throw new Error(`${name} expects a positive integer`);
    return value;
  };
  const extra: Record<string, number> = {};
  argv.forEach((a, i) => {
    if (a !== '--set') return;
    const m = /^([\w.]+)=(\d+)$/.exec(argv[i + 1] ?? '');
    if (!m) throw new Error('--set expects key=number, e.g. --set history.timerProcessorMaxPollRPS=1000');
    extra[m[1]!] = Number(m[2]);
  });
  const [steps, repeats] = [flag('--steps', 60), flag('--repeats', 3)];
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const stack = argv.includes('--stack') ? argv[argv.indexOf('--stack') + 1] : 'dev';
  if (stack !== 'dev' && stack !== 'prod') throw new Error(`--stack expects dev or prod, not ${stack}`);
  if (stack === 'prod') {
    const figures = await withProdStack((target) => measureHandoffs(target, 'ours', steps, repeats));
    console.log(describeHandoffs(figures).replace(/^[\w-]+:/, 'ours, production topology (PostgreSQL):'));
    return;
  }
  // With --set, the run probes what those values change on their own: our setting is not run again.
  const runs: [QueueReaders, DynamicConfig][] = Object.keys(extra).length
    ? [['server-default', extra]]
    : [
        ['server-default', {}],
        ['ours', {}],
      ];
  for (const [readers, dynamicConfig] of runs) {
    const figures = await withHandoffServer(readers, dynamicConfig, (target) =>
      measureHandoffs(target, readers, steps, repeats),
    );
    const set = Object.keys(dynamicConfig).length
      ? ` + ${Object.entries(dynamicConfig)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}`
      : '';
    console.log(describeHandoffs(figures).replace(/^[\w-]+:/, `${readers}${set}:`));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`bench/handoff: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
