/**
 * Git plumbing on this host. Each rig has a bare mirror under GT_HOME that fetches from the rig's repository;
 * every change reaches the repository by a push of the worker's own git (merges from the mirror, a run's branch from
 * its import's quarantine), so the repository (not this host) is the source of truth and any host can pick up any
 * step.
 *
 * Agents are untrusted (docs/security.md), so the worker never runs git where an agent could have chosen its
 * configuration:
 * - every command names its repository explicitly (`GIT_DIR`, and `GIT_WORK_TREE` for a work tree): git never
 *   discovers a `.git` file or directory in a tree an agent or a gate could write;
 * - every command runs with `core.fsmonitor`/`core.hooksPath` switched off, without system config, without replace
 *   objects and with a protocol allow-list, whatever the repository's config says;
 * - an agent works in a repository of its own (`createRunRepo`: objects borrowed read-only from the mirror through
 *   alternates); the worker takes its result by reading the branch's object id and objects as data
 *   (`importRunBranch`), never by running git in the agent's repository, and only the worker pushes.
 */
import {
  appendFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { paths } from '../host/home';
import { hostCredentialsFile } from './credentials';
import { spawner } from '../host/spawner';
import { BranchName } from '../domain/rig';
import { CommitId } from '../domain/ids';
import { discardTree } from './trash';

const locks = new Map<string, Promise<unknown>>();

/** Each mirror's fetch that waits for the lock, not begun yet: a caller asking meanwhile takes it as its own. */
const waitingFetches = new Map<string, Promise<string>>();

/**
 * Serializes the git operations that write one mirror's refs within this process (git's own ref locks would fail, not
 * wait).
 */
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
 * Per mirror: fetches of objects into it (a run's import) run side by side, and the creation of a merge candidate's
 * tree waits until none runs and holds new ones back until it is done. A fetch checks what it brought against every
 * HEAD of the mirror's work trees, and a tree being added has one that is not a commit yet ("bad object
 * worktrees/…/HEAD"); fetches that write no ref have nothing to fear from each other. Under the mirror's one lock,
 * sixteen imports at once waited for each other (78 ms p50, 286 ms p90 at 100 × 16; docs/performance.md). A waiting
 * creation goes before fetches asking after it, so a stream of imports cannot hold it back for ever.
 */
export class TreeGuard {
  private fetching = 0;
  private readonly idle: (() => void)[] = [];
  private creating?: Promise<void>;

  async fetch<T>(fn: () => Promise<T>): Promise<T> {
    while (this.creating) await this.creating;
    this.fetching++;
    try {
      return await fn();
    } finally {
      if (--this.fetching === 0) for (const wake of this.idle.splice(0)) wake();
    }
  }

  async createTree<T>(fn: () => Promise<T>): Promise<T> {
    while (this.creating) await this.creating;
    let done!: () => void;
    this.creating = new Promise<void>((resolve) => (done = resolve));
    try {
      while (this.fetching > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
      return await fn();
    } finally {
      this.creating = undefined;
      done();
    }
  }
}

const treeGuards = new Map<string, TreeGuard>();
function treeGuard(mirror: string): TreeGuard {
  let guard = treeGuards.get(mirror);
  if (!guard) treeGuards.set(mirror, (guard = new TreeGuard()));
  return guard;
}

/** A repository the worker runs git in: a bare one (the mirror) or a git dir with its work tree. */
export interface Repo {
  gitDir: string;
  workTree?: string;
}

/** Settings that override anything a repository's own config could say. */
const SAFE_CONFIG = [
  'core.fsmonitor=false',
  'core.hooksPath=/dev/null',
  'core.sshCommand=ssh',
  'protocol.allow=never',
  'protocol.file.allow=always',
  'protocol.https.allow=always',
  'protocol.http.allow=always',
  'protocol.ssh.allow=always',
].flatMap((kv) => ['-c', kv]);

/** The worker's environment without anything that would point git elsewhere than where we say. */
function gitEnv(repo: Repo): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^GIT_/.test(k)) env[k] = v;
  return {
    ...env,
    GIT_DIR: repo.gitDir,
    ...(repo.workTree ? { GIT_WORK_TREE: repo.workTree } : {}),
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_NO_REPLACE_OBJECTS: '1',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: '',
    SSH_ASKPASS: '',
  };
}

const asRepo = (repo: Repo | string): Repo => (typeof repo === 'string' ? { gitDir: repo } : repo);

/**
 * Runs git where the exit status *is* the answer (merge, merge-base --is-ancestor, push --force-with-lease).
 * A string names a bare repository (the mirror).
 *
 * Git runs through execFile rather than simple-git on purpose: simple-git waits a fixed 50 ms after any command
 * that prints nothing (a fetch with nothing new, worktree prune, clean, a log that finds no match) — several such
 * commands sit on every bead's critical path — and it treats a non-zero exit with an empty stderr as success.
 */
export function gitStatus(
  repo: Repo | string,
  args: string[],
  options: { env?: Record<string, string>; input?: string } = {},
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const r = asRepo(repo);
  // From the small helper process: a spawn from the worker's own (large) process blocks its thread for milliseconds.
  return spawner.run({
    file: 'git',
    args: [...SAFE_CONFIG, ...args],
    cwd: r.workTree ?? r.gitDir,
    env: { ...gitEnv(r), ...options.env },
    input: options.input,
  });
}

/** Runs git and returns its stdout; a non-zero exit is an error naming the command and git's message. */
export async function git(
  repo: Repo | string,
  args: string[],
  options: {
    env?: Record<string, string>;
    input?: string;
    /** The repository whose refs the command updates: stale locks a killed git left there are removed (clearingStaleRefLocks). */
    clearStaleLocksIn?: string;
  } = {},
): Promise<string> {
  const { clearStaleLocksIn, ...run } = options;
  const status = () => gitStatus(repo, args, run);
  const { ok, stdout, stderr } = await (clearStaleLocksIn
    ? clearingStaleRefLocks(clearStaleLocksIn, status)
    : status());
  const r = asRepo(repo);
  if (!ok) {
    // Named by its command, after any `-c <setting>` in front of it.
    let command = 0;
    while (args[command] === '-c') command += 2;
    throw new Error(
      `git ${args.slice(command, command + 2).join(' ')} failed in ${r.workTree ?? r.gitDir}: ${(stderr.trim() || stdout.trim()).slice(0, 2000) || 'no output'}`,
    );
  }
  return stdout;
}

/**
 * How old the lock of a ref in a rig's local repository must be to be taken for one a killed git left behind. git
 * holds a ref's lock for the moment of its update, but a git killed meanwhile (a host that died mid-push, with the
 * receive-pack it ran in the repository) leaves it there, and every later update of that ref fails on it for good.
 */
export const STALE_REF_LOCK_MS = 60_000;

/**
 * An update of a repository's refs (a push into the rig's repository, a fetch into the mirror), tried once more when
 * it failed on locks that a killed git left in a local repository (an absolute path: on a server, its locks are its
 * own): the locks its failure names (`Unable to create '<path>.lock': File exists`) are removed when they are regular
 * files inside the repository, older than STALE_REF_LOCK_MS, each said in a process warning. A younger lock is another
 * git's: the failure is left to its caller's retries, by which time a lock nobody removes has aged.
 */
export async function clearingStaleRefLocks(
  repo: string,
  update: () => Promise<{ ok: boolean; stdout: string; stderr: string }>,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const first = await update();
  if (first.ok) return first;
  const removed = removeStaleRefLocks(repo, first.stderr);
  if (!removed.length) return first;
  process.emitWarning(`removed ref locks a killed git left in ${repo}, and tried again: ${removed.join(', ')}`);
  return update();
}

/** The lock files a failed git command says another git holds (`Unable to create '<path>.lock': File exists`). */
export const heldLocks = (stderr: string): string[] =>
  [...stderr.matchAll(/Unable to create '([^'\n]+\.lock)': File exists/g)].map((m) => m[1]!);

function removeStaleRefLocks(repo: string, stderr: string): string[] {
  if (!isAbsolute(repo) || !existsSync(repo)) return [];
  const root = realpathSync(repo);
  const now = Date.now();
  const removed: string[] = [];
  for (const named of heldLocks(stderr)) {
    const path = resolve(named);
    try {
      const inside = relative(root, realpathSync(dirname(path)));
      if (inside.startsWith('..') || isAbsolute(inside)) continue;
      const st = lstatSync(path);
      if (!st.isFile() || now - st.mtimeMs < STALE_REF_LOCK_MS) continue;
      unlinkSync(path);
      removed.push(path);
    } catch {
      // Gone meanwhile, or not ours to judge: the push's failure stands.
    }
  }
  return removed;
}

/** The git credential helper the worker's own git runs with: the host's store (activities/credentials.ts). */
const credentialHelper = (home: string) => `store --file=${hostCredentialsFile(home)}`;

/**
 * Makes sure the rig's mirror exists and has fetched the repository's branches as `origin/*`. The host's
 * credential store (`gt credential add`) answers for the mirror's fetches and pushes; agents never see it.
 */
export function syncMirror(rig: string, repo: string, home: string): Promise<string> {
  const dir = paths.mirror(rig, home);
  // Runs starting together (the beads a batch's merge unblocked) share one fetch: one that had not begun when they
  // asked brings them everything that was there when they did.
  const waiting = waitingFetches.get(dir);
  if (waiting) return waiting;
  const fetched = withLock(dir, async () => {
    waitingFetches.delete(dir);
    if (!existsSync(join(dir, 'HEAD'))) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      await git(dir, [...INIT, '--bare']);
      // Sets the fetch refspec +refs/heads/*:refs/remotes/origin/*.
      await git(dir, ['remote', 'add', 'origin', repo]);
      await git(dir, ['config', 'user.name', 'Gas Town Refinery']);
      await git(dir, ['config', 'user.email', 'refinery@gastown.local']);
      await git(dir, ['config', 'credential.helper', credentialHelper(home)]);
    }
    await git(dir, ['fetch', '--prune', 'origin'], { clearStaleLocksIn: dir });
    return dir;
  });
  waitingFetches.set(dir, fetched);
  return fetched;
}

