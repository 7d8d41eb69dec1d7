/**
 * A merged request's branch deleted from the rig's repository, in batches, off the merge's path.
 *
 * Every round of a bead publishes its branch to the rig's repository (`gt/<bead>`, activities/git.ts
 * importRunBranch), and nothing removed it once merged: a repository that had merged 300 beads held 300 such branches,
 * and every push to it paid for each of them (receive-pack's connectivity check starts from every ref, and the pusher
 * weighs every ref the repository advertises), ≈ 45 ms more per push at 300 branches here (docs/performance.md). A
 * town merges for months.
 *
 * Invariants:
 * - Only a branch whose request this worker merged directly is queued, with the head that merged (a pull request's
 *   branch is the forge's business). Its deletion is leased to that head, so a branch pushed again since (a bead
 *   reopened and run again) is kept.
 * - Best effort: no merge waits for a deletion, and one that fails (or a worker killed with branches queued: one that
 *   stops flushes them first, worker/worker.ts) leaves those branches in the repository, as before this existed. The
 *   merge's record is the target's trailer (`Gt-Merge-Request:`), never the branch, so a retried section still finds
 *   its earlier merge.
 * - One push per batch, from the mirror to the repository's address (so no ref of the mirror is written and no lock
 *   taken): the mirror's `origin/<branch>` goes at its next fetch (`--prune`).
 */
import { log } from '@temporalio/activity';
import type { MergeTicket } from '../domain/refinery';
import type { RigConfig } from '../domain/rig';
import { paths } from '../host/home';
import { clearingStaleRefLocks, gitStatus } from './git';

/** Branches of one rig waiting for deletion: branch → the head that merged. */
interface Waiting {
  repo: string;
  heads: Map<string, string>;
  quiet?: NodeJS.Timeout;
}

export interface SweepResult {
  deleted: string[];
  /** Moved since (pushed again) or gone already: left as they are. */
  kept: string[];
}

export class MergedBranchSweeper {
  private readonly waiting = new Map<string, Waiting>();
  /** Each rig's sweep in progress: the next waits for it (one push at a time per repository). */
  private readonly sweeping = new Map<string, Promise<unknown>>();
  private readonly batch: number;
  private readonly quietMs: number;

  constructor(
    private readonly options: {
      gtHome: string;
      /** A rig's branches are pushed as soon as this many wait (16: a wide convoy's merges). */
      batch?: number;
      /** …or once no merge of the rig has queued one for this long. */
      quietMs?: number;
      /** Told of each sweep's result (tests). */
      onSwept?: (rig: string, result: SweepResult) => void;
    },
  ) {
    this.batch = options.batch ?? 16;
    this.quietMs = options.quietMs ?? 2_000;
  }

  /** The tickets of a direct merge that landed (or had landed before): their branches go in a later sweep. */
  merged(rig: RigConfig, tickets: readonly Pick<MergeTicket, 'branch' | 'headSha'>[]): void {
    let w = this.waiting.get(rig.name);
    if (!w) this.waiting.set(rig.name, (w = { repo: rig.repo, heads: new Map() }));
    w.repo = rig.repo;
    for (const t of tickets) w.heads.set(t.branch, t.headSha);
    clearTimeout(w.quiet);
    if (w.heads.size >= this.batch) void this.sweep(rig.name);
    else (w.quiet = setTimeout(() => void this.sweep(rig.name), this.quietMs)).unref();
  }

  /** Deletes what waits now, for every rig; resolves once those pushes ended. */
  async flush(): Promise<void> {
    await Promise.all([...this.waiting.keys()].map((rig) => this.sweep(rig)));
  }

  private sweep(rig: string): Promise<unknown> {
    const w = this.waiting.get(rig);
    if (!w?.heads.size) return this.sweeping.get(rig) ?? Promise.resolve();
    clearTimeout(w.quiet);
    const heads = [...w.heads];
    w.heads = new Map();
    const next = (this.sweeping.get(rig) ?? Promise.resolve())
      .then(() => deleteMergedBranches(paths.mirror(rig, this.options.gtHome), w.repo, heads))
      .then(
        (result) => {
          say('info', 'merged branches deleted', { rig, ...result });
          this.options.onSwept?.(rig, result);
        },
        (err: unknown) => say('warn', 'could not delete merged branches', { rig, error: String(err) }),
      );
    this.sweeping.set(rig, next);
    void next.then(() => this.sweeping.get(rig) === next && this.sweeping.delete(rig));
    return next;
  }
}

/**
 * The log of the merge whose activity began the sweep (its asynchronous context carries over to the sweep, even once
 * the activity has ended), else, for a failure, a process warning (a flush from outside any activity).
 */
function say(level: 'info' | 'warn', message: string, meta: Record<string, unknown>): void {
  try {
    log[level](message, meta);
  } catch {
    if (level === 'warn') process.emitWarning(`${message}: ${JSON.stringify(meta)}`, 'GtBranchWarning');
  }
}

/**
 * One push deleting `heads` (branch → merged head) from `repo`, each only while it still names that head. Branches
 * whose lease fails (moved or already gone) are reported as kept; anything else that fails is an error.
 */
export async function deleteMergedBranches(
  mirror: string,
  repo: string,
  heads: readonly (readonly [string, string])[],
): Promise<SweepResult> {
  const push = await clearingStaleRefLocks(repo, () =>
    gitStatus(mirror, [
      'push',
      '--porcelain',
      ...heads.map(([branch, sha]) => `--force-with-lease=refs/heads/${branch}:${sha}`),
      '--',
      repo,
      ...heads.map(([branch]) => `:refs/heads/${branch}`),
    ]),
  );
  // Porcelain: one line per ref, `<flag>\t<from>:<to>\t<summary>`: `-` a deletion done, `!` one refused (its <from>
  // then reads `(delete)`).
  const lines = push.stdout.split('\n').filter((l) => /^[-!]\t[^\t:]*:refs\/heads\/[^\t]+\t/.test(l));
  const branchOf = (l: string) => l.split('\t')[1]!.replace(/^[^:]*:refs\/heads\//, '');
  const deleted = lines.filter((l) => l.startsWith('-')).map(branchOf);
  const kept = lines.filter((l) => l.startsWith('!')).map(branchOf);
  if (!push.ok && deleted.length + kept.length < heads.length)
    throw new Error(`git push of ${heads.length} deletions to ${repo} failed: ${push.stderr.trim().slice(0, 1000)}`);
  return { deleted, kept };
}
