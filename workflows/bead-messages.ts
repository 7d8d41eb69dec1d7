/**
 * The bead's message handlers: the agent's (gt done, progress — at most one recorded per PROGRESS_MIN_GAP_MS —,
 * checkpoint, hand-off, inbox, escalate), accepted only from the live run (workflows/agent-run.ts), and the operator's
 * and the gate's (nudge, cancel, state, dispatch grants). What they keep is bounded (domain/caps.ts and below).
 */
import { ApplicationFailure, setHandler } from '@temporalio/workflow';
import {
  type AgentReply,
  type BeadState,
  CancelBeadRequest,
  CheckpointRequest,
  DoneUpdate,
  HandoffRequest,
  type InboxMessage,
  InboxRequest,
  NudgeRequest,
  ProgressRequest,
  StepDoneRequest,
  TERMINAL_BEAD_STATUSES,
} from '../domain/bead';
import { CAPS, capText, keepNewest } from '../domain/caps';
import { DispatchGrant, dispatchGrantSignal } from '../domain/dispatch';
import {
  beadStateQuery,
  cancelRequestUpdate,
  checkpointUpdate,
  doneUpdate,
  handoffUpdate,
  inboxUpdate,
  nudgeUpdate,
  progressUpdate,
  stepDoneUpdate,
} from '../domain/messages';
import { PROGRESS_MIN_GAP_MS } from '../domain/progress';
import type { Bead, PolecatRun } from './bead-state';
import { parseSignal, setValidatedUpdate } from './handlers';
import { Failure } from '../domain/failures';

/** Bounds on what the bead keeps (and carries into every later prompt); text itself is capped by domain/caps.ts. */
const MAX_CHECKPOINTS = 50;
const MAX_INBOX = 200;