/**
 * The rig's mirror, fetched only when it lacks one of `needs` (commit ids, or refs such as `refs/remotes/origin/main`):
 * every fetch is a round trip to the repository, and on a rig with many branches the slowest git step of a hand-off.
 * What a skipped fetch can leave stale is the target: the refinery's compare-and-swap push catches a target that moved
 * meanwhile (and fetches then), so only a reader that must see the newest target (a run's starting point) fetches
 * always. Without a fetch, `ids` are the commits `needs` named when read, so a caller need not read them again.
 */
export async function mirrorWith(
  rig: string,
  repo: string,
  home: string,
  needs: string[],
): Promise<{ mirror: string; fetched: boolean; ids?: string[] }> {
  const mirror = paths.mirror(rig, home);
  if (existsSync(join(mirror, 'HEAD'))) {
    const ids = await commitIds(mirror, needs);
    if (ids.every((id) => id !== undefined)) return { mirror, fetched: false, ids };
  }
  return { mirror: await syncMirror(rig, repo, home), fetched: true };
}

/**
 * The rig's mirror, fetched only when its `origin/<branch>` does not hold every one of `commits` already. For a run's
 * start: what the run must build on is its dependencies' merges, which this host's refinery pushed from this mirror
 * (a push that lands moves the mirror's `origin/<branch>` too). Anything else stale is what a fetch a moment earlier
 * would have left stale as well; the refinery merges onto the newest target either way. One git process instead of a
 * fetch's round trip to the repository and the mirror's lock; a commit the mirror lacks (another host merged it, or
 * the target was rewritten) fails the look, and the mirror fetches as before.
 */
