/** Beads (units of work), their lifecycle, and the messages agents send about them. */
import { z } from 'zod';
import { ResolvedFormula, type StepRecord } from './formula';
import { BeadId, ConvoyId, RunId } from './ids';
import { RigConfig } from './rig';

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

export const BeadWorkflowInput = z.object({
  bead: BeadSpec,
  rig: RigConfig,
  /** Set when the bead belongs to a convoy: the bead reports to it, and merges into `targetBranch`. */
  convoy: z.object({ id: ConvoyId, targetBranch: z.string().min(1) }).optional(),
  /** The formula the bead runs, resolved where it was slung (absent in histories from before formulas: `work`). */
  formula: ResolvedFormula.optional(),
});
export type BeadWorkflowInput = z.input<typeof BeadWorkflowInput>;

export const BeadStatus = z.enum(['open', 'in_progress', 'in_review', 'closed', 'failed', 'cancelled']);
export type BeadStatus = z.infer<typeof BeadStatus>;
export const TERMINAL_BEAD_STATUSES: readonly BeadStatus[] = ['closed', 'failed', 'cancelled'];

/** Outcome of a merge request, as the bead sees it. Everything but `merged` is rework with feedback. */
export const MergeOutcome = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('merged'), commit: z.string(), targetBranch: z.string(), prUrl: z.string().optional() }),
  z.object({ kind: z.literal('conflict'), paths: z.array(z.string()), feedback: z.string() }),
  z.object({ kind: z.literal('gates_failed'), gate: z.string(), feedback: z.string(), logPath: z.string().optional() }),
  z.object({ kind: z.literal('changes_requested'), feedback: z.string() }),
  z.object({ kind: z.literal('rejected'), feedback: z.string() }),
  /** PR strategy: a human closed the pull request without merging. Terminal: the bead fails (and escalates), no rework. */
  z.object({ kind: z.literal('pr_closed'), prUrl: z.string(), feedback: z.string() }),
]);
export type MergeOutcome = z.infer<typeof MergeOutcome>;

export const RunOutcome = z.enum(['running', 'done', 'exited', 'stalled', 'lost', 'start_failed', 'cancelled']);
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
}

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
