/** Beads (units of work), their lifecycle, and the messages agents send about them. */
import { z } from 'zod';
import { FormulaProgress, ResolvedFormula, StepId, type FormulaPosition, type StepRecord } from './formula';
import { BeadId, CommitId, ConvoyId, MAX_AFTER_COMMITS, RunId } from './ids';
import { RigConfig } from './rig';
import type { MergeOutcome } from './outcomes';

export const MAX_TITLE = 200;
export const MAX_TEXT = 20_000;

export const BeadSpec = z.object({
  id: BeadId,
  title: z
    .string()
    .trim()
    .min(1, 'title must not be empty')
    .max(MAX_TITLE, `title must be at most ${MAX_TITLE} characters`),
  description: z.string().max(MAX_TEXT, `description must be at most ${MAX_TEXT} characters`).default(''),
  acceptance: z.string().max(MAX_TEXT, `acceptance must be at most ${MAX_TEXT} characters`).default(''),
  /** 0 = most urgent … 4 = least; feeds the merge queue's score. */
  priority: z.number().int().min(0).max(4).default(2),
});
export type BeadSpec = z.infer<typeof BeadSpec>;

/** What a retried bead carries from its earlier workflow runs (`gt bead retry`; nothing but the counts with --fresh). */
export const MAX_CARRIED_RUNS = 50;
export const MAX_CARRIED_ROUNDS = 20;
export const MAX_CARRIED_INBOX = 50;
const CarriedRun = z.object({
  runId: z.string(),
  round: z.number().int(),
  attempt: z.number().int(),
  outcome: z.string(),
  startedAt: z.string(),
  endedAt: z.string().optional(),
  summary: z.string().max(MAX_TEXT).optional(),
  exitCode: z.number().int().nullable().optional(),
  lastProgress: z.string().max(2000).optional(),
  lastProgressAt: z.string().optional(),
  host: z.string().optional(),
});
const CarriedRound = z.object({
  round: z.number().int(),
  headSha: z.string().optional(),
  mergeRequest: z.string().optional(),
  outcome: z.unknown().optional(),
});
export const RetryRecord = z.object({
  /** 1 for the bead's first retry, 2 for the next… */
  retry: z.number().int().min(1),
  by: z.string().max(200),
  note: z.string().max(4000),
  fresh: z.boolean(),
  at: z.string(),
  /** How the run before it ended, and why. */
  after: z.enum(['failed', 'cancelled']),
  reason: z.string().max(4000).optional(),
});
export type RetryRecord = z.infer<typeof RetryRecord>;

/**
 * A new workflow run of a failed or cancelled bead (same workflow id, `gt bead retry`): its rounds are numbered after
 * the rounds already used, so its run ids and merge request ids never repeat an earlier run's.
 */
export const BeadResume = z.object({
  retries: z.array(RetryRecord).min(1).max(1000),
  roundsUsed: z.number().int().min(0),
  /** Absent with --fresh: the new run starts from the spec alone. */
  carried: z
    .object({
      runs: z.array(CarriedRun).max(MAX_CARRIED_RUNS),
      rounds: z.array(CarriedRound).max(MAX_CARRIED_ROUNDS),
      feedback: z.array(z.string().max(MAX_TEXT)).max(100),
      checkpoints: z.array(z.object({ runId: z.string(), note: z.string().max(4000), savedAt: z.string() })).max(50),
      inbox: z
        .array(z.object({ seq: z.number().int(), from: z.string(), message: z.string().max(4000), sentAt: z.string() }))
        .max(MAX_CARRIED_INBOX),
      /**
       * A formula with steps: where the failed or cancelled run stopped (its loops given back), so the retry resumes at
       * that step and never runs a finished one again. Absent for a formula that had not started, or ran before this.
       */
      formula: FormulaProgress.optional(),
    })
    .optional(),
});
export type BeadResume = z.input<typeof BeadResume>;

