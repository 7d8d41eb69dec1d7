/** Signals, updates and queries: the only ways workflows of the town talk to each other and to clients. */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type {
  AgentReply,
  BeadState,
  CancelBeadRequest,
  CheckpointRequest,
  DoneUpdate,
  EscalateRequest,
  HandoffRequest,
  InboxMessage,
  InboxReply,
  InboxRequest,
  NudgeRequest,
  ProgressRequest,
  ReviewVerdict,
  StepDoneRequest,
} from './bead';
import type {
  CloseRequest,
  ConvoyCheckpoint,
  ConvoyEditInput,
  ConvoyOptions,
  ConvoyRecoveryInput,
  ConvoyState,
} from './convoy';
import type { StepDecision, StepRecord } from './formula';
import type { MergeRequestState, MergeResult, MergeTicket, RefineryState, WithdrawRequest } from './refinery';
import type { RigConfig, RigConfigInput } from './rig';

// bead:<id>
export const doneUpdate = defineUpdate<AgentReply, [DoneUpdate]>('gt_done');
export const progressUpdate = defineUpdate<AgentReply, [ProgressRequest]>('gt_progress');
export const escalateUpdate = defineUpdate<AgentReply, [EscalateRequest]>('gt_escalate');
export const beadStateQuery = defineQuery<BeadState>('beadState');
export const checkpointUpdate = defineUpdate<AgentReply, [CheckpointRequest]>('gt_checkpoint');
export const inboxUpdate = defineUpdate<InboxReply, [InboxRequest]>('gt_inbox');
/** From the current run: end this run on purpose; the next starts at once from the checkpoint. */
export const handoffUpdate = defineUpdate<AgentReply, [HandoffRequest]>('gt_handoff');
/** From the run of a `session = "single"` formula (`gt step done`): the current step is finished (workflows/formula.ts). */
export const stepDoneUpdate = defineUpdate<AgentReply, [StepDoneRequest]>('gt_step_done');
/** From operators (`gt nudge`): a message for the bead's current and later runs. */
export const nudgeUpdate = defineUpdate<InboxMessage, [NudgeRequest]>('nudge');
/** From operators (`gt bead cancel`): records who cancels and why; refused once the bead is terminal. The client then cancels the workflow. */
export const cancelRequestUpdate = defineUpdate<BeadState, [CancelBeadRequest]>('requestCancel');

// mr:<beadId>:<round>
export const mergeResultSignal = defineSignal<[MergeResult]>('mergeResult');
/** From the reviewer run (through the gateway); the validator rejects any run that is not the current reviewer. */
export const reviewVerdictUpdate = defineUpdate<AgentReply, [ReviewVerdict]>('gt_review');
/** Where a merge request is: review, queue, pull request, outcome. */
export const mergeRequestStateQuery = defineQuery<MergeRequestState>('mergeRequestState');

// refinery:<rig>
export const enqueueSignal = defineSignal<[MergeTicket]>('enqueue');
/** A merge request that was cancelled (its bead was) takes its ticket back, unless its merge section already began. */
export const withdrawSignal = defineSignal<[WithdrawRequest]>('withdraw');
export const refineryStateQuery = defineQuery<RefineryState>('refineryState');
export const rigConfigQuery = defineQuery<RigConfig>('rigConfig');
export const updateRigUpdate = defineUpdate<RigConfig, [Partial<RigConfigInput>]>('updateRig');
/** Operators hold the queue (MRs keep arriving, none is taken) and let it go again; a running section finishes either way. */
export const pauseRefineryUpdate = defineUpdate<RefineryState, [{ paused: boolean }]>('pauseRefinery');
/** `gt rig remove`: accepted only while nothing is queued or merging; the refinery then ends (the rig's name is free again). */
export const removeRigUpdate = defineUpdate<RefineryState, []>('removeRig');

// convoy:<id>, from clients
export const convoyStateQuery = defineQuery<ConvoyState>('convoyState');
/** Starts a staged convoy; answers once it is running (or has ended, if it could not start). */
export const launchConvoyUpdate = defineUpdate<ConvoyState, []>('launchConvoy');
export const editConvoyUpdate = defineUpdate<ConvoyState, [ConvoyEditInput]>('editConvoy');
/** Ends the convoy deliberately; answers once it has ended. */
export const closeConvoyUpdate = defineUpdate<ConvoyState, [CloseRequest]>('closeConvoy');
/** After a failed landing (and a fix on the convoy branch), tries the landing merge request again. */
export const retryLandingUpdate = defineUpdate<ConvoyState, []>('retryLanding');
/** Retry, skip or resume (applyRecovery); answers once accepted — retried beads start from the convoy's loop. */
export const recoverConvoyUpdate = defineUpdate<ConvoyState, [ConvoyRecoveryInput]>('recoverConvoy');
/**
 * Everything a new run of the convoy needs (its continue-as-new input): read from an ended `failed` convoy to reopen
 * it with a recovery applied. Answered by closed workflows too (queries replay them).
 */
export const convoyCheckpointQuery = defineQuery<{ checkpoint: ConvoyCheckpoint; options: ConvoyOptions }>(
  'convoyCheckpoint',
);

// formula:<beadId>, from operators (`gt step approve|reject`)
export const stepDecisionUpdate = defineUpdate<StepRecord, [StepDecision]>('stepDecision');

// convoy:<id> — beads report terminal outcomes to their convoy, the refinery a convoy bead's merge (idempotent by
// beadId: terminal states never change).
export interface BeadReport {
  beadId: string;
  status: 'closed' | 'failed' | 'cancelled';
  commit?: string;
  reason?: string;
  /** The bead's retry number, on a retried run's report (`gt bead retry`). */
  retry?: number;
  /**
   * The workflow that reported it when the signal's sender is not one (the refinery reports a convoy bead's merge from
   * a local activity): what the convoy's history shows of where a report came from.
   */
  reportedBy?: string;
}
export const beadReportSignal = defineSignal<[BeadReport]>('beadReport');
/** A convoy bead's merge, as the refinery reports it (from its workflow, or from the merge section that pushed it). */
export const mergeReport = (
  ticket: Pick<MergeTicket, 'beadId' | 'convoyBead'>,
  commit: string,
  reportedBy?: string,
): BeadReport => ({
  beadId: ticket.beadId,
  status: 'closed',
  commit,
  ...(ticket.convoyBead?.retry ? { retry: ticket.convoyBead.retry } : {}),
  ...(reportedBy ? { reportedBy } : {}),
});
