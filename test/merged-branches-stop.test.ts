/**
 * A stopping worker deletes the merged branches it still has queued (worker/worker.ts run()): a town stopped right
 * after its last merge leaves no branch of it in the repository, though a quiet rig's branches wait 2 s otherwise.
 * Real dev server, git, refinery and gates.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { startMergeRequest } from './helpers/refinery';
import { startTestTown } from './helpers/town';

describe('a stopping worker', () => {
  it('deletes the branches of its last merges before it goes', async () => {
    const repo = await createRepo();
    const t = await startTestTown();
    try {
      const rig = await t.addRig({ name: 'stopping', repo: repo.origin, gates: ['test -f README.md'] });
      const handle = await startMergeRequest(t, rig, { beadId: 'last', files: { 'work/last.txt': 'last\n' } });
      expect(await handle.result()).toMatchObject({ kind: 'merged' });
    } finally {
      await t.stop();
    }
    const branches = execFileSync('git', ['for-each-ref', '--format=%(refname)', 'refs/heads/'], {
      cwd: repo.origin,
      encoding: 'utf8',
    });
    expect(branches.trim()).toBe('refs/heads/main');
    expect(await repo.show('work/last.txt')).toBe('last\n');
  });
});
