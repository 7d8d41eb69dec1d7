/**
 * Whether a workflow still runs, as two callers ask it of a real server: the dispatch gate's reap of slots held by
 * beads that ended without releasing them (closedWorkflows), and a supervision given up by the server deciding whether
 * its run's workflow will ever retry it (workflowRunningProbe, which answers "cannot say" when the server is away).
 */
import { randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { workflowRunningProbe } from '../activities/agent-runs';
import { createDispatchActivities } from '../activities/dispatch';
import { temporalAddress } from './helpers/server';

let connection: Connection;
let client: Client;
const ids = { running: `live-${randomUUID()}`, ended: `ended-${randomUUID()}`, missing: `missing-${randomUUID()}` };

beforeAll(async () => {
  connection = await Connection.connect({ address: temporalAddress() });
  client = new Client({ connection, namespace: inject('temporalNamespace') });
  // No worker polls this queue: to the server both run until one is terminated.
  for (const workflowId of [ids.running, ids.ended])
    await client.workflow.start('nothingRunsThis', { taskQueue: 'nobody-polls-this-queue', workflowId });
  await client.workflow.getHandle(ids.ended).terminate('test: ended');
});
afterAll(async () => {
  await client?.workflow.getHandle(ids.running).terminate('test over');
  await connection?.close();
});

describe('whether a workflow still runs', () => {
  it('is no for a closed or unknown workflow, for the dispatch gate’s reap', async () => {
    const activities = createDispatchActivities({ client, taskQueue: 'nobody-polls-this-queue' });
    const closed = await new MockActivityEnvironment().run(
      (i: { workflowIds: string[] }) => activities.closedWorkflows(i),
      { workflowIds: [ids.running, ids.ended, ids.missing] },
    );
    expect(closed).toEqual([ids.ended, ids.missing]);
  });

  it('is yes, no, no, and "cannot say" when the server does not answer, for a supervision', async () => {
    const probe = workflowRunningProbe(client);
    expect(await Promise.all([ids.running, ids.ended, ids.missing].map(probe))).toEqual([true, false, false]);
    // Nothing listens there: the probe must not take that for a closed workflow.
    const away = new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) });
    expect(await workflowRunningProbe(away)(ids.running)).toBeUndefined();
  });
});