/** Sets every handler of bead `b`; called before the workflow's first await. */
export function handleBeadMessages(b: Bead): void {
  const { bead, rig } = b.input;
  const { state, runs, inbox } = b;
  const policy = rig.policy;
  /**
   * When the current run's last progress report was recorded. A report sooner than PROGRESS_MIN_GAP_MS after it is
   * refused by the validator, which leaves no history: progress grows the history by a bounded amount per minute
   * however chatty the agent (the gateway coalesces reports and sends the newest later; domain/progress.ts).
   */
  let progressRecorded: { runId: string; at: number } | undefined;
  const unread = (run: PolecatRun) => inbox.filter((m) => m.seq > run.inboxCursor).length;
  const saveCheckpoint = (runId: string, note: string) => {
    b.checkpoints.push({ runId, note, savedAt: new Date().toISOString() });
    if (b.checkpoints.length > MAX_CHECKPOINTS) b.checkpoints.shift();
  };
  const refuseWhenTerminal = (why: string, already = '') => {
    if (TERMINAL_BEAD_STATUSES.includes(state.status))
      throw ApplicationFailure.nonRetryable(
        `bead ${bead.id} is ${already}${state.status}: ${why}`,
        Failure.BeadTerminal,
      );
  };
  setHandler(dispatchGrantSignal, (raw) => {
    const grant = parseSignal(DispatchGrant, raw, 'dispatch grant');
    if (grant) b.grants.add(grant.runId);
  });
  setHandler(beadStateQuery, () => state);
  setValidatedUpdate(doneUpdate, {
    schema: DoneUpdate,
    what: 'gt_done',
    handler: (req): AgentReply => {
      const run = runs.require(req.runId);
      if (run.done) return { accepted: true, runId: req.runId, message: 'gt done was already recorded for this run' };
      run.done = { summary: req.summary, ...(req.exitGraceOnHost ? { exitGraceOnHost: true } : {}) };
      run.record.summary = capText(req.summary, CAPS.summary);
      run.lastProgressAt = Date.now();
      return {
        accepted: true,
        runId: req.runId,
        message: `bead ${bead.id}: done recorded; the branch goes to the refinery`,
      };
    },
    check: (req) => {
      if (runs.require(req.runId).handedOff)
        throw ApplicationFailure.nonRetryable(
          `run ${req.runId} has handed off: the next run finishes`,
          Failure.RunEnding,
        );
      // A session = "single" formula's run reports every step (gt step done) before it is done.
      const stepsLeft = b.singleSession?.doneRefused();
      if (stepsLeft) throw ApplicationFailure.nonRetryable(stepsLeft, Failure.StepsLeft);
    },
  });
  // Registered on every bead (a handler adds no command, so histories replay unchanged); only a session = "single"
  // formula's run is answered, the rest refused in the validator (no history).
  setValidatedUpdate(stepDoneUpdate, {
    schema: StepDoneRequest,
    what: 'gt step done',
    handler: (req): AgentReply => {
      runs.require(req.runId);
      return b.singleSession!.accept(req);
    },
    check: (req) => {
      runs.require(req.runId);
      if (!b.singleSession)
        throw ApplicationFailure.nonRetryable(
          `bead ${bead.id} does not run a session = "single" formula: a step's run ends with gt done`,
          Failure.NotSingleSession,
        );
      b.singleSession.validate(req);
    },
  });
  setValidatedUpdate(progressUpdate, {
    schema: ProgressRequest,
    what: 'gt_progress',
    handler: (req): AgentReply => {
      const run = runs.require(req.runId);
      progressRecorded = { runId: req.runId, at: Date.now() };
      run.lastProgressAt = Date.now();
      run.record.lastProgressAt = new Date().toISOString();
      if (req.message) run.record.lastProgress = req.message;
      const n = unread(run);
      return {
        accepted: true,
        runId: req.runId,
        message: `progress recorded${n ? `; ${n} unread message${n > 1 ? 's' : ''}: run \`gt inbox\`` : ''}`,
      };
    },
    check: ({ runId }) => {
      runs.require(runId);
      const recorded = progressRecorded;
      const since = recorded?.runId === runId ? Date.now() - recorded.at : Infinity;
      if (since < PROGRESS_MIN_GAP_MS)
        throw ApplicationFailure.nonRetryable(
          `progress of run ${runId} was recorded ${Math.round(since / 1000)} s ago; at most one report per ${PROGRESS_MIN_GAP_MS / 1000} s is recorded (the gateway sends the newest later)`,
          Failure.ProgressTooSoon,
        );
    },
  });
  setValidatedUpdate(checkpointUpdate, {
    schema: CheckpointRequest,
    what: 'gt_checkpoint',
    handler: (req): AgentReply => {
      const run = runs.require(req.runId);
      saveCheckpoint(req.runId, req.note);
      // Saving a checkpoint is progress too.
      run.lastProgressAt = Date.now();
      run.record.lastProgressAt = new Date().toISOString();
      return {
        accepted: true,
        runId: req.runId,
        message: 'checkpoint saved; the next run of this bead will see it in its prompt',
      };
    },
    check: (req) => void runs.require(req.runId),
  });
  setValidatedUpdate(handoffUpdate, {
    schema: HandoffRequest,
    what: 'gt_handoff',
    handler: (req): AgentReply => {
      const run = runs.require(req.runId);
      saveCheckpoint(req.runId, req.checkpoint);
      run.handedOff = true;
      run.record.summary = capText(`handed off: ${req.checkpoint}`, CAPS.summary);
      state.handoffs = (state.handoffs ?? 0) + 1;
      return {
        accepted: true,
        runId: req.runId,
        message: `hand-off recorded (${state.handoffs} of ${policy.maxHandoffs}); this run is stopped and the next starts from your checkpoint`,
      };
    },
    check: (req) => {
      const run = runs.require(req.runId);
      if (run.done || run.handedOff)
        throw ApplicationFailure.nonRetryable(
          `run ${run.runId} already ${run.done ? 'called gt done' : 'handed off'}`,
          Failure.RunEnding,
        );
      if ((state.handoffs ?? 0) >= policy.maxHandoffs)
        throw ApplicationFailure.nonRetryable(
          `bead ${bead.id} has used its ${policy.maxHandoffs} hand-offs (rig policy maxHandoffs): finish with gt done, or save a checkpoint and keep working`,
          Failure.HandoffCapReached,
        );
    },
  });
  setValidatedUpdate(nudgeUpdate, {
    schema: NudgeRequest,
    what: 'nudge',
    handler: (req): InboxMessage => {
      const message = {
        seq: b.nextInboxSeq(),
        from: req.from,
        message: req.message,
        sentAt: new Date().toISOString(),
      };
      inbox.push(message);
      if (inbox.length > MAX_INBOX) inbox.shift();
      return message;
    },
    check: () => {
      refuseWhenTerminal(`no run will read the message`);
    },
  });
  setValidatedUpdate(cancelRequestUpdate, {
    schema: CancelBeadRequest,
    what: 'cancel request',
    handler: (req): BeadState => {
      state.cancellation = { reason: req.reason, by: req.by, requestedAt: new Date().toISOString() };
      return state;
    },
    check: () => {
      refuseWhenTerminal('nothing to cancel', 'already ');
    },
  });
  setValidatedUpdate(inboxUpdate, {
    schema: InboxRequest,
    what: 'gt_inbox',
    handler: (req) => {
      const run = runs.require(req.runId);
      const messages = boundMessages(req.all ? [...inbox] : inbox.filter((m) => m.seq > run.inboxCursor));
      if (!req.peek && inbox.length) run.inboxCursor = inbox[inbox.length - 1]!.seq;
      return { runId: req.runId, messages };
    },
    check: (req) => void runs.require(req.runId),
  });
  runs.handleEscalations({ beadId: bead.id });
}

/** Inbox messages for one answer: the newest that fit CAPS.messagesTotal (an update's result is a payload too). */
function boundMessages(messages: InboxMessage[]): InboxMessage[] {
  const texts = keepNewest(
    messages.map((m) => m.message),
    CAPS.messagesTotal,
  );
  const kept = messages.slice(messages.length - texts.length);
  return kept.map((m, i) => (m.message === texts[i] ? m : { ...m, message: texts[i]! }));
}
