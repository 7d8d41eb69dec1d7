/**
 * The town worker of one host: a worker on the town queue (workflows, merges, gates, Temporal calls) and one on
 * this host's own queue (agent runs it owns), plus the agent gateway agents talk to. GT_HOME is made owner-only.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { NativeConnection, Worker, type CompiledWorkerOptions } from '@temporalio/worker';
import { defaultRuntimes } from '../agents';
import type { AgentRuntimeDriver } from '../agents/runtime';
import { createHostQueueActivities, createTownQueueActivities } from '../activities';
import {
  dispatchAsksAhead,
  dispatchSlotReleaser,
  dispatchSlotRequester,
  dispatchStartReporter,
} from '../activities/dispatch';
import { workflowRunningProbe } from '../activities/agent-runs';
import { LaunchesAhead } from '../activities/launch-ahead';
import { MergedBranchSweeper } from '../activities/merged-branches';
import { mergeRequestQueuer } from '../activities/town';
import type { AgentRuntime } from '../domain/rig';
import { hostTaskQueue } from '../domain/task-queues';
import { ensureHome, gatewaySecret, gtHome, hostId as defaultHostId } from '../host/home';
import { startGateway, type Gateway } from '../gateway/server';
import { DoneRuns } from '../host/done-runs';
import { dataConverterFromEnv } from '../codec/settings';
import { activityLogIds } from './logging';
import { assertBundleMatchesTracing, tracingFromEnv, type Tracing } from './tracing';

/** How long a stopping worker waits for the deletion of the merged branches it still has queued. */
const MERGED_BRANCHES_FLUSH_MS = 5_000;

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/** zod and the town's schemas, built once per workflow thread and shared by its workflows (workflows/preload.ts). */
export const workflowPreloadModules = [fileURLToPath(new URL('../workflows/preload.ts', import.meta.url))];
/** What every bundle of the town's workflows is built from: a worker's own, the prebuilt one, the tests', the bench's. */
export const workflowBundleOptions = { workflowsPath, preloadModules: workflowPreloadModules };
export const gtBinDir = fileURLToPath(new URL('../bin', import.meta.url));

export interface TownWorkerOptions {
  /** The worker's connection, which its activities' and gateway's client share (see createTownWorker). */
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  hostId?: string;
  /** Prebuilt bundle (production, tests; default: GT_WORKFLOW_BUNDLE if set); otherwise workflows are bundled from source at start. */
  workflowBundle?: { codePath: string } | { code: string };
  /** publicUrl: the gateway URL agents are given when the bound address is not reachable as is (containers, NAT). */
  gateway?: { host?: string; port?: number; publicUrl?: string };
  runtimes?: Partial<Record<AgentRuntime, AgentRuntimeDriver>>;
  pollIntervalMs?: number;
  shutdownGraceTime?: string;
  /** Payload codecs (encryption); defaults to GT_PAYLOAD_CODEC. Must match the clients' (host/connection.ts). */
  dataConverter?: DataConverter;
  /**
   * Where escalations are POSTed (activities/notify.ts); defaults to GT_ESCALATION_WEBHOOK. A secret (Slack-style URLs
   * carry a token): it stays in this process, never in a workflow's input or history.
   */
  escalationWebhook?: string;
  /** OpenTelemetry tracing (worker/tracing.ts); defaults to GT_OTEL_EXPORTER, `null` forces it off. A prebuilt bundle must match. */
  tracing?: Tracing | null;
}

export interface TownWorker {
  gateway: Gateway;
  hostQueue: string;
  /** Runs until shutdown() (or a shutdown signal), then drains. */
  run(): Promise<void>;
  shutdown(): Promise<void>;
}

/**
 * The town worker's workflow task slots (the SDK's default, said here because the next depends on it), and how many
 * of them beads asking their dispatch gate for a slot may hold while they wait for its answer: a quarter, so those
 * waits alone can never take the slots the gate's own workflow task needs (activities/dispatch.ts).
 */
