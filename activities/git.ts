/**
 * Git plumbing on this host. Each rig has a bare mirror under GT_HOME that fetches from the rig's repository;
 * polecat worktrees and merge candidates are worktrees of that mirror, and every change reaches the repository
 * by push, so the repository (not this host) is the source of truth and any host can pick up any step.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { paths } from '../host/home';

const locks = new Map<string, Promise<unknown>>();

/** Serializes git operations on one mirror within this process (git's own ref locks would fail, not wait). */
export async function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = locks.get(key) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(fn);
  locks.set(key, run);
  try {
    return await run;
  } finally {
    if (locks.get(key) === run) locks.delete(key);
  }
}

/**
 * Runs git where the exit status *is* the answer (merge, merge-base --is-ancestor, push --force-with-lease).
 *
 * Git runs through execFile rather than simple-git on purpose: simple-git waits a fixed 50 ms after any command
 * that prints nothing (a fetch with nothing new, worktree prune, clean, a log that finds no match) — several such
 * commands sit on every bead's critical path — and it treats a non-zero exit with an empty stderr as success.
 */
export function gitStatus(dir: string, args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('git', args, { cwd: dir, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => resolve({ ok: !err, stdout, stderr }));
  });
}

/** Runs git in `dir` and returns its stdout; a non-zero exit is an error naming the command and git's message. */
export async function git(dir: string, args: string[]): Promise<string> {
  const { ok, stdout, stderr } = await gitStatus(dir, args);
  if (!ok) throw new Error(`git ${args.slice(0, 2).join(' ')} failed in ${dir}: ${(stderr.trim() || stdout.trim()).slice(0, 2000) || 'no output'}`);
  return stdout;
}

/** Makes sure the rig's mirror exists and has fetched the repository's branches as `origin/*`. */
export async function syncMirror(rig: string, repo: string, home?: string): Promise<string> {
  const dir = paths.mirror(rig, home);
  return withLock(dir, async () => {
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true });
      await git(dir, ['init', '--bare']);
      // Sets the fetch refspec +refs/heads/*:refs/remotes/origin/*.
      await git(dir, ['remote', 'add', 'origin', repo]);
      await git(dir, ['config', 'user.name', 'Gas Town Refinery']);
      await git(dir, ['config', 'user.email', 'refinery@gastown.local']);
    }
    await git(dir, ['fetch', '--prune', 'origin']);
    return dir;
  });
}

export async function remoteBranchSha(mirror: string, branch: string): Promise<string | null> {
  try {
    return (await git(mirror, ['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${branch}^{commit}`])).trim();
  } catch {
    return null;
  }
}

/** Adds (or resets) a worktree at `path` on local branch `branch`, starting at `startPoint`. */
export async function resetWorktree(mirror: string, path: string, branch: string, startPoint: string): Promise<void> {
  await withLock(mirror, async () => {
    if (existsSync(path)) {
      await git(path, ['checkout', '-B', branch, startPoint]);
      await git(path, ['reset', '--hard', startPoint]);
      await git(path, ['clean', '-fdx']);
      return;
    }
    await git(mirror, ['worktree', 'prune']);
    mkdirSync(dirname(path), { recursive: true });
    await git(mirror, ['worktree', 'add', '-f', '-B', branch, path, startPoint]);
  });
}

export async function removeWorktree(mirror: string, path: string): Promise<void> {
  await withLock(mirror, async () => {
    if (existsSync(path)) {
      await git(mirror, ['worktree', 'remove', '--force', path]).catch(() => rmSync(path, { recursive: true, force: true }));
    }
    await git(mirror, ['worktree', 'prune']);
  });
}

/** The trailer that marks a commit on the target as the result of one merge request: the idempotency key. */
export const mergeTrailer = (mrId: string, headSha: string) => `Gt-Merge-Request: ${mrId}@${headSha}`;

/** Finds the commit on `origin/<target>` that already merged this MR at this head, if any. */
export async function findMergedCommit(mirror: string, target: string, mrId: string, headSha: string): Promise<string | null> {
  const out = await git(mirror, [
    'log',
    '-1',
    '--format=%H',
    '--fixed-strings',
    `--grep=${mergeTrailer(mrId, headSha)}`,
    `refs/remotes/origin/${target}`,
  ]);
  return out.trim() || null;
}

/** Adds (or resets) a detached worktree at `path` checked out at exactly `sha` (reviewers read, they do not commit). */
export async function resetDetachedWorktree(mirror: string, path: string, sha: string): Promise<void> {
  await withLock(mirror, async () => {
    if (existsSync(path)) {
      await git(path, ['checkout', '--detach', sha]);
      await git(path, ['reset', '--hard', sha]);
      await git(path, ['clean', '-fdx']);
      return;
    }
    await git(mirror, ['worktree', 'prune']);
    mkdirSync(dirname(path), { recursive: true });
    await git(mirror, ['worktree', 'add', '-f', '--detach', path, sha]);
  });
}
