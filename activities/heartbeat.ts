/**
 * Heartbeats for activities that do bounded work of unknown length (preparing a worktree, importing a branch): while
 * the work runs the activity heartbeats at a third of its heartbeat timeout, so a worker that dies half-way is noticed
 * within that timeout and the activity retried on a live worker — instead of holding its bead until start-to-close
 * (found by the chaos soak: a host killed during prepareRun held its bead for ten minutes).
 *
 * The first beat comes after a third of the timeout, not at the start: the server counts the timeout from the
 * attempt's start, so a beat at once proves nothing the start did not, and it costs a write of the workflow's state on
 * the server (the SDK sends an activity's first heartbeat at once and throttles only later ones). Work shorter than
 * that, as most of it is, then sends none.
 */
import { activityInfo, heartbeat } from '@temporalio/activity';

export async function whileHeartbeating<T>(what: string, work: () => Promise<T>): Promise<T> {
  const timeout = activityInfo().heartbeatTimeoutMs;
  if (!timeout) return work();
  const beat = setInterval(() => heartbeat(what), Math.max(100, timeout / 3));
  try {
    return await work();
  } finally {
    clearInterval(beat);
  }
}
