/**
 * logs:<run>:<nonce> — one read of a run's output for `gt logs`, from any machine that can reach Temporal: the only
 * Temporal-native way for a client to run an activity on a chosen host's queue is a workflow that schedules it there.
 * It runs exactly one readRunLog activity on the queue of the host that owns the run and returns its bounded chunk;
 * a host whose worker does not pick the read up within HOST_PICKUP is reported as such, never waited for.
 */
import { ApplicationFailure, proxyActivities, TimeoutFailure, workflowInfo } from '@temporalio/workflow';
import type { HostQueueActivities } from '../activities';
import { ReadRunLogRequest, type RunLogChunk } from '../domain/logs';
import { hostTaskQueue } from '../domain/task-queues';
import { failureMessage, parseOrReject } from '../domain/validation';
import { Failure, RETRY } from '../domain/failures';

/** How long the owning host's worker may take to pick the read up before the operator hears it is not there. */
const HOST_PICKUP_MS = 15_000;

export async function readRunLogWorkflow(raw: ReadRunLogRequest): Promise<RunLogChunk> {
  const { host, ...read } = parseOrReject(ReadRunLogRequest, raw, 'log read');
  const onHost = proxyActivities<HostQueueActivities>({
    taskQueue: hostTaskQueue(workflowInfo().taskQueue, host),
    scheduleToStartTimeout: HOST_PICKUP_MS,
    startToCloseTimeout: read.waitMs + 30_000,
    // A read changes nothing: one retry covers a worker restarting under it; a missing host fails on pickup.
    retry: RETRY.logRead,
  });
  try {
    return await onHost.readRunLog(read);
  } catch (err) {
    const why =
      (err as { cause?: unknown }).cause instanceof TimeoutFailure
        ? `its worker did not pick the read up within ${HOST_PICKUP_MS / 1000} s (is a worker of host ${host} running?)`
        : failureMessage(err);
    throw ApplicationFailure.nonRetryable(
      `could not read the output of run ${read.runId} on host ${host}: ${why}`,
      Failure.LogReadFailed,
    );
  }
}
