/**
 * The bead workflow's state and message handlers (workflows/bead.ts is the process): what the bead knows and shows
 * (BeadState, its status line and search attributes), its polecat runs as the fence admits them (only the live run
 * may speak: workflows/agent-run.ts), and the handlers of the agent's and the operator's messages — done, progress
 * (at most one recorded per PROGRESS_MIN_GAP_MS), checkpoint, hand-off, inbox, nudge, escalate, cancel, the gate's
 * grants. What it keeps is bounded by domain/caps.ts, so no input, update answer or result can pass Temporal's limit.
 */
import {
  ApplicationFailure,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import {
  type AgentReply,
  BeadWorkflowInput,
  type BeadState,
  type BeadStatus,
  CancelBeadRequest,
  CheckpointRequest,
  DoneRequest,
  HandoffRequest,
  type InboxMessage,
  InboxRequest,
  NudgeRequest,
  ProgressRequest,
  type RoundRecord,
  type RunRecord,
  TERMINAL_BEAD_STATUSES,
} from '../domain/bead';
import { appendFeedback, CAPS, capText, keepNewest } from '../domain/caps';
import { DispatchGrant, dispatchGrantSignal } from '../domain/dispatch';
import { formulaLabel } from '../domain/formula';
import {
  beadStateQuery,
  cancelRequestUpdate,
  checkpointUpdate,
  doneUpdate,
  handoffUpdate,
  inboxUpdate,
  nudgeUpdate,
  progressUpdate,
} from '../domain/messages';
import { PROGRESS_MIN_GAP_MS } from '../domain/progress';
import { SA } from '../domain/search-attributes';
import { parseOrReject } from '../domain/validation';
import { AgentRun, AgentRuns } from './agent-run';
import { parseSignal } from './signals';

/** The bead's town activities (dispatch slots, hosts, escalations). */
export const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20 },
});

/** Bounds on what the bead keeps (and carries into every later prompt); text itself is capped by domain/caps.ts. */
const MAX_CHECKPOINTS = 50;
const MAX_INBOX = 200;

export type BeadInput = z.output<typeof BeadWorkflowInput>;

/** A polecat run of the bead: what its agent said (gt done, gt handoff), its record and how far it read the inbox. */
export class PolecatRun extends AgentRun {
  done?: { summary: string };
  /** Set by `gt handoff`: the run ends on purpose, its checkpoint already saved. */
  handedOff?: boolean;

  constructor(
    runId: string,
    readonly record: RunRecord,
    public inboxCursor: number,
  ) {
    super(runId);
  }

  override ending() {
    return this.done ? ('done' as const) : this.handedOff ? ('handed_off' as const) : undefined;
  }
}

export class Bead {
  readonly state: BeadState;
  readonly runs: AgentRuns<PolecatRun>;
  /** Runs the dispatch gate has let through. */
  readonly grants = new Set<string>();
  /** The formula step under way ("step 3/5 self-review"), shown before what the bead waits for. */
  stepLabel: string | undefined;
  /** The round a continued run starts in, and the first round of this workflow run (rounds number on after retries). */
  readonly firstRound: number;
  /** The retry this workflow run is (`gt bead retry`), if it is one. */
  readonly retry: number | undefined;
  private inboxSeq: number;
  /**
   * When the current run's last progress report was recorded. A report sooner than PROGRESS_MIN_GAP_MS after it is
   * refused by the validator, which leaves no history: progress grows the history by a bounded amount per minute
   * however chatty the agent (the gateway coalesces reports and sends the newest later; domain/progress.ts).
   */
  private progressRecorded: { runId: string; at: number } | undefined;

