/**
 * A long bead continues as new between runs, past its history threshold (forced low here, as the convoy's is in its
 * tests), and goes on where it was: same round, next run, its runs, hand-offs and checkpoints carried; one merge.
 * Real server, real agents (test/agents/run-handoff.sh), real git.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BeadResult } from '../domain/bead';
import { beadStart } from '../domain/starts';
import { beadStateQuery } from '../domain/messages';
import { createRepo } from './helpers/repo';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('bead continue-as-new', () => {
  it('hands over between runs past its threshold and carries on to one merge', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-bead-can-'));
    const rig = await t.addRig({
      name: 'bead-can',
      repo: repo.origin,
      agent: agentScript('run-handoff'),
      env: { TEST_DIR: dir, HANDOFFS: '4' },
      policy: { maxAttempts: 1 },
    });
    const id = 'b-can';
    const start = beadStart({
      taskQueue: t.taskQueue,
      input: { bead: { id, title: 'A long bead' }, rig, continueAsNewAfterEvents: 40 },
    });
    const handle = await t.client.workflow.start(start.workflowType, start.options);
    const result = (await t.client.workflow.getHandle(handle.workflowId).result()) as BeadResult;
    expect(result.status).toBe('closed');

    const state = await t.client.workflow.getHandle(handle.workflowId).query(beadStateQuery);
    expect(state.continuedAsNew).toBeGreaterThanOrEqual(1);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-can/r1/a1', 'handed_off'],
      ['b-can/r1/a2', 'handed_off'],
      ['b-can/r1/a3', 'handed_off'],
      ['b-can/r1/a4', 'handed_off'],
      ['b-can/r1/a5', 'done'],
    ]);
    expect(state.handoffs).toBe(4);
    // The last run's prompt still has the first run's checkpoint: it crossed the hand-over.
    expect(readFileSync(join(dir, 'prompt-a5.md'), 'utf8')).toContain('part 1 of the work is done');

    const executions: string[] = [];
    for await (const wf of t.client.workflow.list({ query: `WorkflowId = '${handle.workflowId}'` }))
      executions.push(wf.status.name);
    expect(executions.filter((s) => s === 'CONTINUED_AS_NEW').length).toBe(state.continuedAsNew);
    expect(executions.filter((s) => s === 'COMPLETED')).toHaveLength(1);
    // Every execution stayed near its threshold: a run is at most one hand-off's worth of events past it.
    for await (const wf of t.client.workflow.list({ query: `WorkflowId = '${handle.workflowId}'` }))
      expect(wf.historyLength).toBeLessThan(120);
    expect((await repo.log()).filter((c) => c.subject === `work for ${id}`)).toHaveLength(1);
  });
});
