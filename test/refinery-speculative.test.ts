/**
 * Issue 13 acceptance, speculative execution (Zuul-style): real dev server, real repositories, real gate processes.
 * With `speculation: 3`, MR k is gated on the target + MR 1..k−1 while those are still being gated; one bad MR in
 * the middle of the queue is sent back with its gate's output, what stood behind it is rebuilt without it, the
 * others merge in queue order, and the target only ever holds trees whose gates passed.
 */
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_BATCH_SIZE, RigConfig } from '../domain/rig';
import { paths } from '../host/home';
import { createRepo } from './helpers/repo';
import {
  firstParentHistory,
  git,
  gateRecords,
  pauseRefinery,
  recordTargetMoves,
  refineryState,
  startQueuedMergeRequest,
  targetTreesHeld,
  trailersOf,
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

/**
 * A gate that marks its start and end in `marks.log` (`start <n>` / `end <n>`, appended by the gate itself), records
 * `<tree> <pass|fail> <mr ids>` like recordingGate, and fails on a tree holding a file named BROKEN. Before finishing,
 * the first gate waits (bounded) until a second one has started: with speculation that happens at once, without it
 * never, so the overlap the test reads from the marks cannot come from luck in timing.
 */
function markingGate(dir: string): string {
  const script = join(dir, 'gate.sh');
  writeFileSync(
    script,
    `#!/bin/sh
set -u
n=$$
echo "start $n" >> "${dir}/marks.log"
tree=$(git rev-parse HEAD^{tree})
i=0
while [ "$(grep -c '^start' "${dir}/marks.log")" -lt 2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.3
if find . -name BROKEN -not -path './.git/*' | grep -q .; then result=fail; else result=pass; fi
echo "$tree $result $GT_MR_IDS" >> "${dir}/gates.log"
echo "end $n" >> "${dir}/marks.log"
echo "gate saw tree $tree: $result"
[ "$result" = pass ]
`,
  );
  chmodSync(script, 0o755);
  return script;
}

/** Most gate runs that were between their start and end marks at once, read from the marks' order alone. */
function maxConcurrentGates(dir: string): number {
  let now = 0;
  let most = 0;
  for (const line of readFileSync(join(dir, 'marks.log'), 'utf8').split('\n').filter(Boolean)) {
    now += line.startsWith('start') ? 1 : -1;
    most = Math.max(most, now);
  }
  return most;
}

describe('speculative merge queue', () => {
  it('gates MRs concurrently on stacked candidates, evicts the bad one, rebuilds behind it and lands in order', async () => {
    const repo = await createRepo();
    await recordTargetMoves(repo.origin);
    const base = await repo.sha();
    const dir = mkdtempSync(join(tmpdir(), 'gt-spec-gates-'));
    const rig = await t.addRig({ name: 'spec', repo: repo.origin, speculation: 3, gates: [markingGate(dir)] });
    await pauseRefinery(t, 'spec', true);
    const beads = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'];
    const handles = [];
    for (const b of beads) {
      const files: Record<string, string> = { [`work/${b}.txt`]: `${b}\n` };
      if (b === 'p4') files['work/BROKEN'] = 'this breaks the build\n';
      handles.push(await startQueuedMergeRequest(t, rig, { beadId: b, files }));
    }
    await waitForQueue(t, 'spec', beads.length);
    await pauseRefinery(t, 'spec', false);
    const outcomes = await Promise.all(handles.map((h) => h.result()));

    expect(outcomes.map((o) => o.kind)).toEqual([
      'merged',
      'merged',
      'merged',
      'gates_failed',
      'merged',
      'merged',
      'merged',
    ]);
    // Sent back with the gate's own output, as without speculation.
    const bad = outcomes[3]!;
    expect(bad.kind === 'gates_failed' && bad.feedback).toMatch(/gate saw tree [0-9a-f]+: fail/);

    // The others merged in queue order, each exactly once.
    const good = beads.filter((b) => b !== 'p4').map((b) => `mr:${b}:1`);
    expect((await trailersOf(repo.origin)).reverse().map((tr) => tr.split('@')[0])).toEqual(good);
    expect(await repo.show('work/BROKEN')).toBeNull();

    // Every tree the target held (reflog) and every commit of its first-parent history passed its gates.
    const runs = gateRecords(dir);
    const passed = new Set(runs.filter((r) => r.result === 'pass').map((r) => r.tree));
    // (The initial commit, if the reflog has it, was there before the refinery.)
    const initialTree = await git(repo.origin, ['rev-parse', `${base}^{tree}`]);
    const held = (await targetTreesHeld(repo.origin)).filter((tree) => tree !== initialTree);
    expect(held.length).toBeGreaterThan(0);
    expect(held.every((tree) => passed.has(tree))).toBe(true);
    const history = await firstParentHistory(repo.origin, base);
    expect(history).toHaveLength(good.length);
    expect(history.every((c) => c.parents.length === 2 && passed.has(c.tree))).toBe(true);

    // The candidate of p4 failed on the target + the MRs ahead of it, every failing run held p4 (the ones behind it
    // gated while it was in the window), and nothing that passed held it.
    const failedRuns = runs.filter((r) => r.result === 'fail');
    expect(failedRuns.some((r) => r.mrIds.at(-1) === 'mr:p4:1')).toBe(true);
    expect(failedRuns.every((r) => r.mrIds.includes('mr:p4:1'))).toBe(true);
    expect(runs.filter((r) => r.result === 'pass').every((r) => !r.mrIds.includes('mr:p4:1'))).toBe(true);
    // The MRs behind p4 were gated without it on a stack that ends with themselves.
    for (const b of ['p5', 'p6', 'p7'])
      expect(runs.some((r) => r.result === 'pass' && r.mrIds.at(-1) === `mr:${b}:1`)).toBe(true);

    // Gates overlapped: more than one gate run between its start and end marks at once, never more than 3.
    const most = maxConcurrentGates(dir);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(3);

    const state = await refineryState(t, 'spec');
    expect(state).toMatchObject({ merged: 6, rejected: 1, speculation: 3, queue: [] });
    expect(state.section).toBeUndefined();
    expect(state.gateRuns).toBeGreaterThanOrEqual(runs.length);
    // No candidate left a branch in the mirror (their trees are detached): one per candidate would pile up.
    const mirror = paths.mirror('spec', t.gtHome);
    expect(await git(mirror, ['for-each-ref', '--format=%(refname)', 'refs/heads/gt-candidate/'])).toBe('');
    // The landed MRs' branches are deleted from the repository (activities/merged-branches.ts); the one sent back keeps
    // its own, on which its bead would rework.
    const branches = () => git(repo.origin, ['for-each-ref', '--format=%(refname:short)', 'refs/heads/gt/']);
    await expect.poll(branches, { timeout: 20_000 }).toBe('gt/p4');
  });

  it('rebuilds the window on the new target when someone else moves it, and lands only re-gated trees', async () => {
    const repo = await createRepo();
    await recordTargetMoves(repo.origin);
    const dir = mkdtempSync(join(tmpdir(), 'gt-spec-move-'));
    const script = join(dir, 'gate.sh');
    // The first gate run of m1 pushes an outside commit to the target before it passes, so before anything can land:
    // every chain built on the old target is stale.
    writeFileSync(
      script,
      `#!/bin/sh
set -u
tree=$(git rev-parse HEAD^{tree})
if [ "$GT_MR_ID" = "mr:m1:1" ] && mkdir "${dir}/moved" 2>/dev/null; then
  tmp=$(mktemp -d) && git clone -q "${repo.origin}" "$tmp" && (cd "$tmp" && echo external > external.txt && git add external.txt && git -c user.name=Someone -c user.email=s@test commit -q -m "external change" && git push -q origin HEAD:main)
fi
echo "$tree pass $GT_MR_IDS" >> "${dir}/gates.log"
`,
    );
    chmodSync(script, 0o755);
    const initial = await repo.sha();
    const rig = await t.addRig({ name: 'spec-moved', repo: repo.origin, speculation: 2, gates: [script] });
    await pauseRefinery(t, 'spec-moved', true);
    const handles = [];
    for (const b of ['m1', 'm2'])
      handles.push(await startQueuedMergeRequest(t, rig, { beadId: b, files: { [`work/${b}.txt`]: `${b}\n` } }));
    await waitForQueue(t, 'spec-moved', 2);
    await pauseRefinery(t, 'spec-moved', false);
    expect((await Promise.all(handles.map((h) => h.result()))).map((o) => o.kind)).toEqual(['merged', 'merged']);
    expect(await repo.show('external.txt')).toBe('external\n');
    const passed = new Set(gateRecords(dir).map((r) => r.tree));
    // Every tree the target held but the initial one and the outside commit's was gated, and some were.
    const notOurs = new Set([
      await git(repo.origin, ['rev-parse', `${initial}^{tree}`]),
      await git(repo.origin, ['log', '-1', '--format=%T', '--grep=external change', 'main']),
    ]);
    const ours = (await targetTreesHeld(repo.origin)).filter((tree) => !notOurs.has(tree));
    expect(ours.length).toBeGreaterThan(0);
    expect(ours.every((tree) => passed.has(tree))).toBe(true);
    expect((await trailersOf(repo.origin)).reverse().map((tr) => tr.split('@')[0])).toEqual(['mr:m1:1', 'mr:m2:1']);
  });

  it('validates speculation in the rig config and through `gt rig add|update`', async () => {
    expect(RigConfig.parse({ name: 'x', repo: '/r', agent: 'a' }).speculation).toBe(1);
    expect(RigConfig.safeParse({ name: 'x', repo: '/r', agent: 'a', speculation: 0 }).success).toBe(false);
    expect(RigConfig.safeParse({ name: 'x', repo: '/r', agent: 'a', speculation: 17 }).success).toBe(false);
    expect(RigConfig.safeParse({ name: 'x', repo: '/r', agent: 'a', speculation: 4, batchSize: 8 }).success).toBe(
      false,
    );

    const repo = await createRepo();
    const added = await runGt(
      ['rig', 'add', 'spec-cli', '--repo', repo.origin, '--speculation', '4', '--json'],
      t.cliEnv(),
    );
    expect(added.code, added.stderr).toBe(0);
    // A speculative rig does not batch unless told to (the default batch size is for rigs that do not speculate).
    expect(JSON.parse(added.stdout)).toMatchObject({ speculation: 4, batchSize: 1 });
    const both = await runGt(['rig', 'update', 'spec-cli', '--batch-size', '4'], t.cliEnv());
    expect(both.code).not.toBe(0);
    expect(both.stderr).toMatch(/batch.*speculat|speculat.*batch/i);
    const off = await runGt(['rig', 'update', 'spec-cli', '--speculation', '1', '--json'], t.cliEnv());
    expect(off.code, off.stderr).toBe(0);
    expect(JSON.parse(off.stdout)).toMatchObject({ speculation: 1 });
    expect((await refineryState(t, 'spec-cli')).speculation).toBe(1);

    // A rig added with the defaults batches; turning speculation on turns its batches off.
    const plain = await runGt(['rig', 'add', 'spec-later', '--repo', repo.origin, '--json'], t.cliEnv());
    expect(plain.code, plain.stderr).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ speculation: 1, batchSize: DEFAULT_BATCH_SIZE });
    const on = await runGt(['rig', 'update', 'spec-later', '--speculation', '3', '--json'], t.cliEnv());
    expect(on.code, on.stderr).toBe(0);
    expect(JSON.parse(on.stdout)).toMatchObject({ speculation: 3, batchSize: 1 });
  });
});