/**
 * What a bead that continues as new (past its history threshold) hands to its next workflow run: where it is (a
 * round, the next run of it, the failed attempts so far) and what it knows. Taken only between runs, so no agent,
 * activity or child is in flight across the hand-over.
 */
export const BeadContinuation = z.object({
  firstRound: z.number().int().min(1),
  round: z.number().int().min(1),
  nextRun: z.number().int().min(1),
  failures: z.array(z.string().max(MAX_TEXT)).max(20),
  lastFailed: z.boolean(),
  handoffs: z.number().int().min(0),
  continuedAsNew: z.number().int().min(1),
  /** Set when the bead continued as new between two steps of its formula: the engine goes on at the next one. */
  formula: FormulaProgress.optional(),
  state: z.object({
    runs: z.array(CarriedRun).max(MAX_CARRIED_RUNS),
    rounds: z.array(CarriedRound).max(MAX_CARRIED_ROUNDS),
    feedback: z.array(z.string().max(MAX_TEXT)).max(100),
    checkpoints: z.array(z.object({ runId: z.string(), note: z.string().max(4000), savedAt: z.string() })).max(50),
    inbox: z
      .array(z.object({ seq: z.number().int(), from: z.string(), message: z.string().max(4000), sentAt: z.string() }))
      .max(MAX_CARRIED_INBOX),
  }),
});
export type BeadContinuation = z.input<typeof BeadContinuation>;

export const BeadWorkflowInput = z.object({
  bead: BeadSpec,
  rig: RigConfig,
  /** Set when the bead belongs to a convoy: the bead reports to it, and merges into `targetBranch`. */
  convoy: z
    .object({
      id: ConvoyId,
      targetBranch: z.string().min(1),
      /**
       * The merges of the bead's dependencies on `targetBranch`, as the refinery reported them to the convoy: the
       * bead's first run needs a target that holds them, and starts without fetching when its host's mirror does.
       */
      after: z.array(CommitId).max(MAX_AFTER_COMMITS).optional(),
    })
    .optional(),
  /**
   * The host queue of the worker that started the bead: a convoy's worker, whose eager start hands it the bead's first
   * workflow task. The bead's first run goes to that host and asks the dispatch gate from its launch, beside the
   * worktree's preparation, instead of in the bead's first workflow task (workflows/bead-runs.ts ASKS_IN_LAUNCH).
   */
  startedOn: z.string().min(1).max(300).optional(),
  /** The formula the bead runs, resolved where it was slung (absent in histories from before formulas: `work`). */
  formula: ResolvedFormula.optional(),
  /** Set on a retried bead's new workflow run (docs/operations.md, "gt bead retry"). */
  resume: BeadResume.optional(),
  /** Set on a run the bead continued as new into. */
  continued: BeadContinuation.optional(),
  /** Continue as new between runs past this many history events, even before the server suggests it (tests). */
  continueAsNewAfterEvents: z.number().int().min(20).optional(),
});
export type BeadWorkflowInput = z.input<typeof BeadWorkflowInput>;

/** The first round of a bead's workflow run that is not a continuation: after the rounds its earlier runs used. */
export const startingRound = (resume: Pick<BeadResume, 'roundsUsed'> | undefined): number =>
  (resume?.roundsUsed ?? 0) + 1;

export const BeadStatus = z.enum(['open', 'in_progress', 'in_review', 'closed', 'failed', 'cancelled']);
export type BeadStatus = z.infer<typeof BeadStatus>;
export const TERMINAL_BEAD_STATUSES: readonly BeadStatus[] = ['closed', 'failed', 'cancelled'];

export const RunOutcome = z.enum([
  'running',
  'done',
  /** Ended on purpose with `gt handoff`: the next run starts at once from its checkpoint (not a failed attempt). */
  'handed_off',
  'exited',
  'stalled',
  'lost',
  /** A formula step's run passed the step's `timeout` and was stopped. */
  'timed_out',
  'start_failed',
  'cancelled',
]);
export type RunOutcome = z.infer<typeof RunOutcome>;

