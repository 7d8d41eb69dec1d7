/**
 * The fast workflow tier: our real workflow bundle on Temporal's time-skipping test server (the Java SDK's TestServer,
 * provisioned by provisioning/test-server.ts), with activities stubbed by plain functions. Timers of minutes or hours
 * (stall timeouts, backoff, PR polling, breaker probes) pass in milliseconds of wall time, so their paths are tested
 * deterministically instead of with real timeouts.
 *
 * Skipped time is global to one server, so each test file starts its own and its tests run one after the other.
 *
 * How the Java test server (io.temporal:temporal-test-server 1.38) differs from a real one, as met here:
 *  - time does not skip while any activity is scheduled or running (activities run in real time): a stub that stands
 *    for a long silent agent lets time pass itself (bead-stubs.ts);
 *  - every workflow gets a ten-year run timeout, and a result() that skips time jumps to it as soon as nothing else is
 *    pending: a long-lived workflow (dispatch gate, refinery) that must stay up is driven with env.sleep() and a plain
 *    Client instead;
 *  - a query to a run that continued as new does not return, and a signal sent during continue-as-new may be refused;
 *  - continue-as-new is suggested at 4,096 events or 4 MB (not configurable).
 */
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { History } from '@temporalio/common/lib/proto-utils';
import type { EphemeralServerExecutable } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import { createTownActivities } from '../../activities/town';
import { RigConfig, type RigConfigInput } from '../../domain/rig';
import { ALL_SEARCH_ATTRIBUTES } from '../../domain/search-attributes';

/** What global setup found: a server to run, a reason to skip (no Java), or why provisioning failed. */
export type TimeSkippingServer = { executable: EphemeralServerExecutable } | { skip: string } | { error: string };

const server = inject('timeSkippingServer');
/** Set when the fast tier cannot run on this machine; the files skip and print it. */
export const skipReason = 'skip' in server ? server.skip : undefined;
if (skipReason) console.warn(`fast workflow tier skipped: ${skipReason}`);

let runtimeInstalled = false;

export async function startTimeSkipping(): Promise<TestWorkflowEnvironment> {
  if ('error' in server) throw new Error(server.error);
  if ('skip' in server) throw new Error(server.skip);
  if (!runtimeInstalled) {
    runtimeInstalled = true;
    // Workflows log their state changes at INFO; a failing test's output should show only what went wrong.
    Runtime.install({ logger: new DefaultLogger('WARN') });
  }
  const env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: server.executable } });
  // Our workflows set these on every status change, and the test server, like a real one, rejects unknown ones.
  await env.connection.operatorService.addSearchAttributes({
    namespace: 'default',
    searchAttributes: Object.fromEntries(ALL_SEARCH_ATTRIBUTES.map((k) => [k.name, INDEXED_TYPES[k.type]])),
  });
  return env;
}

const INDEXED_TYPES = {
  TEXT: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
  KEYWORD: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  INT: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
  DOUBLE: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
  BOOL: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
  DATETIME: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
  KEYWORD_LIST: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
} as const;

let queues = 0;

/**
 * Runs `body` with a worker of the real workflow bundle and `activities` on a task queue of its own; the workflows'
 * host queue is the same queue (claimHost answers with it), so one stub set serves every activity.
 */
export async function withWorker<T>(
  env: TestWorkflowEnvironment,
  activities: (taskQueue: string) => object,
  body: (taskQueue: string) => Promise<T>,
): Promise<T> {
  const taskQueue = `fast-${process.pid}-${++queues}`;
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: 'default',
    taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: activities(taskQueue),
    // Cancellation reaches an activity with its next heartbeat: don't hold heartbeats back for seconds.
    maxHeartbeatThrottleInterval: 20,
    defaultHeartbeatThrottleInterval: 20,
  });
  return worker.runUntil(body(taskQueue));
}

/**
 * The refinery's delivery of outcomes as the worker runs it (a local activity signalling real workflows on the test
 * server), for stub sets of refinery tests: without it each outcome would take the fallback, signals after failed tries.
 */
export function deliveryActivity(client: Client, taskQueue: string) {
  const town = createTownActivities({ client, taskQueue, hostQueue: taskQueue, gtHome: '/nonexistent' });
  return {
    deliverMergeOutcome: (raw: Parameters<typeof town.deliverMergeOutcome>[0]) => town.deliverMergeOutcome(raw),
  };
}

/** A rig for workflow inputs: nothing in it is touched by stubbed activities. */
export const testRig = (overrides: Partial<RigConfigInput> = {}) =>
  RigConfig.parse({ name: 'fast', repo: '/nonexistent/repo.git', agent: 'true', ...overrides });

/**
 * The inputs a workflow carried into each continue-as-new, once there are at least `n`, read from its runs' histories
 * (a query to a run that continued as new does not return on the test server).
 */
export async function continuationInputs<T>(client: Client, workflowId: string, firstRunId: string, n: number) {
  for (;;) {
    const inputs: T[] = [];
    for (let runId: string | undefined = firstRunId; runId;) {
      const history: History = await client.workflow.getHandle(workflowId, runId).fetchHistory();
      const attributes = history.events!.at(-1)!.workflowExecutionContinuedAsNewEventAttributes;
      if (attributes) inputs.push(defaultPayloadConverter.fromPayload<T>(attributes.input!.payloads![0]!));
      runId = attributes?.newExecutionRunId ?? undefined;
    }
    if (inputs.length >= n) return inputs;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The `patched()` ids whose markers a history holds (the SDK's core writes them as `core_patch` markers). */
export const patchIds = (history: History) =>
  (history.events ?? []).flatMap((e) => {
    const marker = e.markerRecordedEventAttributes;
    if (marker?.markerName !== 'core_patch') return [];
    return Object.values(marker.details ?? {}).flatMap((p) =>
      (p.payloads ?? []).map((payload) => Buffer.from(payload.data ?? []).toString()),
    );
  });
