/**
 * Signals a workflow sends and does not wait for (a run's start to the dispatch gate, the gate's grants, the
 * refinery's outcomes), sent by the worker from a local activity inside the open workflow task: one marker in the
 * sender's history, where a signal cost its initiation, its acknowledgement and often a workflow task of its own.
 * Best effort, as the signals were: a few quick tries, then the caller's fallback (the signal as before, or a
 * warning). Every receiver takes a repeat as a no-op, so a retried workflow task may send again.
 */
import { proxyLocalActivities } from '@temporalio/workflow';
import type { TownQueueActivities } from '../activities';

export const deliverLocally = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumAttempts: 3 },
});
