/**
 * Any repository a user has (issue 14, item 7): a rig on a working copy with its branch checked out is refused at
 * `gt rig add` with one line that says what to do — or works, when the user let pushes update it — and a push the
 * repository refuses is reported with git's reason, never as "target moved", and never retried forever.
 */
import { execSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushRefusal } from '../activities/merge';
import { createRepo } from './helpers/repo';
import { runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

/** A working copy with one commit on main, main checked out. */
function workingCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gt-wc-'));
  execSync(
    'git init -q -b main && echo hi > README.md && git add . && git -c user.name=U -c user.email=u@x commit -qm init',
    { cwd: dir },
  );
  return dir;
}

describe('a rig on a local repository', () => {
  it('is refused when it is a working copy with the target checked out, with one line saying what to do, and nothing starts', async () => {
    const wc = workingCopy();
    const r = await runGt(['rig', 'add', 'wc-rig', '--repo', wc], t.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('git refuses pushes to a checked-out branch');
    expect(r.stderr).toContain(`git clone --bare ${wc}`);
    expect(r.stderr).toContain('receive.denyCurrentBranch updateInstead');
    expect((await t.client.workflow.count(`WorkflowId = 'refinery:wc-rig'`)).count).toBe(0);
  });

  it('is refused when the target branch does not exist, or the path is no repository', async () => {
    const repo = await createRepo();
    const noBranch = await runGt(['rig', 'add', 'nb-rig', '--repo', repo.origin, '--branch', 'develop'], t.cliEnv());
    expect(noBranch.stderr).toContain(`has no branch develop`);
    const plain = mkdtempSync(join(tmpdir(), 'gt-plain-'));
    expect((await runGt(['rig', 'add', 'plain-rig', '--repo', plain], t.cliEnv())).stderr).toContain(
      'is not a git repository',
    );
  });

  it('works on a working copy whose owner lets pushes update it: the bead merges into the checked-out branch', async () => {
    const wc = workingCopy();
    execSync('git config receive.denyCurrentBranch updateInstead', { cwd: wc });
    await t.addRig({ name: 'wc-ok', repo: wc });
    const { handle } = await t.town.sling('wc-ok', { id: 'b-wc', title: 'Merge into a working copy' });
    expect((await handle.result()).status).toBe('closed');
    expect(readFileSync(join(wc, 'work', 'b-wc.txt'), 'utf8')).toBe('done by b-wc/r1/a1\n');
  });

  it('reports a push the repository refuses with git’s reason, not as a moved target', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'hooked', repo: repo.origin });
    // Bead branches are welcome; main is frozen.
    writeFileSync(
      join(repo.origin, 'hooks', 'pre-receive'),
      '#!/bin/sh\nwhile read old new ref; do [ "$ref" = refs/heads/main ] && { echo "main is frozen for the release" >&2; exit 1; }; done\nexit 0\n',
      { mode: 0o755 },
    );
    const { handle } = await t.town.sling('hooked', { id: 'b-hooked', title: 'Try to merge into a frozen main' });
    const result = await handle.result();
    expect(result.status).toBe('failed');
    // The merge request was rejected with git's reason, which is the feedback the bead's rounds carried.
    const said = JSON.stringify((await t.town.beadState('b-hooked')).feedback);
    expect(said).toContain('refused the push');
    expect(said).toContain('main is frozen for the release');
    expect(said).not.toContain('target moved');
  });

  it('tells a lost lease from a refusal and from a network failure', () => {
    expect(pushRefusal(' ! [rejected]        abc -> main (stale info)\nerror: failed to push some refs')).toBe('moved');
    expect(pushRefusal(' ! [remote rejected] abc -> main (pre-receive hook declined)')).toBe('refused');
    expect(pushRefusal(' ! [remote rejected] main -> main (branch is currently checked out)')).toBe('refused');
    expect(pushRefusal("fatal: unable to access 'https://x/': Could not resolve host: x")).toBe('failed');
    // A ref's lock held or left by another git: the repository's state, retried, not a refusal of the change.
    expect(
      pushRefusal(
        "remote: error: cannot lock ref 'HEAD': Unable to create '/r/origin.git/./HEAD.lock': File exists.\n" +
          ' ! [remote rejected] abc -> main (failed to update ref)',
      ),
    ).toBe('failed');
  });
});
