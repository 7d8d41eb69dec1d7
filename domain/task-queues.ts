/**
 * Task queues. Workflows and host-independent activities (git merges, gates, forge calls) share the town's queue;
 * agent runs are routed to the queue of the host that owns the process (`<queue>@<host>`), so a retried
 * supervision activity lands where it can re-attach to the live process instead of launching a second one.
 */
export const DEFAULT_TASK_QUEUE = 'gastown';
export const hostTaskQueue = (taskQueue: string, hostId: string) => `${taskQueue}@${hostId}`;
