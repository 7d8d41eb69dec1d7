/**
 * Issue 4 acceptance, the queue and the bors rule: real dev server, real repositories, real gate processes.
 * Ten MRs at once merge strictly one at a time, in queue order, each on a gated tree; the target moving during
 * gating means rebuild and re-test; the queue survives continue-as-new.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../domain/ids';
import { RigConfig } from '../domain/rig';
import { refineryStart } from '../domain/starts';
import type { refineryWorkflow } from '../workflows/refinery';
import { createRepo } from './helpers/repo';
import {
  firstParentHistory,
  gateRecords,
  pauseRefinery,
  recordingGate,
  refineryState,
  startMergeRequest,
  startQueuedMergeRequest,
  trailersOf,
  waitForQueue,
} from './helpers/refinery';
import { eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('the merge queue', () => {
  it('merges ten MRs strictly one at a time, in queue order, each onto a tree whose gates passed', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    const dir = mkdtempSync(join(tmpdir(), 'gt-gates-'));
    const rig = await t.addRig({ name: 'serial', repo: repo.origin, batchSize: 1, gates: [recordingGate(dir)] });
    await pauseRefinery(t, 'serial', true);

    const priorities = [2, 4, 1, 2, 0, 3, 2, 1, 4, 2];
    const handles = [];
    for (const [i, priority] of priorities.entries()) {
      handles.push(
        await startQueuedMergeRequest(t, rig, { beadId: `s${i}`, priority, files: { [`work/s${i}.txt`]: `s${i}\n` } }),
      );
    }
    await waitForQueue(t, 'serial', 10);
    const shown = await runGt(['mq', 'serial', '--json'], t.cliEnv());
    expect(shown.code).toBe(0);
    const queued = (JSON.parse(shown.stdout) as { queue: { mrId: string; priority: number }[] }).queue;
    // Priority first, then age (each MR was queued before the next started).
    const expected = priorities
      .map((p, i) => ({ p, i }))
      .sort((a, b) => a.p - b.p || a.i - b.i)
      .map(({ i }) => `mr:s${i}:1`);
    expect(queued.map((q) => q.mrId)).toEqual(expected);

    await pauseRefinery(t, 'serial', false);
    const outcomes = await Promise.all(handles.map((h) => h.result()));
    expect(outcomes.map((o) => o.kind)).toEqual(Array(10).fill('merged'));

    const history = await firstParentHistory(repo.origin, base);
    // The rig merges with merge commits: a linear first-parent chain of exactly ten merges, in queue order.
    expect(history).toHaveLength(10);
    expect(history.every((c) => c.parents.length === 2)).toBe(true);
    const order = await trailersOf(repo.origin);
    expect(order.reverse().map((tr) => tr.split('@')[0])).toEqual(expected);
    // Every tree the target ever held was gated and passed; no two gate runs overlapped.
    const passed = new Set(
      gateRecords(dir)
        .filter((g) => g.result === 'pass')
        .map((g) => g.tree),
    );
    expect(history.every((c) => passed.has(c.tree))).toBe(true);
    expect(gateRecords(dir)).toHaveLength(10);
    expect(existsSync(join(dir, 'overlap'))).toBe(false);
    const state = await refineryState(t, 'serial');
    expect(state).toMatchObject({ merged: 10, rejected: 0, gateRuns: 10, queue: [] });
    expect(state.section).toBeUndefined();
  });

  it('rebuilds and re-tests when the target moves while the gates run, and swaps only the re-tested tree', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    const dir = mkdtempSync(join(tmpdir(), 'gt-gates-'));
    const rig = await t.addRig({
      name: 'moving',
      repo: repo.origin,
      gates: [recordingGate(dir, { moveTargetOnce: repo.origin })],
    });
    const outcome = await (
      await startMergeRequest(t, rig, { beadId: 'mv', files: { 'work/mv.txt': 'mv\n' } })
    ).result();
    expect(outcome.kind).toBe('merged');

    const runs = gateRecords(dir);
    expect(runs).toHaveLength(2);
    expect(runs[0]!.tree).not.toBe(runs[1]!.tree);
    const history = await firstParentHistory(repo.origin, base);
    expect(history.map((c) => c.parents.length)).toEqual([1, 2]);
    expect(await repo.show('external.txt')).toBe('external\n');
    // The target's tip is exactly the tree of the second gate run, which contains the external change.
    expect(history[1]!.tree).toBe(runs[1]!.tree);
    expect(outcome.kind === 'merged' && outcome.commit).toBe(history[1]!.sha);
  });

  it('keeps history linear with the squash strategy', async () => {
    const repo = await createRepo();
    const base = await repo.sha();
    const rig = await t.addRig({ name: 'squashed', repo: repo.origin, mergeStrategy: 'squash' });
    const handles = await Promise.all(
      ['q1', 'q2', 'q3'].map((b) => startMergeRequest(t, rig, { beadId: b, files: { [`work/${b}.txt`]: `${b}\n` } })),
    );
    expect((await Promise.all(handles.map((h) => h.result()))).map((o) => o.kind)).toEqual([
      'merged',
      'merged',
      'merged',
    ]);
    const history = await firstParentHistory(repo.origin, base);
    expect(history).toHaveLength(3);
    expect(history.every((c) => c.parents.length === 1)).toBe(true);
  });

  it('takes back the ticket of a cancelled merge request, so nobody merges work that was called off', async () => {
    const repo = await createRepo();
    const before = await repo.sha();
    const rig = await t.addRig({ name: 'withdrawn', repo: repo.origin });
    await pauseRefinery(t, 'withdrawn', true);
    const mr = await startMergeRequest(t, rig, { beadId: 'gone', files: { 'work/gone.txt': 'gone\n' } });
    await waitForQueue(t, 'withdrawn', 1);
    await mr.cancel();
    await waitForQueue(t, 'withdrawn', 0);
    await pauseRefinery(t, 'withdrawn', false);
    await expect(mr.result()).rejects.toThrow(/cancel/i);
    expect(await refineryState(t, 'withdrawn')).toMatchObject({ merged: 0, queue: [] });
    expect(await repo.sha()).toBe(before);
  });

  it('continues as new with its queue: nothing waiting is lost', async () => {
    const repo = await createRepo();
    const rigConfig = RigConfig.parse({
      name: 'rolling',
      repo: repo.origin,
      agent: 'true',
      batchSize: 1,
      policy: { heartbeatTimeout: 10_000 },
    });
    const workflowId = refineryWorkflowId('rolling');
    const start = refineryStart({
      taskQueue: t.taskQueue,
      input: { rig: rigConfig, continueAsNewEvery: 2, paused: true },
    });
    await t.client.workflow.start<typeof refineryWorkflow>(start.workflowType, start.options);
    const firstRun = (await t.client.workflow.getHandle(workflowId).describe()).runId;
    const handles = [];
    for (const b of ['r1', 'r2', 'r3', 'r4', 'r5'])
      handles.push(await startMergeRequest(t, rigConfig, { beadId: b, files: { [`work/${b}.txt`]: `${b}\n` } }));
    await waitForQueue(t, 'rolling', 5);
    await pauseRefinery(t, 'rolling', false);
    expect((await Promise.all(handles.map((h) => h.result()))).map((o) => o.kind)).toEqual(Array(5).fill('merged'));
    const state = await eventually(async () => {
      const s = await refineryState(t, 'rolling');
      return s.merged === 5 ? s : undefined;
    });
    expect(state.recent.map((r) => r.mrId)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5'].map((b) => `mr:${b}:1`));
    const runs = [];
    for await (const wf of t.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push(wf.runId);
    expect(runs.length).toBeGreaterThanOrEqual(3);
    const now = await t.client.workflow.getHandle(workflowId).describe();
    expect(now.runId).not.toBe(firstRun);
    // The configuration its start wrote to the memo is carried to the new runs (read by currentRigConfig).
    expect(now.memo?.config).toEqual(rigConfig);
    expect((await trailersOf(repo.origin)).length).toBe(5);
  });
});
