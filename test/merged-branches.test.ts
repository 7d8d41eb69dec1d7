/**
 * A merged request's branch is deleted from the rig's repository, in batches, after the merge (activities/
 * merged-branches.ts): only at the head that merged, never a pull request's, and a failed deletion costs the merge
 * nothing. Real git, real gates through the process runtime, the merge activity run alone.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createMergeActivities } from '../activities/merge';
import { MergedBranchSweeper, type SweepResult } from '../activities/merged-branches';
import { ProcessRuntime } from '../agents/process-runtime';
import type { CandidateResult, MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { createRepo } from './helpers/repo';
import { firstRoundTicket, git, pushBranch } from './helpers/refinery';
import { repoRoot } from './helpers/town';

async function rigWithSweeper(options: { batch?: number; quietMs?: number } = {}) {
  const repo = await createRepo();
  const gtHome = mkdtempSync(join(tmpdir(), 'gt-swept-home-'));
  const rig = RigConfig.parse({
    name: 'swept',
    repo: repo.origin,
    agent: 'true',
    gates: ['test -f README.md'],
  });
  const swept: SweepResult[] = [];
  const sweeper = new MergedBranchSweeper({
    gtHome,
    batch: options.batch ?? 16,
    quietMs: options.quietMs ?? 60_000,
    onSwept: (_, result) => swept.push(result),
  });
  const { mergeCandidate } = createMergeActivities({
    gtHome,
    gtBinDir: join(repoRoot, 'bin'),
    runtimes: { process: new ProcessRuntime() },
    mergedBranches: sweeper,
  });
  const push = async (beadId: string) =>
    firstRoundTicket(beadId, await pushBranch(repo.origin, `gt/${beadId}`, { [`work/${beadId}.txt`]: `${beadId}\n` }));
  const merge = (tickets: MergeTicket[], mode: 'merge' | 'verify' = 'merge'): Promise<CandidateResult> =>
    new MockActivityEnvironment().run(mergeCandidate, { rig, tickets, mode });
  const branches = async () =>
    (await git(repo.origin, ['for-each-ref', '--format=%(refname:short)', 'refs/heads/'])).split('\n').sort();
  return { repo, rig, sweeper, swept, push, merge, branches };
}

describe('merged branches', () => {
  it('are deleted in one push once a batch has merged, and the merges stand', async () => {
    const { repo, swept, push, merge, branches } = await rigWithSweeper({ batch: 3 });
    const [a, b, c] = [await push('a'), await push('b'), await push('c')];
    expect(await merge([a])).toMatchObject({ kind: 'merged' });
    expect(await merge([b, c])).toMatchObject({ kind: 'merged' });
    await expect.poll(() => swept.length).toBe(1);
    expect(swept[0]).toEqual({ deleted: ['gt/a', 'gt/b', 'gt/c'], kept: [] });
    expect(await branches()).toEqual(['main']);
    for (const id of ['a', 'b', 'c']) expect(await repo.show(`work/${id}.txt`)).toBe(`${id}\n`);
  });

  it('are deleted once the rig has merged nothing for a while', async () => {
    const { swept, push, merge, branches } = await rigWithSweeper({ quietMs: 100 });
    const a = await push('a');
    await merge([a]);
    await expect.poll(() => swept.length, { timeout: 5_000 }).toBe(1);
    expect(swept[0]).toEqual({ deleted: ['gt/a'], kept: [] });
    expect(await branches()).toEqual(['main']);
  });

  it('keep a branch pushed again since its merge, and one already gone does not stop the others', async () => {
    const { repo, sweeper, swept, push, merge, branches } = await rigWithSweeper();
    const [a, b, c] = [await push('a'), await push('b'), await push('c')];
    await merge([a, b, c]);
    // After the merge: a is pushed again (a bead reopened), b deleted by someone else.
    const again = await pushBranch(repo.origin, 'gt/a', { 'work/a2.txt': 'again\n' });
    await git(repo.origin, ['update-ref', '-d', 'refs/heads/gt/b']);
    await sweeper.flush();
    expect(swept).toEqual([{ deleted: ['gt/c'], kept: ['gt/a', 'gt/b'] }]);
    expect(await branches()).toEqual(['gt/a', 'main']);
    expect(await git(repo.origin, ['rev-parse', 'refs/heads/gt/a'])).toBe(again);
  });

  it("are not a pull request's to delete: a verification queues nothing", async () => {
    const { sweeper, swept, push, merge, branches } = await rigWithSweeper();
    const a = await push('a');
    expect(await merge([a], 'verify')).toMatchObject({ kind: 'verified' });
    await sweeper.flush();
    expect(swept).toEqual([]);
    expect(await branches()).toEqual(['gt/a', 'main']);
  });

  it('that cannot be deleted leave the merge as it was and say why', async () => {
    const { rig, sweeper, swept, push, merge } = await rigWithSweeper();
    const a = await push('a');
    expect(await merge([a])).toMatchObject({ kind: 'merged' });
    // The repository is gone by the time of the sweep: the push fails for all of them.
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      sweeper.merged({ ...rig, repo: join(tmpdir(), 'gt-no-such-repository.git') }, [
        { branch: 'gt/x', headSha: a.headSha },
      ]);
      await sweeper.flush();
      await expect.poll(() => warnings.some((w) => w.includes('could not delete merged branches'))).toBe(true);
    } finally {
      process.off('warning', onWarning);
    }
    expect(swept).toEqual([]);
  });
});
