/**
 * Issue 12: `maxRounds` exhaustion with real beads, polecats, gates and git. A bead whose merge request is sent back in
 * every round (its gates never pass) gets exactly `maxRounds` rounds — one polecat run and one merge request each, the
 * feedback of every earlier round in the next prompt — then fails with a reason that says so, raises one escalation
 * (not one per round), and never moves the target.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escalationIdPart, escalationStateQuery, escalationWorkflowId } from '../domain/escalation';
import { beadWorkflowId, mergeRequestWorkflowId } from '../domain/ids';
import { paths } from '../host/home';
import { workflowExists } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

/** How many escalations a workflow asked for (the raiseEscalation activities its history scheduled). */
async function escalationsRaisedBy(client: Client, workflowId: string): Promise<number> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  return (events ?? []).filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'raiseEscalation')
    .length;
}

describe('maxRounds', () => {
  it('a bead sent back in every round fails after maxRounds with the reason and one escalation', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    const maxRounds = 2;
    await t.addRig({
      name: 'never-green',
      repo: repo.origin,
      gates: ['echo "the build is red"; exit 1'],
      policy: { maxRounds },
    });
    const { handle } = await t.town.sling('never-green', { id: 'nr-1', title: 'Work whose gates never pass' });
    const result = await handle.result();

    expect(result.status).toBe('failed');
    expect(result.reason).toMatch(new RegExp(`^no merge after ${maxRounds} rounds of rework`));
    const state = await t.town.beadState('nr-1');
    expect(state).toMatchObject({ status: 'failed', round: maxRounds, failureReason: result.reason });
    // One polecat run and one merge request per round; none after the last.
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['nr-1/r1/a1', 'done'],
      ['nr-1/r2/a1', 'done'],
    ]);
    expect(state.rounds.map((r) => [r.mergeRequest, r.outcome?.kind])).toEqual([
      [mergeRequestWorkflowId('nr-1', 1), 'gates_failed'],
      [mergeRequestWorkflowId('nr-1', 2), 'gates_failed'],
    ]);
    expect(await workflowExists(t.client, mergeRequestWorkflowId('nr-1', maxRounds + 1))).toBe(false);
    // The second round's polecat was told why the first was sent back.
    const prompt = readFileSync(join(paths.agentDir('nr-1/r2/a1', t.gtHome), 'prompt.md'), 'utf8');
    expect(prompt).toMatch(/\[gates_failed\][\s\S]*the build is red/);

    // Exactly one escalation, by the bead when it gave up; none by its merge requests.
    const raisers = [beadWorkflowId('nr-1'), ...[1, 2].map((r) => mergeRequestWorkflowId('nr-1', r))];
    expect(await Promise.all(raisers.map((id) => escalationsRaisedBy(t.client, id)))).toEqual([1, 0, 0]);
    const escalation = await t.client.workflow
      .getHandle(escalationWorkflowId(`bead-${escalationIdPart('nr-1')}`))
      .query(escalationStateQuery);
    expect(escalation).toMatchObject({
      status: 'open',
      severity: 'high',
      source: 'bead',
      rig: 'never-green',
      beadId: 'nr-1',
      reason: `bead nr-1 failed: ${result.reason}`,
    });
    expect(await repo.sha()).toBe(base);
  });
});