export async function mirrorHolding(
  rig: string,
  repo: string,
  home: string,
  branch: string,
  commits: string[],
): Promise<{ mirror: string; fetched: boolean }> {
  const mirror = paths.mirror(rig, home);
  // A name rev-list would read as a range or a reflog entry is not looked up (no valid branch is one).
  const plain = BranchName.safeParse(branch).success && !branch.includes('..');
  if (plain && commits.length > 0 && existsSync(join(mirror, 'HEAD'))) {
    // Counts the commits reachable from `commits` but not from the branch: none when the branch holds them all.
    const beyond = await gitStatus(mirror, [
      'rev-list',
      '--count',
      ...commits,
      '--not',
      `refs/remotes/origin/${branch}`,
    ]);
    if (beyond.ok && beyond.stdout.trim() === '0') return { mirror, fetched: false };
  }
  return { mirror: await syncMirror(rig, repo, home), fetched: true };
}

/** The commit each of `revs` (commit ids or refs) names in the repository, `undefined` where it holds none. */
export async function commitIds(repo: string, revs: string[]): Promise<(string | undefined)[]> {
  if (revs.length === 0) return [];
  const out = await git(repo, ['cat-file', '--batch-check=%(objectname) %(objecttype)'], {
    input: revs.map((r) => `${r}^{commit}`).join('\n') + '\n',
  });
  const lines = out.split('\n');
  return revs.map((_, i) => /^([0-9a-f]{40}) commit$/.exec(lines[i] ?? '')?.[1]);
}

