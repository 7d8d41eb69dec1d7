/**
 * A merge request's candidate built ahead of its merge section, by the host that published its branch.
 *
 * As a run's supervision publishes the finished branch and hands the round's ticket to the refinery
 * (activities/agent-runs.ts), the refinery's workflow task and the hand-off of its merge section follow, and only then
 * does the section build the candidate: a look at the mirror, a work tree at the target, the merge. When no section of
 * the rig runs in this process, the supervision begins that build at once, beside the hand-off, and the section takes
 * it for its first ticket on the target it finds (docs/performance.md, the thirty-first pass).
 *
 * Invariants:
 * - A cache, never a decision: the section still runs the gates on exactly the tree it pushes and moves the target by
 *   compare-and-swap. It takes a build only for its first ticket (same rig, merge strategy, merge request, head and
 *   target branch) on the target commit its mirror names; anything else is discarded, and the section builds as it
 *   always did.
 * - No code of the agent's runs ahead: the build is git's merge of the published head in a tree of the worker's. The
 *   gates run only in the section.
 * - At most one per rig, in one tree of its own, begun only while no merge section of the rig runs in this process.
 *   One nobody takes (its section ran on another worker, or never) is replaced by the next after `KEEP_MS`; what a
 *   dead process left there goes when the next build creates its tree.
 * - Process-local: a section on another worker builds for itself.
 */
import type { RigConfig } from '../domain/rig';
import { MergeTicket, type MergeTicketInput } from '../domain/refinery';
import type { Repo } from './git';

/** A single ticket's candidate, merged onto `targetSha` in the tree `candidate`, whose detached HEAD is `candidateSha`. */
export interface BuiltAhead {
  targetSha: string;
  candidate: Repo;
  candidateSha: string;
}

/** How the host builds and discards (activities/merge.ts aheadBuilder). */
export interface AheadBuilder {
  /** The candidate of `ticket` on the mirror's target, or undefined when it cannot be built without a fetch or at all. */
  build(rig: RigConfig, ticket: MergeTicket): Promise<BuiltAhead | undefined>;
  discard(rig: RigConfig, built: BuiltAhead): void;
}

/** How long a build nobody took keeps its rig's place before the next replaces it. */
const KEEP_MS = 30_000;

/** What a candidate is made of: a build is taken only for the very same. */
const recipe = (
  rig: RigConfig,
  t: Pick<MergeTicket, 'mrId' | 'beadId' | 'title' | 'branch' | 'targetBranch' | 'headSha'>,
) =>
  JSON.stringify([
    rig.name,
    rig.repo,
    rig.mergeStrategy,
    t.mrId,
    t.beadId,
    t.title,
    t.branch,
    t.targetBranch,
    t.headSha,
  ]);

interface Pending {
  recipe: string;
  begun: number;
  built: Promise<BuiltAhead | undefined>;
}

export class CandidatesAhead {
  private readonly pending = new Map<string, Pending>();
  private readonly sections = new Map<string, number>();

  constructor(private readonly builder: AheadBuilder) {}

  /**
   * Begins `ticket`'s candidate when its rig merges directly, one section at a time, without a review, and no section
   * of the rig runs here. Never fails: the build's promise (for tests) answers undefined for anything not built.
   */
  begin(rig: RigConfig, ticket: MergeTicketInput): Promise<BuiltAhead | undefined> | undefined {
    if (rig.merge !== 'direct' || rig.reviewer || rig.speculation > 1 || this.sections.get(rig.name)) return undefined;
    const parsed = MergeTicket.safeParse(ticket);
    const earlier = this.pending.get(rig.name);
    if (!parsed.success || (earlier && Date.now() - earlier.begun < KEEP_MS)) return undefined;
    const built = (async () => {
      const left = await earlier?.built;
      if (left) this.builder.discard(rig, left);
      return this.builder.build(rig, parsed.data);
    })().catch(() => undefined); // the section builds for itself, and meets (and reports) the same failure
    this.pending.set(rig.name, { recipe: recipe(rig, parsed.data), begun: Date.now(), built });
    return built;
  }

  /**
   * Runs a merge section of `rig` for `tickets` (queue order) with what was built ahead for its first ticket, if that
   * is it; discards any other build of the rig. While it runs no build of the rig begins here, and the build it was
   * given is discarded as it ends.
   */
  async section<T>(rig: RigConfig, tickets: MergeTicket[], fn: (ahead?: BuiltAhead) => Promise<T>): Promise<T> {
    this.sections.set(rig.name, (this.sections.get(rig.name) ?? 0) + 1);
    let given: BuiltAhead | undefined;
    try {
      const pending = this.pending.get(rig.name);
      this.pending.delete(rig.name);
      const built = await pending?.built;
      if (built && pending!.recipe === recipe(rig, tickets[0]!)) given = built;
      else if (built) this.builder.discard(rig, built);
      return await fn(given);
    } finally {
      if (given) this.builder.discard(rig, given);
      const left = this.sections.get(rig.name)! - 1;
      if (left) this.sections.set(rig.name, left);
      else this.sections.delete(rig.name);
    }
  }
}
