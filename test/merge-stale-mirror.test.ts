/**
 * The serial merge section fetches only when the mirror lacks the target or a head (activities/merge.ts): on a rig
 * with many branches the fetch was its slowest git step. What a skipped fetch can leave stale is the target, so the
 * bors rule must still hold when someone else moved it: the compare-and-swap push loses its lease, the section fetches
 * and builds again on the new target, and the target only ever holds a tree that was gated exactly. And an MR is never
 * sent back on what a stale mirror says. Real git, real gates through the process runtime, the activity run alone.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createMergeActivities } from '../activities/merge';
import { ProcessRuntime } from '../agents/process-runtime';
import type { CandidateResult, MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { createRepo } from './helpers/repo';
import {
  firstRoundTicket,
  gateRecords,
  pushBranch,
  recordingGate,
  recordTargetMoves,
  targetTreesHeld,
} from './helpers/refinery';
import { repoRoot } from './helpers/town';

async function rigWithMirror() {
  const repo = await createRepo();
  await recordTargetMoves(repo.origin);
  const gates = mkdtempSync(join(tmpdir(), 'gt-stale-gates-'));
  const rig = RigConfig.parse({ name: 'stale', repo: repo.origin, agent: 'true', gates: [recordingGate(gates)] });
  const { mergeCandidate } = createMergeActivities({
    gtHome: mkdtempSync(join(tmpdir(), 'gt-stale-home-')),
    gtBinDir: join(repoRoot, 'bin'),
    runtimes: { process: new ProcessRuntime() },
  });
  const merge = (t: MergeTicket): Promise<CandidateResult> =>
    new MockActivityEnvironment().run(mergeCandidate, { rig, tickets: [t] });
  return { repo, gates, ticket: firstRoundTicket, merge };
}

describe('a merge on a mirror that did not fetch', () => {
  it('builds again on a target someone else moved, and lands only a tree it gated', async () => {
    const { repo, gates, ticket, merge } = await rigWithMirror();
    // Both branches are pushed before the first merge, whose fetch brings them (and main) into the mirror.
    const a = ticket('a', (await pushBranch(repo.origin, 'gt/a', { 'work/a.txt': 'a\n' })).trim());
    const b = ticket('b', (await pushBranch(repo.origin, 'gt/b', { 'work/b.txt': 'b\n' })).trim());
    expect(await merge(a)).toMatchObject({ kind: 'merged', gateRuns: 1 });

    // Someone else moves the target: the mirror has b's head and a main, so the next merge does not fetch.
    const outside = await repo.commitDirect('outside.txt', 'outside\n', 'someone else');
    const merged = await merge(b);
    expect(merged).toMatchObject({ kind: 'merged', alreadyMerged: false });
    // Built on the stale target first (its push lost the lease), then on the new one: gated twice.
    expect(merged.gateRuns).toBe(2);
    const tip = await repo.sha();
    expect(merged.kind === 'merged' && merged.commit).toBe(tip);
    expect(await repo.show('outside.txt')).toBe('outside\n');
    expect(await repo.show('work/a.txt')).toBe('a\n');
    expect(await repo.show('work/b.txt')).toBe('b\n');
    expect((await repo.log()).some((c) => c.sha === outside)).toBe(true);
    // The target held (newest first, since the reflog was switched on): b's merge, the outside commit, a's merge.
    // Both merges' trees were gated and passed; the tree built on the stale target was gated too but never landed.
    const held = await targetTreesHeld(repo.origin);
    expect(held).toHaveLength(3);
    const runs = gateRecords(gates);
    const passed = new Set(runs.filter((g) => g.result === 'pass').map((g) => g.tree));
    expect(passed.has(held[0]!) && passed.has(held[2]!)).toBe(true);
    expect(runs.map((g) => g.mrIds.join(' '))).toEqual(['mr:a:1', 'mr:b:1', 'mr:b:1']);
    expect(runs[1]!.tree).not.toBe(held[0]);
  });

  it('looks at the repository again before sending an MR back on what the mirror says', async () => {
    const { repo, ticket, merge } = await rigWithMirror();
    const head = (await pushBranch(repo.origin, 'gt/c', { 'work/c.txt': 'c\n' })).trim();
    const seed = await repo.sha();
    expect(await merge(ticket('c', head))).toMatchObject({ kind: 'merged' });
    // Someone rewinds main to before c's merge. On the mirror's (stale) main, c's head is already there: "no
    // changes". On the real one it is not, so its next round must merge, not be sent back.
    const work = mkdtempSync(join(tmpdir(), 'gt-stale-work-'));
    execFileSync('git', ['clone', '-q', repo.origin, '.'], { cwd: work });
    execFileSync('git', ['push', '-q', '--force', 'origin', `${seed}:refs/heads/main`], { cwd: work });
    const again = { ...ticket('c', head), mrId: 'mr:c:2', round: 2 };
    const result = await merge(again);
    expect(result).toMatchObject({ kind: 'merged', alreadyMerged: false, gateRuns: 1 });
    expect(await repo.show('work/c.txt')).toBe('c\n');
    // Built on the rewound main: the merge's first parent. (Not the log's second entry: the log orders by commit time,
    // and c's commit and the seed were made in the same second.)
    expect(execFileSync('git', ['rev-parse', 'main^1'], { cwd: repo.origin, encoding: 'utf8' }).trim()).toBe(seed);
  });

  it('sends back, after one fetch, an MR whose head the repository lacks or its target already holds', async () => {
    const { repo, gates, ticket, merge } = await rigWithMirror();
    const head = (await pushBranch(repo.origin, 'gt/d', { 'work/d.txt': 'd\n' })).trim();
    expect(await merge(ticket('d', head))).toMatchObject({ kind: 'merged', gateRuns: 1 });
    expect(await merge({ ...ticket('d', head), mrId: 'mr:d:2', round: 2 })).toMatchObject({
      kind: 'excluded',
      outcome: { kind: 'rejected', feedback: 'branch gt/d has no changes that are not already on main' },
    });
    const never = 'f'.repeat(40);
    expect(await merge(ticket('e', never))).toMatchObject({
      kind: 'excluded',
      outcome: {
        kind: 'rejected',
        feedback: `commit ${never} of gt/e is not in the repository (was the branch pushed?)`,
      },
    });
    expect(gateRecords(gates)).toHaveLength(1);
  });
});
