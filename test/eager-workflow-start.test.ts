/**
 * A convoy starts its beads eagerly (activities/convoy.ts): the server hands a bead's first workflow task to the worker
 * that started it, in the start's answer, rather than through matching. Told from the server's own count
 * (`workflow_eager_execution` on its metrics endpoint) after a real convoy of two beads, one after the other, on a dev
 * server of the test's own (the suite's shared servers' counts would mix other files' work).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { createRepo } from './helpers/repo';
import { counter, scrape } from './helpers/server-metrics';
import { agentScript, eventually, quietRuntime, startTestTown } from './helpers/town';

let server: DevServer | undefined;
afterAll(async () => {
  await server?.stop();
});

describe('eager workflow start', () => {
  it('hands a convoy’s beads their first workflow task in the answer to their start', async () => {
    quietRuntime(); // before the server's own client makes the SDK's runtime
    server = await startDevServer({ settings: 'ours' });
    const { pid } = server;
    expect(pid, 'a dev server of our own CLI (npm run provision)').toBeDefined();
    const t = await startTestTown({ address: server.address });
    try {
      const repo = await createRepo();
      await t.addRig({ name: 'eager', repo: repo.origin, agent: agentScript('convoy-instant') });
      await new ConvoyClient(t.town).start({
        id: 'eager',
        title: 'Two beads, one after the other',
        rig: 'eager',
        beads: [
          { id: 'eager-a', title: 'A' },
          { id: 'eager-b', title: 'B', dependsOn: ['eager-a'] },
        ],
      });
      expect(await t.client.workflow.getHandle('convoy:eager').result()).toMatchObject({ status: 'landed' });
      // Both beads are started by the convoy's activity; the server's count lags its work by a moment.
      const eagerBeads = async () =>
        counter(await scrape(pid!), 'workflow_eager_execution', t.taskQueue, 'beadWorkflow');
      await eventually(async () => (await eagerBeads()) >= 2, 15_000).catch(() => undefined);
      expect(await eagerBeads()).toBe(2);
    } finally {
      await t.stop();
    }
  });
});
