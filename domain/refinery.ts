/**
 * The per-rig merge queue's vocabulary and its pure logic: the order MRs are taken in, and how a batch of MRs
 * is bisected down to its culprits. Pure and deterministic (workflow time is passed in), so the refinery
 * workflow can use it and unit tests can exercise it without a server.
 */
import { z } from 'zod';
import { MergeOutcome } from './outcomes';
import { CAPS, capList, capText, listText } from './caps';
import { PullRequestRef } from './forge';
import { BeadId, CommitId, ConvoyId } from './ids';

export const MergeTicket = z.object({
  mrId: z.string().min(1).max(200),
  beadId: BeadId,
  round: z.number().int().min(1),
  title: z.string().max(500),
  branch: z.string().min(1),
  headSha: CommitId,
  targetBranch: z.string().min(1),
  priority: z.number().int().min(0).max(4).default(2),
  convoyId: ConvoyId.optional(),
  /** Workflow time (ms) the ticket was enqueued: the queue's age component. */
  enqueuedAt: z.number().int().nonnegative(),
  /** Earlier rework rounds of the bead plus failed merge sections of this MR: the (capped) retry penalty. */
  retries: z.number().int().min(0).default(0),
  /** When the ticket's convoy started, if the sender knows; otherwise the refinery uses the first time it saw the convoy. */
  convoyStartedAt: z.number().int().nonnegative().optional(),
  /**
   * Set on a convoy member bead's ticket (never a landing's): the refinery reports the merge to the convoy itself, in
   * the workflow task that learns it, two workflow tasks before the bead could. `retry` is the bead's (`gt bead
   * retry`), so the convoy tells the current run's report from a stale one, as it does the bead's own.
   */
  convoyBead: z.object({ retry: z.number().int().min(1).optional() }).optional(),
});
export type MergeTicket = z.infer<typeof MergeTicket>;
export type MergeTicketInput = z.input<typeof MergeTicket>;
/** A ticket but for its head and the time it is handed over: what a bead's run knows before its agent commits. */
export const MergeTicketTemplate = MergeTicket.omit({ headSha: true, enqueuedAt: true });
export type MergeTicketTemplate = z.input<typeof MergeTicketTemplate>;

/**
 * Merge requests a refinery holds waiting at most. The queue rides in every continue-as-new input (with `seen`), so
 * its length must be bounded like any text: 500 tickets are at most ~0.5 MB. A ticket that finds the queue full is
 * not taken (nor remembered); its merge request announces itself again a while later (REANNOUNCE_MS).
 */
export const MAX_QUEUED_TICKETS = 500;

// --- queue order -------------------------------------------------------------------------------------------

/**
 * Queue score, after Gas Town's: higher goes first.
 *   base + priority·(4 − p) + convoyAge·hours(convoy) + mrAge·hours(MR) − min(retry·retries, maxRetry)
 * Priority dominates; an old convoy slowly outranks newer urgent work so it cannot starve; a bead that keeps
 * coming back loses ground but never more than the cap (it must still land eventually); MR age breaks ties (FIFO).
 */
export const QUEUE_WEIGHTS = {
  base: 1000,
  priority: 100,
  convoyAgePerHour: 10,
  mrAgePerHour: 1,
  retryPenalty: 50,
  maxRetryPenalty: 300,
} as const;

const HOUR_MS = 3_600_000;

export function ticketScore(ticket: MergeTicket, now: number, convoySince?: number, w = QUEUE_WEIGHTS): number {
  const hours = (since: number) => Math.max(0, now - since) / HOUR_MS;
  const convoyStart = ticket.convoyStartedAt ?? convoySince;
  return (
    w.base +
    w.priority * (4 - ticket.priority) +
    (ticket.convoyId && convoyStart !== undefined ? w.convoyAgePerHour * hours(convoyStart) : 0) +
    w.mrAgePerHour * hours(ticket.enqueuedAt) -
    Math.min(w.retryPenalty * ticket.retries, w.maxRetryPenalty)
  );
}

export interface ScoredTicket extends MergeTicket {
  score: number;
}

/** The queue in the order the refinery will take it: score, then age, then MR id (a total, stable order). */
export function orderQueue(
  queue: readonly MergeTicket[],
  now: number,
  convoySince: Readonly<Record<string, number>> = {},
): ScoredTicket[] {
  return queue
    .map((t) => ({ ...t, score: ticketScore(t, now, t.convoyId ? convoySince[t.convoyId] : undefined) }))
    .sort((a, b) => b.score - a.score || a.enqueuedAt - b.enqueuedAt || a.mrId.localeCompare(b.mrId));
}

// --- batching with bisection ---------------------------------------------------------------------------------

