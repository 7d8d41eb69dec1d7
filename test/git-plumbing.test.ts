/**
 * The worker's git plumbing against real repositories: a mirror that fetches the rig's branches; the one git
 * runner every activity uses — its answer is git's exit status, including a failure that prints nothing (which
 * simple-git, used before, reported as success); and a run's own repository, whose result the worker takes only
 * as data, refusing what an agent could use against it (docs/security.md).
 */
import { execSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createCandidateTree,
  createRunRepo,
  git,
  importRunBranch,
  mergeTrailer,
  mirrorHolding,
  openQuarantine,
  type OpenedQuarantine,
  remoteBranchSha,
  removeCandidateTree,
  TreeGuard,
  RunRepoRejected,
  syncMirror,
} from '../activities/git';
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

it('lets runs that ask for a fetch together share one that begins after they asked', async () => {
  const repo = await createRepo();
  const gtHome = home();
  const first = syncMirror('shared', repo.origin, gtHome);
  await new Promise((r) => setImmediate(r)); // the first fetch has begun (it holds the mirror's lock)
  const moved = await repo.commitDirect('a.txt', 'a\n', 'moved meanwhile');
  const [second, third] = [syncMirror('shared', repo.origin, gtHome), syncMirror('shared', repo.origin, gtHome)];
  expect(third).toBe(second);
  expect(second).not.toBe(first);
  const mirror = await second;
  expect(await remoteBranchSha(mirror, 'main')).toBe(moved);
  // Once that one has begun, the next caller gets a fetch of its own.
  const fourth = syncMirror('shared', repo.origin, gtHome);
  expect(fourth).not.toBe(second);
  await Promise.all([first, fourth]);
});

it('starts from the mirror without a fetch only when its target holds every commit the run needs', async () => {
  const repo = await createRepo();
  const gtHome = home();
  const mirror = await syncMirror('holding', repo.origin, gtHome);
  const first = await repo.sha();
  const second = await repo.commitDirect('a.txt', 'a\n', 'merged by our refinery');
  await syncMirror('holding', repo.origin, gtHome);
  // The target moves on in the repository, unseen by the mirror: a run needing only what the mirror holds (the tip,
  // an older commit, both) does not fetch, and starts from what the mirror has.
  const third = await repo.commitDirect('b.txt', 'b\n', 'merged elsewhere');
  for (const needs of [[second], [first], [first, second]]) {
    expect(await mirrorHolding('holding', repo.origin, gtHome, 'main', needs)).toEqual({ mirror, fetched: false });
    expect(await remoteBranchSha(mirror, 'main')).toBe(second);
  }
  // A commit the mirror lacks, a branch it has not, nothing named, or a name rev-list would read as a range: a fetch.
  for (const [branch, needs] of [
    ['main', [third]],
    ['no-such-branch', [first]],
    ['main', []],
    ['main..main', [first]],
  ] as const) {
    expect(await mirrorHolding('holding', repo.origin, gtHome, branch, [...needs])).toEqual({ mirror, fetched: true });
  }
  expect(await remoteBranchSha(mirror, 'main')).toBe(third);
});

it('returns what git printed, and fails with git’s message on a non-zero exit', async () => {
  const repo = await createRepo();
  expect((await git(repo.origin, ['rev-parse', '--is-bare-repository'])).trim()).toBe('true');
  await expect(git(repo.origin, ['rev-parse', '--verify', 'refs/heads/nope'])).rejects.toThrow(
    /git rev-parse --verify failed in .*origin\.git: fatal: Needed a single revision/,
  );
  // Named by the command, not by settings given in front of it.
  await expect(
    git(repo.origin, ['-c', 'maintenance.auto=false', 'rev-parse', '--verify', 'refs/heads/nope']),
  ).rejects.toThrow(/git rev-parse --verify failed in /);
});

