/**
 * The bench's floor (bench/floor.ts) does the beads' work and leaves nothing that would make its later beads slower
 * than its first: every bead merged, its worktree removed, its branch deleted from the repository (in batches, as the
 * town's merged branches are). Real git and the real bench agent.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runFloor } from '../bench/floor';
import { createOrigin } from '../bench/git';

const refs = (repo: string, prefix: string) =>
  execFileSync('git', ['for-each-ref', '--format=%(refname)', prefix], { cwd: repo, encoding: 'utf8' }).trim();

describe('the bench floor', () => {
  it('merges every bead and keeps neither their worktrees nor their branches', async () => {
    const root = join(mkdtempSync(join(tmpdir(), 'gt-floor-')), 'floor');
    const origin = await createOrigin(root);
    // 20 beads: one batch of 16 branches deleted as the merges go, the last four at the end.
    const run = await runFloor({ root, origin, n: 20, width: 4, gates: ['test -f README.md'] });
    expect(run.beads).toHaveLength(20);
    expect(run.gateRuns).toBe(20);
    expect(refs(origin, 'refs/heads/')).toBe('refs/heads/main');
    const mirror = join(root, 'mirror.git');
    expect(refs(mirror, 'refs/heads/')).toBe('');
    expect(refs(mirror, 'refs/remotes/origin/gt/')).toBe('');
    expect(readdirSync(join(root, 'worktrees'))).toEqual([]);
    // Only the merger's own tree is still linked to the mirror.
    expect(existsSync(join(mirror, 'worktrees')) ? readdirSync(join(mirror, 'worktrees')) : []).toEqual(['candidate']);
  });
});
