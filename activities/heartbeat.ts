/**
 * Heartbeats for activities that do bounded work of unknown length (preparing a worktree, importing a branch): while
 * the work runs the activity heartbeats at a third of its heartbeat timeout, so a worker that dies half-way is noticed
 * within that timeout and the activity retried on a live worker — instead of holding its bead until start-to-close
 * (found by the chaos soak: a host killed during prepareRun held its bead for ten minutes).
 */
import { activityInfo, heartbeat } from '@temporalio/activity';

export async function whileHeartbeating<T>(what: string, work: () => Promise<T>): Promise<T> {
  const timeout = activityInfo().heartbeatTimeoutMs;
  if (!timeout) return work();
  heartbeat(what);
  const beat = setInterval(() => heartbeat(what), Math.max(100, timeout / 3));
  try {
    return await work();
  } finally {
    clearInterval(beat);
  }
}