it('fails on a non-zero exit that prints nothing at all', async () => {
  const repo = await createRepo();
  const head = (await git(repo.origin, ['rev-parse', 'main'])).trim();
  const emptyTree = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
  const unrelated = (
    await git(repo.origin, [
      '-c',
      'user.name=Test',
      '-c',
      'user.email=t@example.com',
      'commit-tree',
      emptyTree,
      '-m',
      'unrelated',
    ])
  ).trim();
  // Not an ancestor: exit 1 with empty stdout and stderr.
  await expect(git(repo.origin, ['merge-base', '--is-ancestor', unrelated, head])).rejects.toThrow(
    /git merge-base --is-ancestor failed .*: no output/,
  );
});

it('prunes removed candidate trees’ entries once the mirror lists 32, and builds anew at a listed path', async () => {
  const repo = await createRepo();
  const gtHome = home();
  const mirror = await syncMirror('trees', repo.origin, gtHome);
  const base = (await remoteBranchSha(mirror, 'main'))!;
  const listed = () => readdirSync(join(mirror, 'worktrees')).length;
  const counts: number[] = [];
  for (let i = 0; i < 40; i++) {
    const tree = await createCandidateTree(mirror, join(gtHome, 'candidates', `c-${i}`), base);
    expect((await git(tree, ['rev-parse', 'HEAD'])).trim()).toBe(base);
    removeCandidateTree(tree.workTree!, join(gtHome, 'trash'));
    counts.push(listed());
  }
  // Removing a tree leaves its entry; the creation that finds 32 prunes them all before adding its own.
  expect(counts).toEqual([
    ...Array.from({ length: 32 }, (_, i) => i + 1),
    ...Array.from({ length: 8 }, (_, i) => i + 1),
  ]);
  // A path whose removed tree is still listed (a retried merge section's) is built anew.
  const again = await createCandidateTree(mirror, join(gtHome, 'candidates', 'c-39'), base);
  expect((await git(again, ['rev-parse', 'HEAD'])).trim()).toBe(base);
});

it('links a candidate tree as `git worktree add` does: git in it finds it, the mirror lists it, a live tree keeps its name', async () => {
  const repo = await createRepo({ 'README.md': 'r\n', 'src/a.txt': 'a\n' });
  const gtHome = home();
  const mirror = await syncMirror('links', repo.origin, gtHome);
  const base = (await remoteBranchSha(mirror, 'main'))!;
  // Two trees of one name in two directories, both alive: each has its own entry in the mirror.
  const first = await createCandidateTree(mirror, join(gtHome, 'one', 'cand'), base);
  const second = await createCandidateTree(mirror, join(gtHome, 'two', 'cand'), base);
  expect(first.gitDir).not.toBe(second.gitDir);
  for (const tree of [first, second]) {
    const inside = (cmd: string) =>
      execSync(cmd, { cwd: tree.workTree, env: { PATH: process.env.PATH }, encoding: 'utf8' }).trim();
    // What a gate sees from inside, through the tree's `.git` file alone: the commit, its files, nothing changed.
    expect(inside('git rev-parse HEAD')).toBe(base);
    expect(inside('git status --porcelain')).toBe('');
    expect(readFileSync(join(tree.workTree!, 'src', 'a.txt'), 'utf8')).toBe('a\n');
  }
  const listed = execSync('git worktree list --porcelain', { cwd: mirror, encoding: 'utf8' });
  for (const tree of [first, second]) expect(listed).toContain(`worktree ${tree.workTree}\nHEAD ${base}\ndetached`);
  // A commit in it goes on the detached HEAD and builds on the start, as the merge section's merge does.
  execSync('git -c user.name=A -c user.email=a@x commit -q --allow-empty -m next', { cwd: first.workTree });
  expect((await git(first, ['rev-parse', 'HEAD^'])).trim()).toBe(base);
  // Removed, its name is taken over by the next tree at the same path.
  removeCandidateTree(first.workTree!, join(gtHome, 'trash'));
  expect((await createCandidateTree(mirror, first.workTree!, base)).gitDir).toBe(first.gitDir);
  await expect(createCandidateTree(mirror, join(gtHome, 'three'), 'main')).rejects.toThrow(/commit id/);
});

