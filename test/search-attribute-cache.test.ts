/**
 * A dev server we own reads search attributes from its cache (DEV_SERVER_DYNAMIC_CONFIG in
 * provisioning/server-settings.ts), as a full server does: `temporal server start-dev` alone reads them from its
 * database on every use. Told from the server's own count of those reads (`persistence_requests` of
 * GetCurrentClusterMetadata on its metrics endpoint) while a workflow upserts a search attribute at every step, on a
 * dev server started as `gt up`, the bench and the suite start theirs, and on one at Temporal's defaults.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DevServer } from '../provisioning/dev-server';
import type { ServerSettings } from '../provisioning/server-settings';
import { counterWith, scrape, serverWithHandoffWorker } from './helpers/server-metrics';

const STEPS = 10;
const SEARCH_ATTRIBUTE_READS = { operation: 'GetCurrentClusterMetadata' };

let server: DevServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** How many times the server read its search attributes from the database while STEPS upserts went through. */
async function readsDuringUpserts(settings: ServerSettings): Promise<number> {
  const taskQueue = `sacache-${settings}`;
  const started = await serverWithHandoffWorker(settings, taskQueue);
  server = started.server;
  const { worker, pid } = started;
  const { env } = server;
  // A first run fills whatever cache there is; only the second is counted.
  const run = (id: string) => env.client.workflow.execute('upsertChain', { taskQueue, workflowId: id, args: [STEPS] });
  return worker.runUntil(async () => {
    await run(`sacache-warm-${Date.now()}`);
    const before = await settledReads(pid);
    await run(`sacache-${Date.now()}`);
    return (await settledReads(pid)) - before;
  });
}

/**
 * The server's count of search-attribute reads once its metrics have caught up with its work (they lag it by a
 * moment): read when its count of workflow updates written stood still for a second (an idle server still lists its
 * namespaces now and then, so not every request stops).
 */
async function settledReads(pid: number): Promise<number> {
  let last = -1;
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 1000))) {
    const metrics = await scrape(pid);
    const writes = counterWith(metrics, 'persistence_requests', { operation: 'UpdateWorkflowExecution' });
    if (writes === last) return counterWith(metrics, 'persistence_requests', SEARCH_ATTRIBUTE_READS);
    last = writes;
  }
  throw new Error('the server’s count of workflow updates written did not settle within 30 s');
}

describe('search attributes on a dev server we own', () => {
  it('are read from the cache, not from the database at every upsert', async () => {
    // A refresh of the cache (once a minute) may fall inside the run.
    expect(await readsDuringUpserts('ours')).toBeLessThanOrEqual(2);
  });

  it('are read from the database at every upsert at the dev server’s defaults (what the check above tells apart)', async () => {
    expect(await readsDuringUpserts('server-default')).toBeGreaterThanOrEqual(STEPS);
  });
});
