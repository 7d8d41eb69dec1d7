/**
 * An update that arrives with a workflow's very first task runs as soon as its handler is registered; the
 * refinery once failed that task (a helper it used was declared below the handlers). Update-with-start makes the
 * timing deterministic: the update is delivered together with the start.
 */
import { WithStartWorkflowOperation } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../domain/ids';
import { pauseRefineryUpdate } from '../domain/messages';
import { RigConfig } from '../domain/rig';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('the refinery', () => {
  it('accepts a pause delivered with its first workflow task', async () => {
    const repo = await createRepo();
    const rig = RigConfig.parse({ name: 'first-task', repo: repo.origin, agent: agentScript('good') });
    const start = new WithStartWorkflowOperation('refineryWorkflow', {
      workflowId: refineryWorkflowId(rig.name),
      taskQueue: t.taskQueue,
      args: [{ rig }],
      workflowIdConflictPolicy: 'FAIL',
    });
    const state = await t.client.workflow.executeUpdateWithStart(pauseRefineryUpdate, {
      args: [{ paused: true }],
      startWorkflowOperation: start,
    });
    expect(state).toMatchObject({ rig: 'first-task', paused: true });
    expect((await t.town.mergeQueue('first-task')).paused).toBe(true);
  });
});
