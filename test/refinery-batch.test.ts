/**
 * Issue 4 acceptance, batching: 8 MRs with one bad → the culprit isolated by bisection, 7 merged, gate runs counted.
 * Issue 13, adaptive batches: the failed batch halves the next one, which lands and doubles the limit back.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import {
  firstParentHistory,
  gateRecords,
  landedInOrder,
  pauseRefinery,
  recordingGate,
  recordTargetMoves,
  refineryState,
  startQueuedMergeRequest,
  targetTreesHeld,
  waitForQueue,
} from './helpers/refinery';
import { runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('batching with bisection', () => {
  it('gates eight MRs as one candidate, bisects to the one bad MR, and merges the other seven', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    await recordTargetMoves(repo.origin);
    const dir = mkdtempSync(join(tmpdir(), 'gt-gates-'));
    const rig = await t.addRig({ name: 'batched', repo: repo.origin, batchSize: 8, gates: [recordingGate(dir)] });
    await pauseRefinery(t, 'batched', true);
    const beads = ['b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8'];
    const handles = [];
    for (const b of beads) {
      const files: Record<string, string> = { [`work/${b}.txt`]: `${b}\n` };
      if (b === 'b5') files['work/BROKEN'] = 'this breaks the build\n';
      handles.push(await startQueuedMergeRequest(t, rig, { beadId: b, files }));
    }
    await waitForQueue(t, 'batched', 8);
    await pauseRefinery(t, 'batched', false);
    const outcomes = await Promise.all(handles.map((h) => h.result()));

    expect(outcomes.map((o) => o.kind)).toEqual([
      'merged',
      'merged',
      'merged',
      'merged',
      'gates_failed',
      'merged',
      'merged',
      'merged',
    ]);
    const culprit = outcomes[4]!;
    expect(culprit.kind === 'gates_failed' && culprit.feedback).toMatch(/gate saw tree [0-9a-f]+: fail/);

    // One full run, then ⌈log₂ 8⌉ = 3 halvings at most, then the rest: never one run per MR.
    const runs = gateRecords(dir);
    const state = await refineryState(t, 'batched');
    expect(state.gateRuns).toBe(runs.length);
    expect(runs.length).toBeLessThanOrEqual(5);
    expect(runs[0]).toMatchObject({ result: 'fail', mrIds: beads.map((b) => `mr:${b}:1`) });
    expect(state).toMatchObject({ merged: 7, rejected: 1, batchSize: 8 });

    // The target only ever moved to gated trees (one move per passing probe), and holds the seven good MRs in queue order.
    const passed = runs.filter((r) => r.result === 'pass').map((r) => r.tree);
    expect((await targetTreesHeld(repo.origin)).reverse()).toEqual(passed);
    expect(await landedInOrder(repo.origin)).toEqual(beads.filter((b) => b !== 'b5').map((b) => `mr:${b}:1`));
    // Each landed probe is one merge commit (the target and its MRs' heads as parents): the first-parent history holds
    // only gated trees, as one MR at a time does — here b1–b4, then b6–b8.
    const firstParents = await firstParentHistory(repo.origin, base);
    expect(firstParents.map((c) => c.parents.length)).toEqual([5, 4]);
    expect(firstParents.map((c) => c.tree)).toEqual(passed);
    expect(await repo.show('work/BROKEN')).toBeNull();
    expect(existsSync(join(dir, 'overlap'))).toBe(false);

    // The failed batch halved the limit: six good MRs waiting together are taken four at a time, and the landed
    // batch of four doubles it back to eight for the two left.
    expect(state.batchLimit).toBe(4);
    const shown = await runGt(['mq', 'batched'], t.cliEnv());
    expect(shown, shown.stderr).toMatchObject({ code: 0 });
    expect(shown.stdout).toContain('(batches of up to 4 for now, 8 at most)');
    await pauseRefinery(t, 'batched', true);
    const more = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
    const second = [];
    for (const b of more)
      second.push(await startQueuedMergeRequest(t, rig, { beadId: b, files: { [`work/${b}.txt`]: `${b}\n` } }));
    await waitForQueue(t, 'batched', more.length);
    await pauseRefinery(t, 'batched', false);
    expect((await Promise.all(second.map((h) => h.result()))).map((o) => o.kind)).toEqual(Array(6).fill('merged'));
    const secondRuns = gateRecords(dir).slice(runs.length);
    expect(secondRuns.map((r) => [r.result, r.mrIds])).toEqual([
      ['pass', more.slice(0, 4).map((b) => `mr:${b}:1`)],
      ['pass', more.slice(4).map((b) => `mr:${b}:1`)],
    ]);
    expect(await refineryState(t, 'batched')).toMatchObject({ merged: 13, rejected: 1, batchSize: 8, batchLimit: 8 });
    const allPassed = gateRecords(dir)
      .filter((r) => r.result === 'pass')
      .map((r) => r.tree);
    expect((await targetTreesHeld(repo.origin)).reverse()).toEqual(allPassed);
    expect((await firstParentHistory(repo.origin, base)).map((c) => c.tree)).toEqual(allPassed);
    expect((await landedInOrder(repo.origin)).slice(7)).toEqual(more.map((b) => `mr:${b}:1`));
  });
});
