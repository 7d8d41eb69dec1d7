/**
 * The worker's git plumbing against real repositories: a mirror that fetches the rig's branches, and the one git
 * runner every activity uses — its answer is git's exit status, including a failure that prints nothing (which
 * simple-git, used before, reported as success).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { git, remoteBranchSha, syncMirror } from '../activities/git';
import { createRepo } from './helpers/repo';

const home = () => mkdtempSync(join(tmpdir(), 'gt-git-home-'));

it('mirrors the rig repository: its branches as origin/*, a missing branch as null', async () => {
  const repo = await createRepo();
  const gtHome = home();
  const mirror = await syncMirror('plumbing', repo.origin, gtHome);
  const main = await remoteBranchSha(mirror, 'main');
  expect(main).toBe((await repo.log())[0]!.sha);
  expect(await remoteBranchSha(mirror, 'no-such-branch')).toBeNull();
  // A second sync with nothing new prints nothing and still succeeds.
  expect(await syncMirror('plumbing', repo.origin, gtHome)).toBe(mirror);
});

it('returns what git printed, and fails with git’s message on a non-zero exit', async () => {
  const repo = await createRepo();
  expect((await git(repo.origin, ['rev-parse', '--is-bare-repository'])).trim()).toBe('true');
  await expect(git(repo.origin, ['rev-parse', '--verify', 'refs/heads/nope'])).rejects.toThrow(/git rev-parse --verify failed in .*origin\.git: fatal: Needed a single revision/);
});

it('fails on a non-zero exit that prints nothing at all', async () => {
  const repo = await createRepo();
  const head = (await git(repo.origin, ['rev-parse', 'main'])).trim();
  const emptyTree = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
  const unrelated = (await git(repo.origin, ['-c', 'user.name=Test', '-c', 'user.email=t@example.com', 'commit-tree', emptyTree, '-m', 'unrelated'])).trim();
  // Not an ancestor: exit 1 with empty stdout and stderr.
  await expect(git(repo.origin, ['merge-base', '--is-ancestor', unrelated, head])).rejects.toThrow(/git merge-base --is-ancestor failed .*: no output/);
});