/** Which of `revs` (commit ids or refs) the repository does not hold as commits (one git process for all of them). */
export async function missingCommits(mirror: string, revs: string[]): Promise<string[]> {
  const ids = await commitIds(mirror, revs);
  return revs.filter((_, i) => ids[i] === undefined);
}

export async function remoteBranchSha(mirror: string, branch: string): Promise<string | null> {
  const r = await gitStatus(mirror, ['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${branch}^{commit}`]);
  return r.ok ? r.stdout.trim() : null;
}

/**
 * How many work tree entries the mirror may list before a candidate's creation prunes the stale ones (those of removed
 * trees): a prune is a git process under the mirror's lock, in every merge section when it ran each time.
 */
const PRUNE_AT = 32;

/**
 * A worker-owned work tree of the mirror (merge candidates) at the commit `startPoint`, always built anew: a gate may
 * have rewritten anything in the old one, its `.git` file included. Its HEAD is detached: a branch per candidate would
 * stay in the mirror after the tree (one per bead and per speculative candidate), and git keeps a branch of a removed
 * tree until its entry is pruned. The entries of removed trees are pruned once there are `PRUNE_AT` entries.
 *
 * The tree is linked as `git worktree add --detach` links it (gitrepository-layout: `worktrees/<id>` with `gitdir`,
 * `commondir` and a detached `HEAD`, and the tree's `.git` file naming it), then filled by one `read-tree`: `worktree
 * add` runs two git processes of its own for the same (`update-ref` and `reset --hard`), three in all, on every merge
 * section's path. The entry is the tree's name, taken over from a removed tree of the same path (whose `gitdir` names
 * this path), or with a number added while a live tree elsewhere holds the name. The worker names the entry
 * explicitly from then on and never reads the tree's `.git` file, which a gate may rewrite.
 */
export async function createCandidateTree(mirror: string, path: string, startPoint: string): Promise<Repo> {
  if (!CommitId.safeParse(startPoint).success)
    throw new Error(`a candidate tree starts at a commit id, not '${startPoint}'`);
  return withLock(mirror, () =>
    treeGuard(mirror).createTree(async () => {
      rmSync(path, { recursive: true, force: true });
      const entries = join(mirror, 'worktrees');
      if (existsSync(entries) && readdirSync(entries).length >= PRUNE_AT) await git(mirror, ['worktree', 'prune']);
      const gitDir = join(entries, treeEntry(entries, path));
      rmSync(gitDir, { recursive: true, force: true });
      mkdirSync(gitDir, { recursive: true });
      mkdirSync(path, { recursive: true });
      writeFileSync(join(gitDir, 'commondir'), '../..\n');
      writeFileSync(join(gitDir, 'gitdir'), `${join(path, '.git')}\n`);
      writeFileSync(join(gitDir, 'HEAD'), `${startPoint}\n`);
      writeFileSync(join(path, '.git'), `gitdir: ${gitDir}\n`);
      const tree = { gitDir, workTree: path };
      await git(tree, ['read-tree', '-u', '--reset', startPoint]);
      return tree;
    }),
  );
}

/** The id of the mirror's entry for a tree at `path` (see createCandidateTree). */
function treeEntry(entries: string, path: string): string {
  const own = join(path, '.git');
  for (let n = 0; ; n++) {
    const id = n ? `${basename(path)}${n}` : basename(path);
    let named: string;
    try {
      named = readFileSync(join(entries, id, 'gitdir'), 'utf8').trim();
    } catch {
      return id;
    }
    if (named === own || !existsSync(named)) return id;
  }
}

/**
 * Deletes a work tree of the mirror without letting git read anything inside it, in the background from the rig's
 * trash (`trash`, activities/trash.ts): the section that built it answers without waiting. Its entry in the mirror goes
 * at a later candidate's prune (under the mirror's lock): pruning here put a git process, and a wait for the lock
 * behind a fetch or a push, at the end of every merge section.
 */
export function removeCandidateTree(path: string, trash: string): void {
  discardTree(path, trash);
}

/**
 * A repository of the run's own at `workTree` (its git dir inside, writable by the agent), checked out at `sha`
 * on `branch` (or detached). It borrows the mirror's objects read-only through alternates and has the mirror as
 * `origin` with every `origin/*` branch, so an agent can fetch the latest target from it, but it cannot write the
 * mirror, another run's repository or the rig's repository: there is nothing to push with.
 */
export async function createRunRepo(
  mirror: string,
  workTree: string,
  checkout: { sha: string | ((originBranch: (name: string) => string | undefined) => string); branch?: string },
  /** Where an earlier run's tree at `workTree` goes to be deleted in the background (activities/trash.ts). */
  trash: string,
): Promise<string> {
  discardTree(workTree, trash);
  mkdirSync(workTree, { recursive: true });
  const repo = { gitDir: join(workTree, '.git'), workTree };
  const [, refs] = await Promise.all([
    git(repo, INIT),
    git(mirror, ['for-each-ref', '--format=%(objectname) %(refname)', 'refs/remotes/origin/']),
  ]);
  // A start chosen from the mirror's branches is read from this listing (a rev-parse fewer before every run's start).
  const sha =
    typeof checkout.sha === 'string'
      ? checkout.sha
      : checkout.sha((name) => {
          const line = refs.split('\n').find((l) => l.endsWith(` refs/remotes/origin/${name}`));
          return line?.slice(0, line.indexOf(' '));
        });
  writeFileSync(join(repo.gitDir, 'objects', 'info', 'alternates'), `${join(mirror, 'objects')}\n`);
  // The remote, appended to the config git just wrote (what `remote add` and `config` would write: two git processes
  // fewer on every run's start).
  appendFileSync(
    join(repo.gitDir, 'config'),
    `[remote "origin"]\n\turl = ${configString(mirror)}\n\tfetch = +refs/remotes/origin/*:refs/remotes/origin/*\n`,
  );
  // Every origin/* branch of the mirror, as one packed-refs file rather than `update-ref --stdin` writing a file per
  // branch (a process and ≈ 20 ms on every run's start, growing with the rig's branches). Without a header git reads
  // it as unsorted and unpeeled, so it sorts and peels itself.
  if (refs.trim()) writeFileSync(join(repo.gitDir, 'packed-refs'), refs);
  if (checkout.branch) await git(repo, ['checkout', '--quiet', '-B', checkout.branch, sha]);
  else await git(repo, ['checkout', '--quiet', '--detach', sha]);
  return sha;
}

/**
 * `git init` without a template: git's default template is 14 sample hooks, a description and an exclude file, copied
 * into every new repository (≈ 15 ms of a 20 ms init here, twice on every bead's critical path), and a host's
 * `init.templateDir` could plant live hooks in the mirror, a quarantine or a run's repository. Without one, git still
 * makes what a repository needs (HEAD, config, objects/info, objects/pack, refs).
 */
const INIT = ['init', '--quiet', '--template='];

/** A value as a quoted string of git's config syntax. */
const configString = (value: string) =>
  `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n').replaceAll('\t', '\\t')}"`;

/** Why a run's result cannot be taken, said to the agent as feedback. */
export class RunRepoRejected extends Error {}

const OBJECT_ID = /^[0-9a-f]{40}$/;

/**
 * Reads a file an agent may have planted under `root`: every component from `root` down must be a real directory
 * and the file a regular one of bounded size (a link anywhere on the way could point the worker at any file), or
 * nothing is there. Its content is never echoed back to the agent.
 */
function readAgentFile(root: string, parts: string[], maxBytes: number): string | undefined {
  let path = root;
  for (const [i, part] of parts.entries()) {
    path = join(path, part);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return undefined;
    const last = i === parts.length - 1;
    if (last ? !st.isFile() : !st.isDirectory())
      throw new RunRepoRejected(`${path} is not a regular ${last ? 'file' : 'directory'}`);
    if (last && st.size > maxBytes) throw new RunRepoRejected(`${path} is larger than ${maxBytes} bytes`);
  }
  return readFileSync(path, 'utf8');
}

/** The object id `refs/heads/<branch>` names in the run's repository, read as text (loose ref, then packed-refs). */
function readBranchTip(gitDir: string, branch: string): string | undefined {
  const loose = readAgentFile(gitDir, ['refs', 'heads', ...branch.split('/')], 4096)?.trim();
  if (loose !== undefined) {
    if (!OBJECT_ID.test(loose)) throw new RunRepoRejected(`refs/heads/${branch} does not hold a commit id`);
    return loose;
  }
  const packed = readAgentFile(gitDir, ['packed-refs'], 64 * 1024 * 1024) ?? '';
  for (const line of packed.split('\n')) {
    const [sha, ref] = line.split(' ');
    if (ref === `refs/heads/${branch}` && sha && OBJECT_ID.test(sha)) return sha;
  }
  return undefined;
}

/**
 * The object store must be plain files and directories (a link could make the worker read another repository's
 * objects on the agent's behalf), and it may borrow from the mirror only.
 */
function checkObjectStore(objects: string, mirror: string): void {
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (!entry.isFile())
        throw new RunRepoRejected(`the run's object store holds ${p}, which is not a regular file`);
    }
  };
  const top = lstatSync(objects, { throwIfNoEntry: false });
  if (!top?.isDirectory()) throw new RunRepoRejected(`the run's repository has no object directory at ${objects}`);
  walk(objects);
  const alternates = (readAgentFile(objects, ['info', 'alternates'], 4096) ?? '').split('\n').filter(Boolean);
  if (alternates.some((a) => a !== join(mirror, 'objects')))
    throw new RunRepoRejected(
      `the run's repository borrows objects from elsewhere than the rig mirror (${alternates.join(', ')})`,
    );
  if (existsSync(join(objects, 'info', 'http-alternates')))
    throw new RunRepoRejected("the run's repository names http alternates");
}

