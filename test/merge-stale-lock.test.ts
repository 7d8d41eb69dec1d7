/**
 * A host that dies mid-push into a rig's local repository leaves the lock its git held on the target (the receive-pack
 * it ran there, killed with it: the chaos soak's kill-host did this once). git never removes such a lock, and every
 * later push of the target failed on it: each merge request was sent back as if its change were at fault, until its
 * bead ran out of rounds. The refinery now retries a push that failed on a lock, and a lock older than
 * STALE_REF_LOCK_MS that an update names inside a local repository (the rig's, or the host's mirror, whose fetch a
 * killed host leaves the same way) is removed. Real git, real gates, the merge activity run alone.
 */
import { existsSync, mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { commitIds, STALE_REF_LOCK_MS, syncMirror } from '../activities/git';
import { createMergeActivities } from '../activities/merge';
import { ProcessRuntime } from '../agents/process-runtime';
import { MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { createRepo } from './helpers/repo';
import { pushBranch } from './helpers/refinery';
import { repoRoot } from './helpers/town';

/** A lock file at `path`, last written `ageMs` ago. */
function leftLock(path: string, ageMs: number, content: string): void {
  writeFileSync(path, content);
  const at = new Date(Date.now() - ageMs);
  utimesSync(path, at, at);
}

async function lockedRig(lockAgeMs: number) {
  const repo = await createRepo();
  const rig = RigConfig.parse({ name: 'locked', repo: repo.origin, agent: 'true', gates: ['true'] });
  const { mergeCandidate } = createMergeActivities({
    gtHome: mkdtempSync(join(tmpdir(), 'gt-lock-home-')),
    gtBinDir: join(repoRoot, 'bin'),
    runtimes: { process: new ProcessRuntime() },
  });
  const head = (await pushBranch(repo.origin, 'gt/a', { 'work/a.txt': 'a\n' })).trim();
  const ticket = MergeTicket.parse({
    mrId: 'mr:a:1',
    beadId: 'a',
    round: 1,
    title: 'a',
    branch: 'gt/a',
    headSha: head,
    targetBranch: 'main',
    enqueuedAt: 0,
  });
  // What a receive-pack killed while it updated main leaves: the lock of the symbolic ref that names it.
  const lock = join(repo.origin, 'HEAD.lock');
  leftLock(lock, lockAgeMs, 'ref: refs/heads/main\n');
  const merge = () => new MockActivityEnvironment().run(mergeCandidate, { rig, tickets: [ticket] });
  return { repo, lock, merge };
}

describe('a push into a local repository that a killed git left locked', () => {
  it('removes a lock older than STALE_REF_LOCK_MS and merges', async () => {
    const { repo, lock, merge } = await lockedRig(STALE_REF_LOCK_MS + 5_000);
    expect(await merge()).toMatchObject({ kind: 'merged', gateRuns: 1 });
    expect(existsSync(lock)).toBe(false);
    expect(await repo.show('work/a.txt')).toBe('a\n');
  });

  it('leaves a younger lock to its owner, and fails the push as retryable, not as a refusal of the change', async () => {
    const { repo, lock, merge } = await lockedRig(1_000);
    const seed = await repo.sha();
    const failure = await merge().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(failure).not.toBeInstanceOf(ApplicationFailure);
    expect(String(failure)).toContain('HEAD.lock');
    expect(existsSync(lock)).toBe(true);
    expect(await repo.sha()).toBe(seed);
  });

  it('fetches into a mirror whose ref a killed fetch left locked, once the lock is stale', async () => {
    const repo = await createRepo();
    const home = mkdtempSync(join(tmpdir(), 'gt-lock-home-'));
    const mirror = await syncMirror('locked', repo.origin, home);
    const lock = join(mirror, 'refs', 'remotes', 'origin', 'main.lock');
    mkdirSync(join(mirror, 'refs', 'remotes', 'origin'), { recursive: true });
    leftLock(lock, STALE_REF_LOCK_MS + 5_000, '0'.repeat(40));
    const moved = await repo.commitDirect('later.txt', 'later\n', 'after the kill');
    await syncMirror('locked', repo.origin, home);
    expect(await commitIds(mirror, ['refs/remotes/origin/main'])).toEqual([moved]);
    expect(existsSync(lock)).toBe(false);
  });
});