export interface RunRecord {
  runId: string;
  round: number;
  attempt: number;
  outcome: RunOutcome;
  startedAt: string;
  endedAt?: string;
  summary?: string;
  exitCode?: number | null;
  lastProgress?: string;
  /** When the run last reported progress (gt progress, gt checkpoint, gt done), for `gt status`. */
  lastProgressAt?: string;
  host?: string;
}

export interface RoundRecord {
  round: number;
  headSha?: string;
  mergeRequest?: string;
  outcome?: MergeOutcome;
}

/** What `gt bead status` shows; the bead workflow's query answer. */
export interface BeadState {
  beadId: string;
  title: string;
  rig: string;
  convoyId?: string;
  status: BeadStatus;
  round: number;
  currentRunId?: string;
  waitingFor: string;
  runs: RunRecord[];
  rounds: RoundRecord[];
  feedback: string[];
  mergedCommit?: string;
  targetBranch: string;
  failureReason?: string;
  /** Notes runs saved with `gt checkpoint`, oldest first; the next run of the bead gets them in its prompt. */
  checkpoints?: Checkpoint[];
  /** Messages operators sent to the bead's runs (`gt nudge`), read by the agent with `gt inbox`. */
  inbox?: InboxMessage[];
  /** Who asked to cancel the bead and why (`gt bead cancel`); set before the cancellation itself is requested. */
  cancellation?: CancelBeadRecord;
  /** The formula the bead runs (`name@version`) and, when it has more than today's single run, its steps. */
  formula?: string;
  steps?: StepRecord[];
  /** Where the formula's engine stands (what a continue-as-new or a retry carries with `steps`). */
  formulaAt?: FormulaPosition;
  /** Runs that ended with `gt handoff` (all rounds), bounded by the rig's `maxHandoffs`. */
  handoffs?: number;
  /** How often this bead continued as new (its history past a threshold). */
  continuedAsNew?: number;
  /** Operators' retries of this bead (`gt bead retry`), oldest first; this workflow run is the last one's. */
  retries?: RetryRecord[];
}

/** `gt bead retry`: who retries and why; `fresh` drops what earlier runs left (history, feedback, checkpoints). */
export const RetryBeadRequest = z.object({
  fresh: z.boolean().default(false),
  note: z.string().trim().max(4000, 'note must be at most 4000 characters').default(''),
  by: z.string().trim().min(1).max(200).default('operator'),
});
export type RetryBeadRequest = z.input<typeof RetryBeadRequest>;

/** An operator's cancellation of one bead: recorded by the bead (so `gt bead status` shows it), then the bead is cancelled. */
export const CancelBeadRequest = z.object({
  reason: z
    .string()
    .trim()
    .min(1, 'reason must not be empty')
    .max(2000, 'reason must be at most 2000 characters')
    .default('cancelled by an operator'),
  by: z.string().trim().min(1).max(200).default('operator'),
});
export type CancelBeadRequest = z.input<typeof CancelBeadRequest>;

export interface CancelBeadRecord {
  reason: string;
  by: string;
  requestedAt: string;
}

// --- messages from agents (through the gateway, as updates) ---

/** What a text sent to the gateway may hold at most, said the way the agent reads it. */
const tooLong = (what: string) =>
  `${what} must be at most ${MAX_TEXT} characters (put long material in the repository and refer to it)`;

export const DoneRequest = z.object({
  runId: RunId,
  summary: z.string().max(MAX_TEXT, tooLong('summary')).default(''),
});
export type DoneRequest = z.input<typeof DoneRequest>;

/** After the agent ended its run on purpose (gt done, a verdict, a hand-off), how long it may take to exit on its own. */
export const EXIT_GRACE_MS = 15_000;

/**
 * gt_done as the gateway sends it: the agent's request (parsed as DoneRequest, so nothing else the agent sends gets
 * through) and what the gateway adds itself. `exitGraceOnHost`: the run's supervision runs in the gateway's own worker
 * process, and stops the agent should it not exit within EXIT_GRACE_MS of the accepted gt done
 * (activities/agent-runs.ts), so the workflow need not time the grace itself.
 */