  constructor(readonly input: BeadInput) {
    const { bead, rig, convoy, formula, resume, continued } = input;
    // A retried bead (a new workflow run of the same id) goes on from what its earlier runs left, unless --fresh.
    // Nothing differs for a bead without `resume`, so histories from before retries replay unchanged.
    this.retry = resume?.retries.at(-1)?.retry;
    // A run continued as new takes what the run before it knew; a retry takes what the failed run left (unless --fresh).
    const carried = continued?.state ?? resume?.carried;
    this.firstRound = continued?.firstRound ?? (resume?.roundsUsed ?? 0) + 1;
    this.state = {
      beadId: bead.id,
      title: bead.title,
      rig: rig.name,
      convoyId: convoy?.id,
      status: 'open',
      round: 0,
      waitingFor: 'dispatch',
      runs: (carried?.runs as RunRecord[] | undefined) ?? [],
      rounds: (carried?.rounds as RoundRecord[] | undefined) ?? [],
      feedback: carried?.feedback ?? [],
      targetBranch: convoy?.targetBranch ?? rig.branch,
      checkpoints: carried?.checkpoints ?? [],
      inbox: carried?.inbox ?? [],
      handoffs: continued?.handoffs ?? 0,
      ...(continued ? { continuedAsNew: continued.continuedAsNew } : {}),
      ...(resume ? { retries: resume.retries } : {}),
      ...(formula ? { formula: formulaLabel(formula) } : {}),
    };
    const lastRetry = resume?.retries.at(-1);
    // The operator's note is the first thing the retried run reads (feedback heads its prompt).
    if (lastRetry?.note && !continued)
      this.state.feedback = appendFeedback(
        this.state.feedback,
        `[retry ${lastRetry.retry} by ${lastRetry.by}] ${lastRetry.note}`,
      );
    this.inboxSeq = this.inbox.reduce((n, m) => Math.max(n, m.seq), 0);
    this.runs = new AgentRuns<PolecatRun>(
      (runId, current) =>
        `run ${runId} is not the current run of bead ${bead.id}: ${current ? `the current run is ${current.runId}` : `no run is active (bead is ${this.state.status})`}`,
      (e) => town.raiseEscalation({ ...e, rig: rig.name, beadId: bead.id, convoyId: convoy?.id }),
    );
  }

  get checkpoints() {
    return this.state.checkpoints!;
  }
  get inbox() {
    return this.state.inbox!;
  }
  /** The next message's sequence number after the newest (a run reads from here on). */
  get inboxHead() {
    return this.inboxSeq;
  }

  setStatus(status: BeadStatus, waitingFor: string): void {
    const current = this.runs.current;
    this.state.status = status;
    this.state.waitingFor = waitingFor;
    this.state.currentRunId = current?.runId;
    upsertSearchAttributes([
      { key: SA.status, value: status },
      { key: SA.round, value: this.state.round },
      { key: SA.runId, value: current?.runId ?? null },
    ]);
    setCurrentDetails(`**${status}** — ${this.stepLabel ? `${this.stepLabel}: ` : ''}${waitingFor}`);
  }

  private saveCheckpoint(runId: string, note: string) {
    this.checkpoints.push({ runId, note, savedAt: new Date().toISOString() });
    if (this.checkpoints.length > MAX_CHECKPOINTS) this.checkpoints.shift();
  }

  private unread(run: PolecatRun) {
    return this.inbox.filter((m) => m.seq > run.inboxCursor).length;
  }

