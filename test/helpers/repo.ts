/** Real git repositories for tests: a bare "origin" (what a rig points at) seeded with one commit on main. */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleGit } from 'simple-git';

export interface TestRepo {
  origin: string;
  /** Commits on `branch` of origin, newest first: sha and subject. */
  log(branch?: string): Promise<{ sha: string; subject: string; body: string }[]>;
  /** Content of a file at the tip of a branch, or null. */
  show(path: string, branch?: string): Promise<string | null>;
  /** Pushes a commit changing `path` straight to a branch of origin (someone else moving the target). */
  commitDirect(path: string, content: string, message: string, branch?: string): Promise<string>;
  sha(branch?: string): Promise<string>;
}

export async function createRepo(files: Record<string, string> = { 'README.md': '# test repo\n' }): Promise<TestRepo> {
  const root = mkdtempSync(join(tmpdir(), 'gt-repo-'));
  const origin = join(root, 'origin.git');
  await simpleGit().raw(['init', '--bare', '-b', 'main', origin]);
  const work = join(root, 'work');
  await simpleGit().clone(origin, work);
  const g = simpleGit(work).env({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    GIT_AUTHOR_NAME: 'Test',
    GIT_AUTHOR_EMAIL: 't@example.com',
    GIT_COMMITTER_NAME: 'Test',
    GIT_COMMITTER_EMAIL: 't@example.com',
  });
  await g.raw(['checkout', '-b', 'main']);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(work, p, '..'), { recursive: true });
    writeFileSync(join(work, p), content);
  }
  await g.add('.').commit('initial commit').push('origin', 'main');
  const bare = simpleGit(origin);
  return {
    origin,
    async log(branch = 'main') {
      const out = await bare.raw(['log', '--format=%H%x1f%s%x1f%b%x1e', branch]);
      return out
        .split('\x1e')
        .map((r) => r.trim())
        .filter(Boolean)
        .map((r) => {
          const [sha, subject, body] = r.split('\x1f');
          return { sha: sha!, subject: subject!, body: body ?? '' };
        });
    },
    async show(path, branch = 'main') {
      try {
        return await bare.raw(['show', `${branch}:${path}`]);
      } catch {
        return null;
      }
    },
    async commitDirect(path, content, message, branch = 'main') {
      await g.fetch('origin');
      await g.raw(['checkout', '-B', branch, `origin/${branch}`]);
      mkdirSync(join(work, path, '..'), { recursive: true });
      writeFileSync(join(work, path), content);
      await g.add(path).commit(message).push('origin', branch);
      return (await g.revparse(['HEAD'])).trim();
    },
    async sha(branch = 'main') {
      return (await bare.revparse([branch])).trim();
    },
  };
}