export const DoneUpdate = DoneRequest.extend({ exitGraceOnHost: z.boolean().optional() });
export type DoneUpdate = z.input<typeof DoneUpdate>;

/** `gt step done <step> --output …` from the run of a `session = "single"` formula: that step is finished. */
export const StepDoneRequest = z.object({
  runId: RunId,
  stepId: StepId,
  output: z.string().max(MAX_TEXT, tooLong('output')).default(''),
});
export type StepDoneRequest = z.input<typeof StepDoneRequest>;

export const ProgressRequest = z.object({ runId: RunId, message: z.string().max(2000).default('') });
export type ProgressRequest = z.input<typeof ProgressRequest>;

export const EscalateRequest = z.object({
  runId: RunId,
  reason: z.string().trim().min(1, 'reason must not be empty').max(MAX_TEXT, tooLong('reason')),
  severity: z.enum(['low', 'medium', 'high', 'critical']).default('medium'),
});
export type EscalateRequest = z.input<typeof EscalateRequest>;

export interface AgentReply {
  accepted: true;
  runId: string;
  message: string;
}

/** A reviewer's verdict on a merge request, addressed to its reviewer run. */
export const ReviewVerdict = z.discriminatedUnion('verdict', [
  z.object({
    runId: RunId,
    verdict: z.literal('approve'),
    feedback: z.string().max(MAX_TEXT, tooLong('feedback')).default(''),
  }),
  z.object({
    runId: RunId,
    verdict: z.literal('request_changes'),
    feedback: z.string().trim().min(1, 'feedback must say what to change').max(MAX_TEXT, tooLong('feedback')),
  }),
]);
export type ReviewVerdict = z.input<typeof ReviewVerdict>;

export const MAX_CHECKPOINT = 4000;
export const CheckpointRequest = z.object({
  runId: RunId,
  note: z
    .string()
    .trim()
    .min(1, 'checkpoint note must not be empty')
    .max(MAX_CHECKPOINT, `checkpoint note must be at most ${MAX_CHECKPOINT} characters`),
});
export type CheckpointRequest = z.input<typeof CheckpointRequest>;

/** `gt handoff`: the run saves where it is and ends; the next run of the bead starts from that checkpoint. */
export const HandoffRequest = z.object({
  runId: RunId,
  checkpoint: z
    .string()
    .trim()
    .min(1, 'a hand-off needs a checkpoint: what is done and what the next run should do')
    .max(MAX_CHECKPOINT, `checkpoint must be at most ${MAX_CHECKPOINT} characters`),
});
export type HandoffRequest = z.input<typeof HandoffRequest>;

export interface Checkpoint {
  runId: string;
  note: string;
  savedAt: string;
}

/** An operator's message to whichever run is working on the bead now (and the runs after it). */
export const NudgeRequest = z.object({
  message: z
    .string()
    .trim()
    .min(1, 'message must not be empty')
    .max(MAX_CHECKPOINT, `message must be at most ${MAX_CHECKPOINT} characters`),
  from: z.string().trim().min(1).max(200).default('operator'),
});
export type NudgeRequest = z.input<typeof NudgeRequest>;

export interface InboxMessage {
  seq: number;
  from: string;
  message: string;
  sentAt: string;
}

/** The agent reads its inbox: unread messages are returned and marked read (unless `peek`). */
export const InboxRequest = z.object({
  runId: RunId,
  peek: z.boolean().default(false),
  all: z.boolean().default(false),
});
export type InboxRequest = z.input<typeof InboxRequest>;

export interface InboxReply {
  runId: string;
  messages: InboxMessage[];
}

/** What a bead workflow returns when it ends: read by its convoy (activities/convoy.ts) and the CLI. */
export interface BeadResult {
  beadId: string;
  status: BeadStatus;
  commit?: string;
  reason?: string;
  /** Set on a retried bead's run: which retry this run was (its convoy accepts reports of the current retry only). */
  retry?: number;
}