const WORKFLOW_TASK_SLOTS = 40;
const DISPATCH_ANSWER_WAITS = WORKFLOW_TASK_SLOTS / 4;
/**
 * The longest an activity's heartbeat waits before going to the server. Core's own is 0.8 × the heartbeat timeout:
 * a cancellation, which rides on a heartbeat's answer, then reached a supervision that late (`gt bead cancel` took
 * 8 s with a 10 s timeout, 48 s with the default minute; a speculative gate evicted from the window ran on for up to
 * 24 s), and the server heard a supervision only 2 s before it would time it out. Activities beat locally every status
 * poll (half a second), every 5 s (gates) or every third of their timeout: at most one server write per second each.
 */
const HEARTBEAT_THROTTLE = '1s';
/**
 * Threads that run workflow tasks (the SDK's default with a reused context is one). Each call into a workflow's context
 * starts and joins a watchdog thread of node's `vm` (the SDK passes a timeout on every call, several per activation;
 * nodejs/node#47739 would share one): a few tens of microseconds on an idle machine, but on a loaded one the join waits
 * for the scheduler, and with sixteen agents on two cores the one thread spent about half its busy time there. A second
 * thread runs other workflows' tasks meanwhile: 100 × 16 ≈ 10 % shorter, its hop ≈ 15 % (docs/performance.md).
 */
const WORKFLOW_THREADS = 2;
/**
 * How long one workflow task may compute before node's watchdog terminates it (the SDK's default is 5 s). The watchdog
 * counts the wall clock, so a worker frozen mid-task longer than that (a debugger, a frozen container, ctrl-Z, the
 * soak's SIGSTOP) is terminated on resuming, and with the async context tracking the workflows' cancellation scopes
 * turn on, node 20 then aborts the whole process (nodejs/node#38503). Our tasks take milliseconds, a few hundred at
 * most (110–430 ms p50 with 16 agents on two cores, docs/performance.md): a minute still ends a task that never
 * yields, without taking the host down with every pause. The SDK reads the option (what a worker is given is spread
 * over its defaults) but does not declare it ("not exposed at the moment"), hence the type:
 * test/workflow-thread-pause.test.ts fails should it stop.
 */
export const WORKFLOW_THREAD_OPTIONS: Pick<CompiledWorkerOptions, 'isolateExecutionTimeout'> = {
  isolateExecutionTimeout: '1m',
};

