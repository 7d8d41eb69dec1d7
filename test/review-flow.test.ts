/**
 * Issue 4, review: a reviewer agent run (real process, real gateway) approves or requests changes on exactly the
 * MR's head; requested changes go back to the next polecat as feedback; reviews of different MRs run in parallel
 * without holding the merge queue; a verdict from any run but the current reviewer changes nothing.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintRunToken } from '../agents/run-token';
import { fsSafe } from '../domain/ids';
import { mergeRequestStateQuery, reviewVerdictUpdate } from '../domain/messages';
import { gatewaySecret, paths } from '../host/home';
import { processExists } from './helpers/pids';
import { refineryState } from './helpers/refinery';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean) : []);

describe('review by a reviewer agent', () => {
  it('sends requested changes back to a new polecat run, then approves the new head and merges it', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-review-'));
    await t.addRig({
      name: 'reviewed',
      repo: repo.origin,
      reviewer: agentScript('reviewer-picky'),
      env: { TEST_DIR: testDir },
    });
    const { handle } = await t.town.sling('reviewed', { id: 'rv', title: 'Reviewed work' });
    const result = await handle.result();
    expect(result.status).toBe('closed');

    const state = await t.town.beadState('rv');
    expect(state.rounds).toHaveLength(2);
    expect(state.rounds[0]!.outcome).toEqual({
      kind: 'changes_requested',
      feedback: 'Reviewer (rv/r1/review1) requested changes:\nPlease also add a changelog line for rv',
    });
    expect(readFileSync(join(paths.agentDir('rv/r2/a1', t.gtHome), 'prompt.md'), 'utf8')).toContain(
      'Please also add a changelog line for rv',
    );
    // Each reviewer read exactly the head of its merge request.
    expect(lines(join(testDir, 'reviews'))).toEqual([
      `rv/r1/review1 ${state.rounds[0]!.headSha}`,
      `rv/r2/review1 ${state.rounds[1]!.headSha}`,
    ]);
    const mr = await t.client.workflow.getHandle('mr:rv:2').query(mergeRequestStateQuery);
    expect(mr).toMatchObject({
      phase: 'done',
      reviewRuns: [{ runId: 'rv/r2/review1', outcome: 'approved' }],
      outcome: { kind: 'merged', commit: result.commit },
    });
    // Each round's supervision read the rig as its refinery holds it and left the ticket to the merge request, after
    // its review; the bead did not read the rig again (no local activity but its dispatch requests).
    const events = (await handle.fetchHistory()).events ?? [];
    const decoded = (data: Uint8Array | null | undefined) => JSON.parse(Buffer.from(data!).toString()) as unknown;
    const exits = events.flatMap((e) => {
      const exit = decoded(e.activityTaskCompletedEventAttributes?.result?.payloads?.[0]?.data ?? Buffer.from('{}'));
      return exit && typeof exit === 'object' && 'enqueued' in exit
        ? [exit.enqueued as { rig: { reviewer?: string }; queued: boolean }]
        : [];
    });
    expect(exits.map((e) => [e.queued, e.rig.reviewer])).toEqual([
      [false, agentScript('reviewer-picky')],
      [false, agentScript('reviewer-picky')],
    ]);
    const localActivities = events.flatMap((e) => {
      const data = e.markerRecordedEventAttributes?.details?.['data']?.payloads?.[0]?.data;
      return data ? [(decoded(data) as { activity_type: string }).activity_type] : [];
    });
    expect(localActivities).toEqual(['requestDispatchSlot', 'requestDispatchSlot']);
  });

  it('runs reviews of different MRs in parallel, outside the merge queue, and accepts verdicts only from the current reviewer run', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-review-'));
    await t.addRig({
      name: 'parallel',
      repo: repo.origin,
      reviewer: agentScript('reviewer-wait'),
      env: { TEST_DIR: testDir },
    });
    const a = await t.town.sling('parallel', { id: 'pa', title: 'First' });
    const b = await t.town.sling('parallel', { id: 'pb', title: 'Second' });
    // Both reviewers are running at once, and neither holds the refinery.
    await eventually(() => lines(join(testDir, 'review-starts')).length === 2, 60_000, 'both reviews running');
    expect(lines(join(testDir, 'review-starts')).sort()).toEqual(['pa/r1/review1', 'pb/r1/review1']);
    const queue = await refineryState(t, 'parallel');
    expect(queue.section).toBeUndefined();
    expect(queue.queue).toEqual([]);

    const mr = t.client.workflow.getHandle('mr:pa:1');
    const before = await eventually(async () => {
      const s = await mr.query(mergeRequestStateQuery);
      return s.waitingFor === 'waiting for the verdict of reviewer run pa/r1/review1' ? s : undefined;
    });
    // Through Temporal: a reviewer run that is not the current one is refused by the validator.
    const err = await mr
      .executeUpdate(reviewVerdictUpdate, { args: [{ runId: 'pa/r1/review2', verdict: 'approve' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
    expect(String((err as WorkflowUpdateFailedError).cause?.message)).toMatch(
      /pa\/r1\/review2 is not the current reviewer of mr:pa:1: the current reviewer run is pa\/r1\/review1/,
    );
    // Through the gateway with a validly signed token of another run: 409, and nothing changes.
    const token = mintRunToken(gatewaySecret(t.gtHome), {
      beadId: 'pa',
      runId: 'pa/r1/review3',
      role: 'reviewer',
      workflowId: 'mr:pa:1',
      exp: Date.now() + 60_000,
    });
    const res = await fetch(`${t.worker.gateway.url}/v1/review`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ verdict: 'request_changes', feedback: 'forged' }),
    });
    expect(res.status).toBe(409);
    expect(await mr.query(mergeRequestStateQuery)).toEqual(before);

    writeFileSync(join(testDir, 'release'), '');
    const [ra, rb] = await Promise.all([a.handle.result(), b.handle.result()]);
    expect([ra.status, rb.status]).toEqual(['closed', 'closed']);
    expect((await t.town.beadState('pa')).rounds).toHaveLength(1);
  });

  it('cancelled mid-review: the reviewer agent is gone when gt bead cancel returns', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-review-'));
    await t.addRig({
      name: 'revcancel',
      repo: repo.origin,
      reviewer: agentScript('reviewer-wait'),
      env: { TEST_DIR: testDir },
    });
    await t.town.sling('revcancel', { id: 'rc', title: 'Cancelled in review' });
    const mr = t.client.workflow.getHandle('mr:rc:1');
    await eventually(
      async () =>
        (await mr.query(mergeRequestStateQuery)).waitingFor === 'waiting for the verdict of reviewer run rc/r1/review1',
      60_000,
      'the review running',
    );
    const pid = Number(readFileSync(join(t.gtHome, 'runs', fsSafe('rc/r1/review1'), 'pid'), 'utf8'));
    expect(processExists(pid)).toBe(true);

    const r = await runGt(['bead', 'cancel', 'rc', '--reason', 'not needed any more'], t.cliEnv());
    expect(r.code, r.stderr).toBe(0);
    // The bead waits for its merge request, which waits for its reviewer's supervision to stop the agent.
    expect(processExists(pid), `reviewer process ${pid}`).toBe(false);
    expect((await t.town.beadState('rc')).status).toBe('cancelled');
    const history = (await mr.fetchHistory()).events!;
    expect(history.at(-1)?.workflowExecutionCanceledEventAttributes).toBeTruthy();
    expect((await mr.query(mergeRequestStateQuery)).reviewRuns).toEqual([
      { runId: 'rc/r1/review1', outcome: 'cancelled' },
    ]);
  });
});