describe('a run’s own repository', () => {
  const commitIn = (dir: string, file: string) =>
    execSync(`echo work > ${file} && git add -A && git -c user.name=A -c user.email=a@x commit -qm work`, {
      cwd: dir,
      env: { PATH: process.env.PATH },
    });

  async function setUp() {
    const repo = await createRepo();
    const gtHome = home();
    const mirror = await syncMirror('runs', repo.origin, gtHome);
    const base = (await remoteBranchSha(mirror, 'main'))!;
    const workTree = join(gtHome, 'wt');
    await createRunRepo(mirror, workTree, { sha: base, branch: 'gt/b1' }, join(gtHome, 'trash'));
    const syncs: string[] = [];
    const quarantine = join(gtHome, 'q.git');
    const take = (opened?: OpenedQuarantine, mrId?: string) =>
      importRunBranch({
        mirror,
        repo: repo.origin,
        syncMirror: () => (syncs.push(mirror), syncMirror('runs', repo.origin, gtHome)),
        workTree,
        branch: 'gt/b1',
        targetBranch: 'main',
        baseSha: base,
        quarantine,
        home: gtHome,
        trash: join(gtHome, 'trash'),
        opened,
        mrId,
      });
    return { repo, gtHome, mirror, base, workTree, take, syncs, quarantine };
  }

  it('takes over a quarantine opened before the agent exited, and opens one itself when that failed', async () => {
    const { mirror, base, workTree, take, syncs, quarantine } = await setUp();
    // Opened as the gateway accepts the run's gt done, in a quarantine of its own: an empty bare repository, and the
    // mirror's commits read.
    const early = `${quarantine}-early`;
    const opened = await openQuarantine({ mirror, quarantine: early, targetBranch: 'main', baseSha: base });
    expect(opened).toEqual({ quarantine: early, found: [base, base] });
    expect(existsSync(join(early, 'HEAD'))).toBe(true);
    commitIn(workTree, 'a.txt');
    // The import works in it and goes by what the early reads found: a target they did not find is fetched for, once.
    expect(await take(Promise.resolve({ quarantine: early, found: [undefined, base] }))).toMatchObject({
      commitsAhead: 1,
    });
    expect(syncs).toHaveLength(1);
    expect(existsSync(early)).toBe(false);
    expect(existsSync(quarantine)).toBe(false);
    // An early open that failed (undefined) is done again by the import, which needs no fetch then.
    commitIn(workTree, 'b.txt');
    expect(await take(Promise.resolve(undefined))).toMatchObject({ commitsAhead: 2 });
    expect(syncs).toHaveLength(1);
    expect(existsSync(quarantine)).toBe(false);
  });

  it('fetches the mirror only when it lacks what the import reads', async () => {
    const { mirror, workTree, take, syncs } = await setUp();
    commitIn(workTree, 'a.txt');
    expect(await take()).toMatchObject({ commitsAhead: 1 });
    expect(syncs).toHaveLength(0);
    // The mirror lost its target (a prune): fetched once, then taken as before.
    await git(mirror, ['update-ref', '-d', 'refs/remotes/origin/main']);
    expect(await take()).toMatchObject({ commitsAhead: 1 });
    expect(syncs).toHaveLength(1);
    expect(await remoteBranchSha(mirror, 'main')).toBeTruthy();
  });

  it('borrows the mirror’s objects, fetches from it, and is taken by the worker alone, which pushes its branch', async () => {
    const { repo, workTree, take, base } = await setUp();
    expect(readFileSync(join(workTree, '.git', 'objects', 'info', 'alternates'), 'utf8')).toContain(
      'mirror.git/objects',
    );
    execSync('git fetch -q origin && git rev-parse origin/main', { cwd: workTree });
    commitIn(workTree, 'a.txt');
    const taken = await take();
    expect(taken).toMatchObject({ commitsAhead: 1, uncommittedChanges: false });
    expect((await repo.log('gt/b1'))[0]!.sha).toBe(taken.headSha);
    expect((await repo.log('gt/b1'))[1]!.sha).toBe(base);
  });

  it('writes no ref of the mirror, and lands side by side with fetches and merge candidates’ trees', async () => {
    const { repo, gtHome, mirror, base, workTree, take } = await setUp();
    const refs = () => git(mirror, ['for-each-ref', '--format=%(objectname) %(refname)']);
    const fetchHead = () => readFileSync(join(mirror, 'FETCH_HEAD'), 'utf8');
    const before = [await refs(), fetchHead()];
    commitIn(workTree, 'a.txt');
    expect((await take()).commitsAhead).toBe(1);
    expect([await refs(), fetchHead()]).toEqual(before);
    // Six runs' imports at once, and runs starting meanwhile (each a fetch that writes every origin/* of the mirror).
    const runs = Array.from({ length: 6 }, (_, i) => ({ workTree: join(gtHome, `wt-${i}`), branch: `gt/side-${i}` }));
    for (const r of runs) {
      await createRunRepo(mirror, r.workTree, { sha: base, branch: r.branch }, join(gtHome, 'trash'));
      commitIn(r.workTree, 'a.txt');
    }
    const imports = runs.map((r, i) =>
      importRunBranch({
        mirror,
        repo: repo.origin,
        syncMirror: () => syncMirror('runs', repo.origin, gtHome),
        workTree: r.workTree,
        branch: r.branch,
        targetBranch: 'main',
        baseSha: base,
        quarantine: join(gtHome, `q-${i}.git`),
        home: gtHome,
        trash: join(gtHome, 'trash'),
      }),
    );
    const fetches = runs.map(() => syncMirror('runs', repo.origin, gtHome));
    // Merge candidates' trees made meanwhile: a tree being added has a HEAD git does not read as a commit yet, and a
    // fetch checks what it brought against every HEAD of the mirror's trees.
    const trees = runs.map((_, i) => createCandidateTree(mirror, join(gtHome, `candidate-${i}`), base));
    const taken = await Promise.all(imports);
    await Promise.all([...fetches, ...trees]);
    for (const [i, r] of runs.entries()) expect((await repo.log(r.branch))[0]!.sha).toBe(taken[i]!.headSha);
    // The mirror learns of the branches at its next fetch, like any other branch of the repository.
    await syncMirror('runs', repo.origin, gtHome);
    for (const [i, r] of runs.entries()) expect(await remoteBranchSha(mirror, r.branch)).toBe(taken[i]!.headSha);
  });

  it('says when the work was left uncommitted and nothing is ahead', async () => {
    const { workTree, take } = await setUp();
    writeFileSync(join(workTree, 'loose.txt'), 'not committed\n');
    expect(await take()).toMatchObject({ commitsAhead: 0, uncommittedChanges: true });
    rmSync(join(workTree, 'loose.txt'));
    expect(await take()).toMatchObject({ commitsAhead: 0, uncommittedChanges: false });
    writeFileSync(join(workTree, 'README.md'), 'changed, not committed\n');
    expect(await take()).toMatchObject({ commitsAhead: 0, uncommittedChanges: true });
  });

  it('says a branch nothing is ahead of was merged as the round’s merge request only when the refinery’s mark says so', async () => {
    const { repo, gtHome, base, workTree, take } = await setUp();
    commitIn(workTree, 'a.txt');
    const { headSha } = await take();
    // The refinery merges it as mr:b1:1 (a ticket a supervision handed over unheard) before the bead's own import.
    const git_ = (args: string[]) => git({ gitDir: repo.origin }, args).then((out) => out.trim());
    const merge = await git_([
      ...['-c', 'user.name=R', '-c', 'user.email=r@x', 'commit-tree', `${headSha}^{tree}`, '-p', base, '-p', headSha],
      ...['-m', 'Merge gt/b1', '-m', mergeTrailer('mr:b1:1', headSha)],
    ]);
    await git_(['update-ref', 'refs/heads/main', merge]);
    await syncMirror('runs', repo.origin, gtHome);
    expect(await take(undefined, 'mr:b1:1')).toEqual({
      headSha,
      commitsAhead: 0,
      uncommittedChanges: false,
      mergedAs: merge,
    });
    // Not as another round's request, nor when no request is named: a run that committed nothing new.
    for (const mrId of ['mr:b1:2', undefined])
      expect(await take(undefined, mrId)).toEqual({ headSha, commitsAhead: 0, uncommittedChanges: false });
  });

  it('refuses an object store with a link in it (it could make the worker read another repository’s objects)', async () => {
    const { workTree, take } = await setUp();
    commitIn(workTree, 'a.txt');
    symlinkSync('/etc/hostname', join(workTree, '.git', 'objects', 'planted'));
    await expect(take()).rejects.toThrow(RunRepoRejected);
    await expect(take()).rejects.toThrow(/not a regular file/);
  });

  it('refuses a link on the way to its branch (it could make the worker read any file), and never echoes what it read', async () => {
    const { workTree, take, gtHome } = await setUp();
    commitIn(workTree, 'a.txt');
    const elsewhere = join(gtHome, 'elsewhere', 'heads', 'gt');
    mkdirSync(elsewhere, { recursive: true });
    writeFileSync(join(elsewhere, 'b1'), 'a secret of the worker\n');
    rmSync(join(workTree, '.git', 'refs'), { recursive: true });
    symlinkSync(join(gtHome, 'elsewhere'), join(workTree, '.git', 'refs'));
    const refused = await take().catch((err: unknown) => err as Error);
    expect(refused).toBeInstanceOf(RunRepoRejected);
    expect((refused as Error).message).toMatch(/is not a regular directory/);
    expect((refused as Error).message).not.toContain('secret');
  });

  it('refuses alternates other than the mirror’s, and a .git that is not a directory', async () => {
    const { workTree, take, gtHome } = await setUp();
    commitIn(workTree, 'a.txt');
    const other = await syncMirror('other-rig', (await createRepo()).origin, gtHome);
    writeFileSync(join(workTree, '.git', 'objects', 'info', 'alternates'), `${join(other, 'objects')}\n`);
    await expect(take()).rejects.toThrow(/borrows objects from elsewhere/);
    rmSync(join(workTree, '.git'), { recursive: true });
    writeFileSync(join(workTree, '.git'), 'gitdir: /somewhere/else\n');
    await expect(take()).rejects.toThrow(/is not the run's repository any more/);
  });

  it('refuses a commit carrying the refinery’s mark of a merged request (it would close that request unmerged)', async () => {
    const { repo, workTree, take } = await setUp();
    commitIn(workTree, 'a.txt');
    // Another bead's request as the agent can read it (its branch is in every run's repository): its id and head.
    const forged = `Gt-Merge-Request: mr_other-bead_1@${await repo.sha()}`;
    execSync(`git -c user.name=A -c user.email=a@x commit -q --allow-empty -m 'tidy' -m '${forged}'`, {
      cwd: workTree,
    });
    commitIn(workTree, 'b.txt');
    const refused = await take().catch((err: unknown) => err as Error);
    expect(refused).toBeInstanceOf(RunRepoRejected);
    expect((refused as Error).message).toMatch(/has "Gt-Merge-Request:" in its message, the refinery's own mark/);
    expect(await git(repo.origin, ['for-each-ref', 'refs/heads/gt/'])).toBe('');
  });

  it('counts every commit ahead of the target, and refuses a branch naming no commit or missing an object', async () => {
    const { repo, workTree, take } = await setUp();
    commitIn(workTree, 'a.txt');
    commitIn(workTree, 'b.txt');
    const { headSha } = await take();
    expect(await take()).toMatchObject({ headSha, commitsAhead: 2, uncommittedChanges: false });
    // The branch pointed at a tree: judged as no commit, not as objects missing (the walk fails for both).
    const ref = join(workTree, '.git', 'refs', 'heads', 'gt', 'b1');
    const tree = execSync('git rev-parse HEAD^{tree}', { cwd: workTree }).toString().trim();
    writeFileSync(ref, `${tree}\n`);
    await expect(take()).rejects.toThrow(`gt/b1 names ${tree}, which is not a commit of the run's repository`);
    writeFileSync(ref, `${headSha}\n`);
    // A commit whose new file's blob (content no other file has) is gone from the agent's object store.
    writeFileSync(join(workTree, 'c.txt'), 'only here\n');
    commitIn(workTree, 'd.txt');
    const blob = execSync('git rev-parse HEAD:c.txt', { cwd: workTree }).toString().trim();
    rmSync(join(workTree, '.git', 'objects', blob.slice(0, 2), blob.slice(2)));
    const refused = await take().catch((err: unknown) => err as Error);
    expect(refused).toBeInstanceOf(RunRepoRejected);
    expect((refused as Error).message).toMatch(new RegExp(`gt/b1 is missing objects: .*${blob}`));
    expect((await repo.log('gt/b1'))[0]!.sha).toBe(headSha);
  });

  it('refuses a branch that does not build on the run’s starting commit', async () => {
    const { workTree, take } = await setUp();
    execSync(
      'git checkout -q --orphan tmp && git rm -rqf . && echo x > x && git add x && git -c user.name=A -c user.email=a@x commit -qm orphan && git branch -qf gt/b1 tmp && git checkout -q gt/b1',
      { cwd: workTree },
    );
    await expect(take()).rejects.toThrow(/does not build on the run's starting commit/);
  });

  it('never lets the worker run the repository’s fsmonitor or hooks, nor follow GIT_DIR from its own environment', async () => {
    const { workTree, take, gtHome } = await setUp();
    const marker = join(gtHome, 'pwned');
    execSync(
      `git config core.fsmonitor 'touch ${marker}-fsmonitor; false' && git config core.hooksPath "$PWD/.git/hooks"`,
      { cwd: workTree },
    );
    // The repository is made without git's template (no hooks directory): the agent makes one.
    mkdirSync(join(workTree, '.git', 'hooks'), { recursive: true });
    for (const hook of ['pre-push', 'post-checkout', 'reference-transaction'])
      writeFileSync(join(workTree, '.git', 'hooks', hook), `#!/bin/sh\ntouch ${marker}-${hook}\n`, { mode: 0o755 });
    // Nothing committed yet: the worker looks at the work tree (a status), the path an fsmonitor would fire on.
    writeFileSync(join(workTree, 'loose.txt'), 'x\n');
    process.env.GIT_DIR = join(workTree, '.git');
    try {
      expect(await take()).toMatchObject({ commitsAhead: 0, uncommittedChanges: true });
      expect(readdirSync(gtHome).filter((f) => f.startsWith('pwned'))).toEqual([]);
      // The agent's own commit (its git would run its own traps: that is its business, not the worker's).
      execSync(
        'echo work > a.txt && git -c core.fsmonitor=false add -A && git -c core.fsmonitor=false -c core.hooksPath=/dev/null -c user.name=A -c user.email=a@x commit -qm work',
        { cwd: workTree, env: { PATH: process.env.PATH } },
      );
      expect((await take()).commitsAhead).toBe(1);
    } finally {
      delete process.env.GIT_DIR;
    }
    expect(readdirSync(gtHome).filter((f) => f.startsWith('pwned'))).toEqual([]);
  });
});

describe('the guard between a mirror’s imports and its candidate trees', () => {
  /** A step that runs until released, recording when it starts and ends. */
  const step = (log: string[], name: string) => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    return {
      release,
      run: async () => {
        log.push(`${name} starts`);
        await released;
        log.push(`${name} ends`);
      },
    };
  };
  const settle = () => new Promise((r) => setImmediate(r));

  it('runs fetches side by side, a tree’s creation alone, and a waiting creation before later fetches', async () => {
    const guard = new TreeGuard();
    const log: string[] = [];
    const [f1, f2, tree, f3] = ['f1', 'f2', 'tree', 'f3'].map((n) => step(log, n));
    const done = [guard.fetch(f1!.run), guard.fetch(f2!.run)];
    await settle();
    done.push(guard.createTree(tree!.run));
    await settle();
    done.push(guard.fetch(f3!.run));
    await settle();
    // Both fetches run at once; the creation waits for them, and the fetch asked after it waits for the creation.
    expect(log).toEqual(['f1 starts', 'f2 starts']);
    f1!.release();
    await settle();
    expect(log).toEqual(['f1 starts', 'f2 starts', 'f1 ends']);
    f2!.release();
    await settle();
    expect(log.slice(3)).toEqual(['f2 ends', 'tree starts']);
    tree!.release();
    await settle();
    expect(log.slice(5)).toEqual(['tree ends', 'f3 starts']);
    f3!.release();
    await Promise.all(done);
  });
});