  /** Every handler of the bead; set before the workflow's first await. */
  handleMessages(): void {
    const { bead, rig } = this.input;
    const { state, runs, inbox } = this;
    const policy = rig.policy;
    setHandler(dispatchGrantSignal, (raw) => {
      const grant = parseSignal(DispatchGrant, raw, 'dispatch grant');
      if (grant) this.grants.add(grant.runId);
    });
    setHandler(beadStateQuery, () => state);
    setHandler(
      doneUpdate,
      (raw): AgentReply => {
        const req = DoneRequest.parse(raw);
        const run = runs.require(req.runId);
        if (run.done) return { accepted: true, runId: req.runId, message: 'gt done was already recorded for this run' };
        run.done = { summary: req.summary };
        run.record.summary = capText(req.summary, CAPS.summary);
        run.lastProgressAt = Date.now();
        return {
          accepted: true,
          runId: req.runId,
          message: `bead ${bead.id}: done recorded; the branch goes to the refinery`,
        };
      },
      {
        validator: (raw) => {
          const req = parseOrReject(DoneRequest, raw, 'gt_done');
          if (runs.require(req.runId).handedOff)
            throw ApplicationFailure.nonRetryable(
              `run ${req.runId} has handed off: the next run finishes`,
              'RunEnding',
            );
        },
      },
    );
    setHandler(
      progressUpdate,
      (raw): AgentReply => {
        const req = ProgressRequest.parse(raw);
        const run = runs.require(req.runId);
        this.progressRecorded = { runId: req.runId, at: Date.now() };
        run.lastProgressAt = Date.now();
        run.record.lastProgressAt = new Date().toISOString();
        if (req.message) run.record.lastProgress = req.message;
        const n = this.unread(run);
        return {
          accepted: true,
          runId: req.runId,
          message: `progress recorded${n ? `; ${n} unread message${n > 1 ? 's' : ''}: run \`gt inbox\`` : ''}`,
        };
      },
      {
        validator: (raw) => {
          const { runId } = parseOrReject(ProgressRequest, raw, 'gt_progress');
          runs.require(runId);
          const recorded = this.progressRecorded;
          const since = recorded?.runId === runId ? Date.now() - recorded.at : Infinity;
          if (since < PROGRESS_MIN_GAP_MS)
            throw ApplicationFailure.nonRetryable(
              `progress of run ${runId} was recorded ${Math.round(since / 1000)} s ago; at most one report per ${PROGRESS_MIN_GAP_MS / 1000} s is recorded (the gateway sends the newest later)`,
              'ProgressTooSoon',
            );
        },
      },
    );
    setHandler(
      checkpointUpdate,
      (raw): AgentReply => {
        const req = CheckpointRequest.parse(raw);
        const run = runs.require(req.runId);
        this.saveCheckpoint(req.runId, req.note);
        // Saving a checkpoint is progress too.
        run.lastProgressAt = Date.now();
        run.record.lastProgressAt = new Date().toISOString();
        return {
          accepted: true,
          runId: req.runId,
          message: 'checkpoint saved; the next run of this bead will see it in its prompt',
        };
      },
      { validator: (raw) => void runs.require(parseOrReject(CheckpointRequest, raw, 'gt_checkpoint').runId) },
    );
    setHandler(
      handoffUpdate,
      (raw): AgentReply => {
        const req = HandoffRequest.parse(raw);
        const run = runs.require(req.runId);
        this.saveCheckpoint(req.runId, req.checkpoint);
        run.handedOff = true;
        run.record.summary = capText(`handed off: ${req.checkpoint}`, CAPS.summary);
        state.handoffs = (state.handoffs ?? 0) + 1;
        return {
          accepted: true,
          runId: req.runId,
          message: `hand-off recorded (${state.handoffs} of ${policy.maxHandoffs}); this run is stopped and the next starts from your checkpoint`,
        };
      },
      {
        validator: (raw) => {
          const run = runs.require(parseOrReject(HandoffRequest, raw, 'gt_handoff').runId);
          if (run.done || run.handedOff)
            throw ApplicationFailure.nonRetryable(
              `run ${run.runId} already ${run.done ? 'called gt done' : 'handed off'}`,
              'RunEnding',
            );
          if ((state.handoffs ?? 0) >= policy.maxHandoffs)
            throw ApplicationFailure.nonRetryable(
              `bead ${bead.id} has used its ${policy.maxHandoffs} hand-offs (rig policy maxHandoffs): finish with gt done, or save a checkpoint and keep working`,
              'HandoffCapReached',
            );
        },
      },
    );
    setHandler(
      nudgeUpdate,
      (raw): InboxMessage => {
        const req = NudgeRequest.parse(raw);
        const message = {
          seq: ++this.inboxSeq,
          from: req.from,
          message: req.message,
          sentAt: new Date().toISOString(),
        };
        inbox.push(message);
        if (inbox.length > MAX_INBOX) inbox.shift();
        return message;
      },
      {
        validator: (raw) => {
          parseOrReject(NudgeRequest, raw, 'nudge');
          this.refuseWhenTerminal(`no run will read the message`);
        },
      },
    );
    setHandler(
      cancelRequestUpdate,
      (raw): BeadState => {
        const req = CancelBeadRequest.parse(raw);
        state.cancellation = { reason: req.reason, by: req.by, requestedAt: new Date().toISOString() };
        return state;
      },
      {
        validator: (raw) => {
          parseOrReject(CancelBeadRequest, raw, 'cancel request');
          this.refuseWhenTerminal('nothing to cancel', 'already ');
        },
      },
    );
    setHandler(
      inboxUpdate,
      (raw) => {
        const req = InboxRequest.parse(raw);
        const run = runs.require(req.runId);
        const messages = boundMessages(req.all ? [...inbox] : inbox.filter((m) => m.seq > run.inboxCursor));
        if (!req.peek && inbox.length) run.inboxCursor = inbox[inbox.length - 1]!.seq;
        return { runId: req.runId, messages };
      },
      { validator: (raw) => void runs.require(parseOrReject(InboxRequest, raw, 'gt_inbox').runId) },
    );
    runs.handleEscalations({ beadId: bead.id });
  }

  private refuseWhenTerminal(why: string, already = '') {
    if (TERMINAL_BEAD_STATUSES.includes(this.state.status))
      throw ApplicationFailure.nonRetryable(
        `bead ${this.input.bead.id} is ${already}${this.state.status}: ${why}`,
        'BeadTerminal',
      );
  }
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