export interface ImportedBranch {
  headSha: string;
  commitsAhead: number;
  /** Only looked at when nothing is ahead: whether the agent left its work uncommitted (said in the feedback). */
  uncommittedChanges: boolean;
  /**
   * Nothing is ahead because the refinery already merged this head as the round's merge request (`mrId`): the target's
   * commit that did. A ticket handed over by a run's supervision whose answer the bead never heard (an attempt the
   * server gave up on, in a process that does not know of its retry) merges before the bead's own import.
   */
  mergedAs?: string;
}

/** A quarantine opened for an import, and the mirror's commits read for it (undefined for each the mirror lacks). */
export interface OpenQuarantine {
  quarantine: string;
  found: (string | undefined)[];
}
/** An `openQuarantine` begun before its import; undefined when it failed. */
export type OpenedQuarantine = Promise<OpenQuarantine | undefined>;

/**
 * An import's first step, which reads nothing of the agent's: its quarantine created empty, and the mirror's commits
 * the import looks up (the target, the run's starting commit). A supervision begins it as the gateway accepts the
 * run's `gt done`, while the agent is still exiting (activities/agent-runs.ts), in a quarantine of its own.
 */
export async function openQuarantine(o: {
  mirror: string;
  quarantine: string;
  targetBranch: string;
  baseSha?: string;
}): Promise<OpenQuarantine> {
  rmSync(o.quarantine, { recursive: true, force: true });
  mkdirSync(o.quarantine, { recursive: true });
  // Looked up beside the quarantine's creation (on every bead's critical path).
  const [found] = await Promise.all([
    commitIds(o.mirror, importReads(o)),
    git({ gitDir: o.quarantine }, [...INIT, '--bare']),
  ]);
  return { quarantine: o.quarantine, found };
}