/**
 * A batch being merged: `pending` MRs in queue order, and the shortest prefix of them known to fail its gates.
 * Every probe gates "target + the first `size` pending MRs" and, when it passes, lands exactly that tree, so the
 * passing prefix is merged as soon as it is known. A failing probe halves the prefix; when the failing prefix is a
 * single MR, that MR is the culprit. One culprit among N costs 1 + ⌈log₂ N⌉ gate runs (+1 for the rest).
 */
export interface Bisection<T> {
  pending: T[];
  /** Shortest prefix of `pending` whose candidate failed; undefined while nothing is known to fail. */
  failingPrefix?: number;
}

export type BisectionStep<T> = { kind: 'probe'; items: T[] } | { kind: 'culprit'; item: T } | { kind: 'done' };

export const startBisection = <T>(items: T[]): Bisection<T> => ({ pending: [...items] });

export function nextBisectionStep<T>(b: Bisection<T>): BisectionStep<T> {
  if (b.pending.length === 0) return { kind: 'done' };
  if (b.failingPrefix === undefined) return { kind: 'probe', items: b.pending };
  if (b.failingPrefix === 1) return { kind: 'culprit', item: b.pending[0]! };
  return { kind: 'probe', items: b.pending.slice(0, Math.floor(b.failingPrefix / 2)) };
}

/** A probe of the first `size` pending items passed (and landed) or failed. */
export function afterProbe<T>(b: Bisection<T>, size: number, passed: boolean): Bisection<T> {
  if (!passed) return { pending: b.pending, failingPrefix: size };
  const pending = b.pending.slice(size);
  const failingPrefix = b.failingPrefix === undefined ? undefined : b.failingPrefix - size;
  return { pending, failingPrefix: failingPrefix !== undefined && failingPrefix > 0 ? failingPrefix : undefined };
}

/**
 * An item left the batch without landing (the culprit, or an MR that conflicts or cannot be built). What is known
 * about failing prefixes no longer holds, so the rest is probed whole again.
 */
export function withoutItem<T>(b: Bisection<T>, item: T): Bisection<T> {
  return { pending: b.pending.filter((p) => p !== item) };
}

// --- how much to batch --------------------------------------------------------------------------------------

/**
 * How a batch's first candidate (every MR the section took) fared: `passed` (it landed whole), `failed` (its gates
 * failed, so bisection ran), or `other` (an MR excluded, the section's activity failed): nothing learned about the
 * odds that a batch passes.
 */
export type BatchVerdict = 'passed' | 'failed' | 'other';

/**
 * The most MRs the refinery's next batch takes, between 1 and the rig's `batchSize` (the cap). A batch takes what
 * is waiting up to this limit, so a shallow queue merges one at a time whatever the limit; the limit matters when the
 * queue is deep. A failed batch costs 1 + ⌈log₂ n⌉ extra gate runs and holds up the good MRs in it, and the next
 * batch is likelier to fail too (a broken base, a flaky gate, an agent that keeps sending the same bad change): the
 * limit halves after a failed batch and doubles after one that landed whole — multiplicative both ways, so a run of
 * failures gets to one at a time in ⌈log₂ cap⌉ batches, and a run of passes gets back as fast.
 */
export function nextBatchLimit(limit: number, cap: number, verdict: BatchVerdict): number {
  const clamp = (n: number) => Math.min(Math.max(1, Math.floor(n)), Math.max(1, cap));
  if (verdict === 'passed') return clamp(limit * 2);
  if (verdict === 'failed') return clamp(Math.ceil(limit / 2));
  return clamp(limit);
}

// --- the refinery's answers and state -----------------------------------------------------------------------

/**
 * A conflict as its bead sees it: at most CAPS.conflictPaths paths, named in the feedback with the count of the rest.
 * A branch that conflicts in 50,000 files must not make a payload of megabytes (the agent sees them all with git).
 */
export function conflictOutcome(
  paths: readonly string[],
  targetBranch: string,
): Extract<MergeOutcome, { kind: 'conflict' }> {
  return {
    kind: 'conflict',
    paths: capList(paths, CAPS.conflictPaths).shown.map((p) => capText(p, CAPS.name)),
    feedback: capText(
      `Your branch conflicts with ${targetBranch} in: ${listText(paths, CAPS.conflictPaths) || '(unknown paths)'}.\nMerge origin/${targetBranch} into your branch, resolve the conflicts, commit, and call gt done again.`,
      CAPS.feedback,
    ),
  };
}

/** What a merge section tells a merge request: a merge outcome, or (PR strategy) that its pull request is open. */
export const SectionOutcome = z.union([MergeOutcome, z.object({ kind: z.literal('pr_opened'), pr: PullRequestRef })]);
export type SectionOutcome = z.infer<typeof SectionOutcome>;

/** The refinery's answer to one merge request, checked where the merge request receives it. */
export const MergeResult = z.object({ mrId: z.string(), headSha: z.string(), outcome: SectionOutcome });
export type MergeResult = z.infer<typeof MergeResult>;