export async function createTownWorker(options: TownWorkerOptions): Promise<TownWorker> {
  const host = options.hostId ?? defaultHostId();
  const hostQueue = hostTaskQueue(options.taskQueue, host);
  const home = ensureHome(gtHome());
  const runtimes = options.runtimes ?? defaultRuntimes();
  const secret = gatewaySecret(home);
  const dataConverter = options.dataConverter ?? dataConverterFromEnv();
  const tracing =
    options.tracing === undefined ? await tracingFromEnv(process.env, host) : (options.tracing ?? undefined);
  const plugins = tracing ? [tracing.plugin] : [];
  const workflowBundle =
    options.workflowBundle ??
    (process.env.GT_WORKFLOW_BUNDLE ? { codePath: process.env.GT_WORKFLOW_BUNDLE } : undefined);
  // Bundling from source passes the plugins to the bundler itself; a prebuilt bundle has its interceptors compiled in.
  if (workflowBundle) assertBundleMatchesTracing(workflowBundle, !!tracing);
  // The gateway's and the activities' own client: they write payloads too (updates, signals to the refinery) and
  // must encrypt exactly as this worker does. With tracing, its interceptors carry the trace into what they start or
  // signal. On the worker's own connection: a workflow the activities start can then be started eagerly, its first
  // workflow task handed to this worker in the start's answer (activities/convoy.ts), and their calls go through the
  // SDK's core rather than a second gRPC stack on the worker's main thread.
  const client = new Client({
    connection: options.connection,
    namespace: options.namespace,
    dataConverter,
    plugins,
  });
  // What the gateway saw accepted as `gt done`, for this host's supervision to publish at the agent's exit.
  const doneRuns = new DoneRuns();
  // A convoy bead's first run, launched by this worker's convoy activities as they start the bead, taken by its launch
  // on this worker's host queue; the gateway does not hear its agent before (activities/launch-ahead.ts).
  const workflowRunning = workflowRunningProbe(client);
  const launchesAhead = new LaunchesAhead({ workflowRunning });
  const gateway = await startGateway({
    client,
    secret,
    doneRuns,
    launchesAhead,
    host: options.gateway?.host,
    port: options.gateway?.port,
    publicUrl: options.gateway?.publicUrl,
  });
  const code = workflowBundle
    ? { workflowBundle }
    : { workflowsPath, bundlerOptions: { preloadModules: workflowPreloadModules } };
  // Agents outlive a worker restart; activities in flight get this long to notice and hand over cleanly.
  const shutdownGraceTime = options.shutdownGraceTime ?? '10s';
  const interceptors = { activity: [activityLogIds] };

  // A convoy's worker asks the gate for a bead's first run as it starts the bead, when it does not launch the run itself
  // (launchesAhead: a first task another worker decides); that run's launch, on this worker's host queue, takes the
  // answer (activities/dispatch.ts dispatchAsksAhead).
  const requestSlot = dispatchSlotRequester(client, options.taskQueue);
  const asksAhead = dispatchAsksAhead(requestSlot);
  // The branches this worker's merges landed, deleted from the rigs' repositories later and in batches; what is still
  // queued when the worker stops goes then (run()).
  const mergedBranches = new MergedBranchSweeper({ gtHome: home });
  const townWorker = await Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue,
    ...code,
    activities: createTownQueueActivities({
      client,
      taskQueue: options.taskQueue,
      hostQueue,
      gtHome: home,
      // The one place the activities get the worker's environment (tokens, GITHUB_API_URL, what gates may be given).
      hostEnv: process.env,
      gtBinDir,
      runtimes,
      escalationWebhook: options.escalationWebhook ?? (process.env.GT_ESCALATION_WEBHOOK || undefined),
      answerWaits: DISPATCH_ANSWER_WAITS,
      asksAhead,
      launchesAhead,
      mergedBranches,
    }),
    maxConcurrentWorkflowTaskExecutions: WORKFLOW_TASK_SLOTS,
    workflowThreadPoolSize: WORKFLOW_THREADS,
    ...WORKFLOW_THREAD_OPTIONS,
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    shutdownGraceTime,
    dataConverter,
    interceptors,
    plugins,
  });
  const hostWorker = await Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: hostQueue,
    activities: createHostQueueActivities({
      gtHome: home,
      hostId: host,
      hostQueue,
      gatewayUrl: gateway.url,
      gatewaySecret: secret,
      hostEnv: process.env,
      gtBinDir,
      runtimes,
      pollIntervalMs: options.pollIntervalMs,
      doneRuns,
      reportStart: dispatchStartReporter(client),
      releaseSlot: dispatchSlotReleaser(client),
      requestSlot,
      askedAhead: asksAhead,
      launchesAhead,
      queueMergeRequest: mergeRequestQueuer(client, options.taskQueue),
      workflowRunning,
    }),
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    shutdownGraceTime,
    dataConverter,
    interceptors,
    plugins,
  });

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      // The gateway first, while this worker still runs workflow tasks: what it forwards as it closes (agents'
      // requests in flight, progress reports still waiting) is then answered, not cut off by the close's grace.
      try {
        await gateway.close();
      } finally {
        for (const w of [townWorker, hostWorker]) if (w.getState() === 'RUNNING') w.shutdown();
      }
      await tracing?.flush();
    })());
  return {
    gateway,
    hostQueue,
    async run() {
      try {
        await Promise.all([townWorker.run(), hostWorker.run()]);
      } finally {
        await shutdown();
        // No merge lands any more: the branches still queued go now, waited for a bounded time (a repository out of
        // reach must not hold the process; what is left stays in the repository, as when a worker is killed).
        await Promise.race([mergedBranches.flush(), sleep(MERGED_BRANCHES_FLUSH_MS, undefined, { ref: false })]);
      }
    },
    shutdown,
  };
}