/** What an import reads from the mirror: the target as the mirror has it, and the run's starting commit. */
const importReads = (o: { targetBranch: string; baseSha?: string }) => [
  `refs/remotes/origin/${o.targetBranch}`,
  ...(o.baseSha ? [o.baseSha] : []),
];

/**
 * Takes the result of a finished run: the tip of `branch` in the run's repository at `workTree`, validated in a
 * worker-owned quarantine repository (every object present, descending from the run's base), brought into the
 * mirror and pushed as `branch` to the rig's repository. Nothing the agent wrote is executed or used as config.
 */
export async function importRunBranch(options: {
  mirror: string;
  /** The rig's repository, as the mirror's `origin` names it (rig.repo). */
  repo: string;
  workTree: string;
  branch: string;
  targetBranch: string;
  baseSha?: string;
  quarantine: string;
  /** GT_HOME: its credential store answers the branch's push (the mirror's fetches use it too). */
  home: string;
  /** Where the quarantine goes to be deleted in the background once the branch is taken (activities/trash.ts). */
  trash: string;
  /**
   * Fetches the mirror. Called only when it is missing, or lacks the target or the run's starting commit (the run
   * started from it, so it seldom does): a target moved meanwhile changes nothing here, and the refinery merges onto
   * the newest target anyway.
   */
  syncMirror: () => Promise<unknown>;
  /** The round's merge request: a head nothing is ahead of is looked for among its merges (`mergedAs`). */
  mrId?: string;
  /**
   * `openQuarantine` begun earlier for this import (in a quarantine of its own, then used instead of `quarantine`, and
   * discarded with the import); undefined (it failed): the import opens `quarantine` itself.
   */
  opened?: OpenedQuarantine;
}): Promise<ImportedBranch> {
  const { mirror, workTree, branch } = options;
  const gitDir = join(workTree, '.git');
  let quarantine = options.quarantine;
  try {
    if (!lstatSync(gitDir, { throwIfNoEntry: false })?.isDirectory())
      throw new RunRepoRejected(`${gitDir} is not the run's repository any more`);
    const early = await options.opened;
    if (early) quarantine = early.quarantine;
    else if (!existsSync(join(mirror, 'HEAD'))) await options.syncMirror();
    checkObjectStore(join(gitDir, 'objects'), mirror);
    const q = { gitDir: quarantine };
    let { found } = early ?? (await openQuarantine(options));
    if (found.includes(undefined)) {
      await options.syncMirror();
      found = await commitIds(mirror, importReads(options));
    }
    const [targetSha] = found;
    if (!targetSha) throw new Error(`target branch '${options.targetBranch}' is missing from the mirror`);
    writeFileSync(
      join(q.gitDir, 'objects', 'info', 'alternates'),
      `${join(gitDir, 'objects')}\n${join(mirror, 'objects')}\n`,
    );
    const tip = readBranchTip(gitDir, branch) ?? options.baseSha ?? targetSha;
    // Three read-only looks at the quarantine, side by side (they are on every bead's critical path, where each git
    // process costs milliseconds); judged in this order, so a later look failing because an earlier one would have is
    // never what the agent is told.
    const [walk, buildsOnBase, marked] = await Promise.all([
      // The branch's commits ahead of the target and every object they add, all there (a missing one would only
      // surface in the mirror or the remote). Without `^{commit}` a tree or a blob would be walked as well.
      gitStatus(q, ['rev-list', '--objects', '--missing=error', `${tip}^{commit}`, '--not', targetSha]),
      options.baseSha ? gitStatus(q, ['merge-base', '--is-ancestor', options.baseSha, tip]) : undefined,
      // The refinery's mark of a merged request: on the target it says "this MR is merged" (findMergedCommit), so an
      // agent's commit carrying another MR's mark, once merged, would close that MR without its work.
      gitStatus(q, ['rev-list', '-1', '--fixed-strings', `--grep=${MERGE_TRAILER_KEY}`, tip, '--not', targetSha]),
    ]);
    // The walk fails for a tip that is not a commit and for a missing object: only then is it asked which.
    if (!walk.ok && !(await gitStatus(q, ['cat-file', '-e', `${tip}^{commit}`])).ok)
      throw new RunRepoRejected(`${branch} names ${tip}, which is not a commit of the run's repository`);
    if (buildsOnBase && !buildsOnBase.ok) {
      throw new RunRepoRejected(
        `${branch} (${tip}) does not build on the run's starting commit ${options.baseSha}; commit on top of it (merging ${options.targetBranch} in is fine)`,
      );
    }
    if (!walk.ok) throw new RunRepoRejected(`${branch} is missing objects: ${walk.stderr.trim().slice(0, 500)}`);
    if (!marked.ok)
      throw new Error(`git rev-list --grep failed in ${q.gitDir}: ${marked.stderr.trim().slice(0, 2000)}`);
    if (marked.stdout.trim())
      throw new RunRepoRejected(
        `commit ${marked.stdout.trim()} of ${branch} has "${MERGE_TRAILER_KEY}" in its message, the refinery's own mark of a merged request; reword it (git commit --amend, or git rebase -i for an earlier commit)`,
      );
    // The walk names each commit alone on its line, every tree and blob followed by a space and its path (git cuts a
    // path at its first newline, so no file name the agent chose adds a line).
    const commitsAhead = walk.stdout.split('\n').filter((line) => line && !line.includes(' ')).length;
    if (commitsAhead === 0) {
      const mergedAs = options.mrId && (await findMergedCommit(mirror, targetSha, options.mrId, tip));
      if (mergedAs) return { headSha: tip, commitsAhead, uncommittedChanges: false, mergedAs };
      // A fresh index in the quarantine, compared with the agent's files (read as data; attributes name no driver here).
      const index = { GIT_INDEX_FILE: join(q.gitDir, 'index') };
      const tree = { gitDir: q.gitDir, workTree };
      await git(tree, ['read-tree', tip], { env: index });
      const status = await git(tree, ['status', '--porcelain', '--untracked-files=normal'], { env: index });
      // Each line's second column compares the agent's files with that index ('?' untracked). The first compares the
      // index with the quarantine's HEAD, which is unborn: every file reads as added there, whatever the agent did.
      const uncommittedChanges = status.split('\n').some((line) => line.length > 1 && line[1] !== ' ');
      return { headSha: tip, commitsAhead, uncommittedChanges };
    }
    // Side by side, from the quarantine, which reads the same objects as both: the fetch into the mirror (the merge's
    // source) and the branch's push to the repository. The fetch brings objects only (no FETCH_HEAD) and the push
    // names the repository rather than a remote, so neither writes a ref of the mirror (a run's start fetches the
    // `origin/*` refs anyway): other imports' fetches and the mirror's own run beside it, only a candidate tree's
    // creation does not (TreeGuard). Both are awaited before the quarantine goes, whichever fails.
    const [fetched, pushed] = await Promise.allSettled([
      treeGuard(mirror).fetch(() =>
        git(mirror, ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', q.gitDir, tip]),
      ),
      git(
        q,
        [
          '-c',
          `credential.helper=${credentialHelper(options.home)}`,
          'push',
          '--quiet',
          '--force',
          '--',
          options.repo,
          `${tip}:refs/heads/${branch}`,
        ],
        { clearStaleLocksIn: options.repo },
      ),
    ]);
    for (const r of [fetched, pushed]) if (r.status === 'rejected') throw r.reason;
    return { headSha: tip, commitsAhead, uncommittedChanges: false };
  } finally {
    discardTree(quarantine, options.trash);
  }
}

const MERGE_TRAILER_KEY = 'Gt-Merge-Request:';

/**
 * The trailer that marks a commit on the target as the result of one merge request: the idempotency key. Only the
 * refinery writes it: an import refuses a branch whose commits carry its key.
 */
export const mergeTrailer = (mrId: string, headSha: string) => `${MERGE_TRAILER_KEY} ${mrId}@${headSha}`;

/**
 * Finds the commit on `tip`'s history (a commit or a ref of the mirror) that merged this MR at this head, if any. The
 * search stops at the head's own history: that commit came after the head, so it is never there, and without the stop
 * every merge of an MR not merged yet read the target's whole history (0.5–0.7 s on a repository of 100,000 commits).
 */
export async function findMergedCommit(
  mirror: string,
  tip: string,
  mrId: string,
  headSha: string,
): Promise<string | null> {
  const out = await git(mirror, [
    'log',
    '-1',
    '--format=%H',
    '--fixed-strings',
    `--grep=${mergeTrailer(mrId, headSha)}`,
    // A head the mirror lacks stops nothing (the merge turns the MR back for it).
    '--ignore-missing',
    tip,
    '--not',
    headSha,
  ]);
  return out.trim() || null;
}

/**
 * What stands in the way of a rig on a local repository, if anything, as one line that says what to do: a path that
 * is not a repository, a missing target branch, or a working copy with the target branch checked out (git refuses
 * pushes to it unless the user chose `receive.denyCurrentBranch=updateInstead`).
 */
export async function localRepositoryProblem(path: string, branch: string): Promise<string | undefined> {
  const bare = await gitStatus({ gitDir: path }, ['rev-parse', '--is-bare-repository']);
  let repo: Repo = { gitDir: path };
  if (!bare.ok || bare.stdout.trim() !== 'true') {
    const gitDir = join(path, '.git');
    if (!(await gitStatus({ gitDir }, ['rev-parse', '--git-dir'])).ok) return `${path} is not a git repository`;
    repo = { gitDir, workTree: path };
    const head = (await gitStatus(repo, ['symbolic-ref', '--quiet', 'HEAD'])).stdout.trim();
    const policy = (await gitStatus(repo, ['config', '--get', 'receive.denyCurrentBranch'])).stdout.trim();
    if (head === `refs/heads/${branch}` && policy !== 'updateInstead' && policy !== 'ignore' && policy !== 'false') {
      return (
        `${path} is a working copy with ${branch} checked out, and git refuses pushes to a checked-out branch: point the rig at a bare clone ` +
        `(git clone --bare ${path} ${path}.git, then push from your working copy as usual), or let pushes update it with ` +
        `git -C ${path} config receive.denyCurrentBranch updateInstead`
      );
    }
  }
  if (!(await gitStatus(repo, ['rev-parse', '--verify', '--quiet', `refs/heads/${branch}^{commit}`])).ok) {
    return `${path} has no branch ${branch}: create it (an initial commit) or give the rig another --branch`;
  }
  return undefined;
}