/**
 * A merge request leaving the queue (its bead was cancelled or moved on). Without a head, every ticket of the merge
 * request goes: a cancelled bead whose run's supervision may have handed its round's ticket over without the bead
 * hearing what it handed (workflows/bead.ts).
 */
export const WithdrawRequest = z.object({ mrId: z.string(), headSha: z.string().optional() });
export type WithdrawRequest = z.infer<typeof WithdrawRequest>;

/** One gated candidate: the MRs it held, and whether it landed. What the merge activity answers. */
export type CandidateResult =
  /** Landed (or was found already landed): target moved to `commit`, which contains every MR of the candidate. */
  | {
      kind: 'merged';
      commit: string;
      merged: { mrId: string; commit: string }[];
      gateRuns: number;
      alreadyMerged: boolean;
      /** The merge requests whose convoy the section told of the merge as it pushed (the refinery tells the rest). */
      convoyTold?: string[];
    }
  /** Verified only (PR strategy): the candidate built and its gates passed; the target was not touched. */
  | { kind: 'verified'; candidateSha: string; gateRuns: number }
  /** One MR cannot be part of any candidate (conflict, missing head, nothing to merge): it goes back, the rest stay. */
  | { kind: 'excluded'; mrId: string; outcome: MergeOutcome; gateRuns: number }
  /** The candidate's gates failed: for a single MR that is its outcome; in a batch it starts or continues bisection. */
  | { kind: 'gates_failed'; outcome: Extract<MergeOutcome, { kind: 'gates_failed' }>; gateRuns: number };

/**
 * One speculative candidate gated (target + the MRs ahead of it + its own MR), never pushed: what the speculative
 * gate activity answers. `commits` names the commit of every MR of the chain, the last being `candidateSha`.
 */
export type SpeculativeGateResult =
  | { kind: 'passed'; candidateSha: string; commits: { mrId: string; commit: string }[]; gateRuns: number }
  /** The candidate's own MR is already on the base (an earlier landing whose answer was lost): nothing to gate. */
  | { kind: 'landed'; commit: string; gateRuns: number }
  /** One MR of the chain cannot be merged (conflict, missing head, nothing to merge). */
  | { kind: 'excluded'; mrId: string; outcome: MergeOutcome; gateRuns: number }
  | { kind: 'gates_failed'; outcome: Extract<MergeOutcome, { kind: 'gates_failed' }>; gateRuns: number }
  /** The chain cannot be built as asked (its base is gone from the repository): plan again from the target. */
  | { kind: 'stale'; reason: string; gateRuns: number };

/** Landing a gated chain by compare-and-swap: merged, or stale (the target is not where the chain was built). */
export type LandResult = { kind: 'merged'; commit: string; alreadyMerged: boolean } | { kind: 'stale'; reason: string };

export interface SectionRecord {
  mrId: string;
  beadId: string;
  outcome: SectionOutcome['kind'];
  commit?: string;
  at: string;
}

export interface RefinerySection {
  kind: 'merge' | 'batch' | 'pull-request' | 'speculative';
  /** Speculative: the MRs in flight, in queue order (MR k gated on the target + the ones before it). */
  mrIds: string[];
  startedAt: string;
  /** During batch bisection: how many MRs the current probe gates. */
  probe?: number;
}

/** What `gt mq <rig>` shows; the refinery's query answer. */
export interface RefineryState {
  rig: string;
  paused: boolean;
  /** The first MR of the running section (all of them in `section`). */
  merging?: MergeTicket;
  section?: RefinerySection;
  /** Waiting MRs in the order they will be taken, with their scores. */
  queue: ScoredTicket[];
  merged: number;
  rejected: number;
  pullRequests: number;
  /** Candidate gate runs since the rig was added (bisection makes them fewer than MRs for batches). */
  gateRuns: number;
  /** The latest section outcomes, newest last. */
  recent: SectionRecord[];
  batchSize: number;
  /** The most MRs the next batch takes now (nextBatchLimit): `batchSize` until a batch fails. */
  batchLimit?: number;
  /** Speculative candidates gated at once at most (1: none). */
  speculation?: number;
}

/** What a merge request workflow answers to `mergeRequestStateQuery`. */
export interface MergeRequestState {
  mrId: string;
  beadId: string;
  round: number;
  rig: string;
  branch: string;
  headSha: string;
  targetBranch: string;
  phase: 'review' | 'queued' | 'pull_request' | 'done';
  waitingFor: string;
  reviewRuns: {
    runId: string;
    outcome: 'running' | 'approved' | 'changes_requested' | 'exited' | 'stalled' | 'lost' | 'cancelled';
    feedback?: string;
  }[];
  pullRequest?: { number: number; url: string; looks: number; lastVerdict?: string };
  outcome?: MergeOutcome;
}
