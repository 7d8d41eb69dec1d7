/**
 * Activities start eagerly on a server we own (EAGER_ACTIVITIES in provisioning/server-settings.ts): a workflow task
 * that schedules an activity on its own queue gets the activity task back in the answer to its completion. Told from
 * the server's own count (`activity_eager_execution` on its metrics endpoint), on a dev server started as `gt up`, the
 * bench and the suite start theirs, and on one at Temporal's defaults, where the same workflow runs none eagerly.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DevServer } from '../provisioning/dev-server';
import type { ServerSettings } from '../provisioning/server-settings';
import { counter, scrape, serverWithHandoffWorker } from './helpers/server-metrics';

const STEPS = 5;

let server: DevServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Runs a chain of STEPS activities on one queue, then reads how many of them the server says it started eagerly. */
async function eagerStarts(settings: ServerSettings): Promise<number> {
  const taskQueue = settings === 'ours' ? 'eagerours' : 'eagerdefaults';
  const started = await serverWithHandoffWorker(settings, taskQueue);
  server = started.server;
  const { worker, pid } = started;
  const { env } = server;
  const workflowId = `eager-${Date.now()}`;
  await worker.runUntil(env.client.workflow.execute('handoffChain', { taskQueue, workflowId, args: [STEPS] }));
  // The server's metrics lag its work by a moment: wait until it shows the chain's activities completed and, for the
  // eager starts, until they reach the chain's length or a few seconds have passed since (then they never will).
  let completedAt: number | undefined;
  for (const deadline = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 250))) {
    const metrics = await scrape(pid);
    const eager = counter(metrics, 'activity_eager_execution', taskQueue);
    if (counter(metrics, 'activity_end_to_end_latency_count', taskQueue) === STEPS) completedAt ??= Date.now();
    if (eager === STEPS || (completedAt !== undefined && Date.now() - completedAt > 5_000)) return eager;
    if (Date.now() > deadline) throw new Error(`the server did not count the ${STEPS} activities of ${taskQueue}`);
  }
}

describe('eager activities', () => {
  it('are started from the workflow task that schedules them on a server with our settings', async () => {
    expect(await eagerStarts('ours')).toBe(STEPS);
  });

  it('are not at Temporal’s defaults (what the check above tells apart)', async () => {
    expect(await eagerStarts('server-default')).toBe(0);
  });
});
