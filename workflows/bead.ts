/**
 * bead:<id> — the life of one unit of work:
 * dispatch a polecat run → wait for its gt_done (or its exit, or a stall) → hand the branch to the refinery as a
 * merge request → closed when merged; otherwise rework with feedback, bounded by rounds; failed when exhausted.
 *
 * Every run has its own id; gt_done, progress and escalations are accepted only from the current run, so nothing
 * addressed to an old run can change this bead (failure class 1). Each run first takes a slot from the rig's
 * dispatch gate (capacity, operator pause, circuit breaker), and gives it back when it ends.
 * What it keeps and hands on (feedback over rounds, checkpoints, messages, failure reasons) is bounded by
 * domain/caps.ts, so no input, update answer or result of it can pass Temporal's payload limit.
 *
 * A failed or cancelled bead can be retried (`gt bead retry`): a new workflow run of the same id whose input carries
 * `resume` (activities/bead-retry.ts). It goes on from the carried runs, rounds, feedback, checkpoints and messages,
 * numbering its rounds after the used ones, so no run id or merge request id repeats; without `resume` nothing
 * differs, so histories from before retries replay unchanged (no patched() needed).
 */
import {
  ActivityCancellationType,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  executeChild,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  metricMeter,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { HostQueueActivities, TownQueueActivities } from '../activities';
import type {
  AgentReply,
  BeadState,
  BeadStatus,
  InboxMessage,
  RoundRecord,
  RunOutcome,
  RunRecord,
  BeadResult,
} from '../domain/bead';
import { MergeOutcome } from '../domain/outcomes';
import {
  BeadWorkflowInput,
  CancelBeadRequest,
  CheckpointRequest,
  DoneRequest,
  EscalateRequest,
  HandoffRequest,
  InboxRequest,
  NudgeRequest,
  ProgressRequest,
  MAX_CARRIED_INBOX,
  MAX_TEXT,
  MAX_CARRIED_ROUNDS,
  MAX_CARRIED_RUNS,
  TERMINAL_BEAD_STATUSES,
} from '../domain/bead';
import { appendFeedback, CAPS, capText, keepNewest } from '../domain/caps';
import {
  DispatchGrant,
  dispatchGateWorkflowId,
  dispatchGrantSignal,
  dispatchReleaseSignal,
  dispatchReportSignal,
} from '../domain/dispatch';
import { escalationIdPart } from '../domain/escalation';
import { beadBranch, convoyWorkflowId, mergeRequestWorkflowId, runIdOf } from '../domain/ids';
import {
  beadReportSignal,
  beadStateQuery,
  cancelRequestUpdate,
  checkpointUpdate,
  doneUpdate,
  escalateUpdate,
  handoffUpdate,
  inboxUpdate,
  nudgeUpdate,
  progressUpdate,
} from '../domain/messages';
import { SA } from '../domain/search-attributes';
import { failureMessage, parseOrReject } from '../domain/validation';
import { countTownEvent } from '../domain/metrics';
import { PROGRESS_MIN_GAP_MS } from '../domain/progress';
import { formulaLabel, isSingleRun } from '../domain/formula';
import { runFormula, type AgentStep, type FormulaHost, type RunResult } from './formula';
import { mergeRequestWorkflow } from './merge-request';
import { parseSignal } from './signals';

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20 },
});

/** patched() id: a run's report and release go to the dispatch gate without holding up the bead. */
const GATE_SIGNALS_WITHOUT_WAITING = 'bead-gate-signals-without-waiting';
/** patched() id: a bead whose formula has more than today's single run goes through the formula engine. */
const FORMULA_ENGINE = 'bead-formula-engine';
/** patched() id: a cancelled bead ends only after its supervising activity confirms the agent was stopped. */
const CANCEL_WAITS_FOR_AGENT_STOP = 'bead-cancel-waits-for-agent-stop';
/** After gt_done, how long the agent may take to exit on its own before it is stopped. */
const EXIT_GRACE_MS = 15_000;
const MAX_BACKOFF_MS = 600_000;
/** Bounds on what the bead keeps (and carries into every later prompt); text itself is capped by domain/caps.ts. */
const MAX_CHECKPOINTS = 50;
const MAX_INBOX = 200;

/** How one run of a round ended: its branch was handed in, it failed, or it handed off to the next run. */
type AttemptResult = RunResult | { handedOff: string };

export async function beadWorkflow(rawInput: BeadWorkflowInput): Promise<BeadResult> {
  const { bead, rig, convoy, formula, resume, continued, continueAsNewAfterEvents } = parseOrReject(
    BeadWorkflowInput,
    rawInput,
    'bead input',
  );
  // A retried bead (a new workflow run of the same id) goes on from what its earlier runs left, unless --fresh.
  // Nothing below differs for a bead without `resume`, so histories from before retries replay unchanged.
  const retry = resume?.retries.at(-1)?.retry;
  // A run continued as new takes what the run before it knew; a retry takes what the failed run left (unless --fresh).
  const carried = continued?.state ?? resume?.carried;
  const firstRound = continued?.firstRound ?? (resume?.roundsUsed ?? 0) + 1;
  const policy = rig.policy;
  const targetBranch = convoy?.targetBranch ?? rig.branch;
  const branch = beadBranch(bead.id);
  const state: BeadState = {
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
    targetBranch,
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
    state.feedback = appendFeedback(state.feedback, `[retry ${lastRetry.retry} by ${lastRetry.by}] ${lastRetry.note}`);
  const checkpoints = state.checkpoints!;
  const inbox = state.inbox!;
  let inboxSeq = inbox.reduce((n, m) => Math.max(n, m.seq), 0);
  /** Runs the dispatch gate has let through. */
  const grants = new Set<string>();
  setHandler(dispatchGrantSignal, (raw) => {
    const grant = parseSignal(DispatchGrant, raw, 'dispatch grant');
    if (grant) grants.add(grant.runId);
  });

  /** Escalations waiting to be raised (handlers cannot run activities; the main loop raises them). */
  const escalations: {
    id: string;
    severity: 'low' | 'medium' | 'high' | 'critical';
    reason: string;
    source: 'agent' | 'bead';
    runId?: string;
  }[] = [];
  let agentEscalations = 0;
  const raisePending = async () => {
    while (escalations.length) {
      const e = escalations.shift()!;
      await town.raiseEscalation({ ...e, rig: rig.name, beadId: bead.id, convoyId: convoy?.id });
    }
  };

  /** The run allowed to speak for this bead right now. */
  let current:
    | {
        runId: string;
        done?: { summary: string };
        /** Set by `gt handoff`: the run ends on purpose, its checkpoint already saved. */
        handedOff?: boolean;
        lastProgressAt: number;
        record: RunRecord;
        inboxCursor: number;
      }
    | undefined;
  /** The supervision of the run in flight; settles once its activity has ended (after a cancel: once the agent is stopped). */
  let supervising: Promise<void> | undefined;
  const unread = () => (current ? inbox.filter((m) => m.seq > current!.inboxCursor).length : 0);

  /** The formula step under way ("step 3/5 self-review"), shown before what the bead waits for. */
  let stepLabel: string | undefined;
  const setStatus = (status: BeadStatus, waitingFor: string) => {
    state.status = status;
    state.waitingFor = waitingFor;
    state.currentRunId = current?.runId;
    upsertSearchAttributes([
      { key: SA.status, value: status },
      { key: SA.round, value: state.round },
      { key: SA.runId, value: current?.runId ?? null },
    ]);
    setCurrentDetails(`**${status}** — ${stepLabel ? `${stepLabel}: ` : ''}${waitingFor}`);
  };

  const requireCurrentRun = (runId: string) => {
    if (!current || current.runId !== runId) {
      const now = current ? `the current run is ${current.runId}` : `no run is active (bead is ${state.status})`;
      throw ApplicationFailure.nonRetryable(
        `run ${runId} is not the current run of bead ${bead.id}: ${now}`,
        'StaleRun',
      );
    }
    return current;
  };

  setHandler(beadStateQuery, () => state);
  setHandler(
    doneUpdate,
    (raw): AgentReply => {
      const req = DoneRequest.parse(raw);
      const run = requireCurrentRun(req.runId);
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
        if (requireCurrentRun(req.runId).handedOff)
          throw ApplicationFailure.nonRetryable(`run ${req.runId} has handed off: the next run finishes`, 'RunEnding');
      },
    },
  );
  /**
   * When the current run's last progress report was recorded. A report sooner than PROGRESS_MIN_GAP_MS after it is
   * refused by the validator, which leaves no history: progress grows the history by a bounded amount per minute
   * however chatty the agent (the gateway coalesces reports and sends the newest later; domain/progress.ts).
   */
  let progressRecorded: { runId: string; at: number } | undefined;
  setHandler(
    progressUpdate,
    (raw): AgentReply => {
      const req = ProgressRequest.parse(raw);
      const run = requireCurrentRun(req.runId);
      progressRecorded = { runId: req.runId, at: Date.now() };
      run.lastProgressAt = Date.now();
      run.record.lastProgressAt = new Date().toISOString();
      if (req.message) run.record.lastProgress = req.message;
      const n = unread();
      return {
        accepted: true,
        runId: req.runId,
        message: `progress recorded${n ? `; ${n} unread message${n > 1 ? 's' : ''}: run \`gt inbox\`` : ''}`,
      };
    },
    {
      validator: (raw) => {
        const { runId } = parseOrReject(ProgressRequest, raw, 'gt_progress');
        requireCurrentRun(runId);
        const since = progressRecorded?.runId === runId ? Date.now() - progressRecorded.at : Infinity;
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
      const run = requireCurrentRun(req.runId);
      checkpoints.push({ runId: req.runId, note: req.note, savedAt: new Date().toISOString() });
      if (checkpoints.length > MAX_CHECKPOINTS) checkpoints.shift();
      // Saving a checkpoint is progress too.
      run.lastProgressAt = Date.now();
      run.record.lastProgressAt = new Date().toISOString();
      return {
        accepted: true,
        runId: req.runId,
        message: 'checkpoint saved; the next run of this bead will see it in its prompt',
      };
    },
    { validator: (raw) => void requireCurrentRun(parseOrReject(CheckpointRequest, raw, 'gt_checkpoint').runId) },
  );
  setHandler(
    handoffUpdate,
    (raw): AgentReply => {
      const req = HandoffRequest.parse(raw);
      const run = requireCurrentRun(req.runId);
      checkpoints.push({ runId: req.runId, note: req.checkpoint, savedAt: new Date().toISOString() });
      if (checkpoints.length > MAX_CHECKPOINTS) checkpoints.shift();
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
        const run = requireCurrentRun(parseOrReject(HandoffRequest, raw, 'gt_handoff').runId);
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
      const message = { seq: ++inboxSeq, from: req.from, message: req.message, sentAt: new Date().toISOString() };
      inbox.push(message);
      if (inbox.length > MAX_INBOX) inbox.shift();
      return message;
    },
    {
      validator: (raw) => {
        parseOrReject(NudgeRequest, raw, 'nudge');
        if (TERMINAL_BEAD_STATUSES.includes(state.status))
          throw ApplicationFailure.nonRetryable(
            `bead ${bead.id} is ${state.status}: no run will read the message`,
            'BeadTerminal',
          );
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
        if (TERMINAL_BEAD_STATUSES.includes(state.status))
          throw ApplicationFailure.nonRetryable(
            `bead ${bead.id} is already ${state.status}: nothing to cancel`,
            'BeadTerminal',
          );
      },
    },
  );
  setHandler(
    inboxUpdate,
    (raw) => {
      const req = InboxRequest.parse(raw);
      const run = requireCurrentRun(req.runId);
      const messages = boundMessages(req.all ? [...inbox] : inbox.filter((m) => m.seq > run.inboxCursor));
      if (!req.peek && inbox.length) run.inboxCursor = inbox[inbox.length - 1]!.seq;
      return { runId: req.runId, messages };
    },
    { validator: (raw) => void requireCurrentRun(parseOrReject(InboxRequest, raw, 'gt_inbox').runId) },
  );
  setHandler(
    escalateUpdate,
    (raw): AgentReply => {
      const req = EscalateRequest.parse(raw);
      requireCurrentRun(req.runId);
      log.warn('agent escalated', { beadId: bead.id, runId: req.runId, severity: req.severity, reason: req.reason });
      escalations.push({
        id: `run-${escalationIdPart(req.runId)}-${++agentEscalations}`,
        severity: req.severity,
        reason: req.reason,
        source: 'agent',
        runId: req.runId,
      });
      return {
        accepted: true,
        runId: req.runId,
        message: 'escalation raised; an operator will see it in `gt escalations`',
      };
    },
    { validator: (raw) => void requireCurrentRun(parseOrReject(EscalateRequest, raw, 'gt_escalate').runId) },
  );

  const gate = () => getExternalWorkflowHandle(dispatchGateWorkflowId(rig.name));
  /** Signals to the gate still in flight: the bead waits for them only before it ends (histories from before waited each time). */
  const toGate = new Set<Promise<void>>();
  const sendToGate = async (signal: Promise<void>): Promise<void> => {
    if (!patched(GATE_SIGNALS_WITHOUT_WAITING)) return signal;
    const pending: Promise<void> = signal.finally(() => toGate.delete(pending));
    toGate.add(pending);
  };
  /** Tells the rig's gate whether the run's agent started (its circuit breaker counts consecutive failures). */
  const reportStart = (runId: string, started: boolean, reason = '') =>
    gate()
      .signal(dispatchReportSignal, { runId, started, reason: reason.slice(0, 2000) })
      .catch((err: unknown) => log.warn('could not report to the dispatch gate', { runId, error: String(err) }));

  /** One attempt: a dispatch slot, then a run from start to gt_done / exit / stall. Returns the published head on success. */
  const runAttempt = async (
    round: number,
    attempt: number,
    afterFailure: boolean,
    step?: AgentStep,
  ): Promise<AttemptResult> => {
    const runId = runIdOf(bead.id, round, attempt);
    try {
      setStatus('open', `waiting for a dispatch slot on rig ${rig.name} (\`gt rig dispatch ${rig.name}\`)`);
      await town.requestDispatchSlot({
        rig: rig.name,
        request: {
          beadId: bead.id,
          runId,
          workflowId: workflowInfo().workflowId,
          maxPolecats: rig.maxPolecats,
          breakerThreshold: policy.breakerThreshold,
          breakerProbeInterval: policy.breakerProbeInterval,
        },
      });
      await condition(() => grants.has(runId));
      return await runGranted(runId, round, attempt, afterFailure, step);
    } finally {
      await CancellationScope.nonCancellable(() =>
        sendToGate(
          gate()
            .signal(dispatchReleaseSignal, { runId })
            .catch((err: unknown) => log.warn('could not release the dispatch slot', { runId, error: String(err) })),
        ),
      );
    }
  };

  const runGranted = async (
    runId: string,
    round: number,
    attempt: number,
    afterFailure: boolean,
    step?: AgentStep,
  ): Promise<AttemptResult> => {
    const { hostQueue } = await town.claimHost.executeWithOptions(
      { summary: `${step ? `${stepLabel}: ` : ''}claim a host for run ${runId}` },
      [],
    );
    const onHost = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      startToCloseTimeout: '10m',
      // The activities heartbeat (activities/heartbeat.ts): a host that dies mid-way is noticed this soon.
      heartbeatTimeout: policy.heartbeatTimeout,
      // If the host that claimed the run disappears, fail fast and dispatch the next attempt elsewhere.
      scheduleToStartTimeout: policy.startTimeout,
      retry: {
        initialInterval: '2s',
        maximumInterval: '30s',
        maximumAttempts: 5,
        nonRetryableErrorTypes: ['InvalidInput', 'TargetMissing'],
      },
    });
    const starter = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      summary: `${step ? `${stepLabel}: ` : ''}start agent run ${runId}`,
      startToCloseTimeout: policy.startTimeout,
      scheduleToStartTimeout: policy.startTimeout,
      // Start-or-adopt by run id: a retry after an uncertain start adopts the agent instead of launching a second.
      retry: {
        initialInterval: '1s',
        maximumInterval: '10s',
        maximumAttempts: 3,
        nonRetryableErrorTypes: ['RuntimeUnavailable', 'InvalidInput', 'NoAgentCommand', 'AgentStartRefused'],
      },
    });
    const supervisor = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      summary: `${step ? `${stepLabel}: ` : ''}supervise agent run ${runId}`,
      startToCloseTimeout: policy.runTimeout,
      heartbeatTimeout: policy.heartbeatTimeout,
      scheduleToStartTimeout: policy.startTimeout,
      // Retries re-attach to the live agent (its handle is in the input and the heartbeat details); they never relaunch it.
      retry: {
        initialInterval: '1s',
        maximumInterval: '10s',
        maximumAttempts: 5,
        nonRetryableErrorTypes: ['RuntimeUnavailable', 'InvalidInput'],
      },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    });

    const record: RunRecord = { runId, round, attempt, outcome: 'running', startedAt: new Date().toISOString() };
    state.runs.push(record);
    const startFailed = async (why: string) => {
      current = undefined;
      Object.assign(record, { outcome: 'start_failed', endedAt: new Date().toISOString() });
      await reportStart(runId, false, why);
      log.warn('run failed to start', { beadId: bead.id, runId, why });
      return { failure: `${runId}: the agent could not be started: ${why}` };
    };

    setStatus('in_progress', `preparing run ${runId}`);
    let prepared;
    try {
      prepared = await onHost.prepareRun.executeWithOptions(
        { summary: `${step ? `${stepLabel}: ` : ''}prepare the worktree of ${bead.id} for run ${runId}` },
        [
          {
            rig,
            bead,
            runId,
            round,
            attempt,
            targetBranch,
            feedback: state.feedback,
            checkpoints: keepNewest(
              checkpoints.map((c) => `${c.note} (saved by ${c.runId})`),
              CAPS.checkpointsTotal,
            ),
            messages: keepNewest(
              inbox.slice(-20).map((m) => `${m.message} (from ${m.from})`),
              CAPS.messagesTotal,
            ),
            ...(step ? { step: step.prompt } : {}),
          },
        ],
      );
    } catch (err) {
      if (isCancellation(err)) throw err;
      return startFailed(`preparing the worktree failed: ${failureMessage(err)}`);
    }
    record.host = prepared.host;
    const launch = {
      runId,
      beadId: bead.id,
      workflowId: workflowInfo().workflowId,
      role: 'polecat' as const,
      rig,
      worktree: prepared.worktree,
      promptFile: prepared.promptFile,
      branch,
      targetBranch,
    };
    // Current before the agent exists: a fast agent may call gt done before the start activity returns.
    current = { runId, lastProgressAt: Date.now(), record, inboxCursor: inboxSeq };
    setStatus('in_progress', `starting run ${runId} on ${prepared.host}`);
    let started;
    try {
      started = await starter.startAgentRun(launch);
    } catch (err) {
      if (isCancellation(err)) throw err;
      return startFailed(failureMessage(err));
    }
    await sendToGate(reportStart(runId, true));
    countTownEvent(metricMeter, 'runsStarted', { rig: rig.name });
    if (afterFailure) countTownEvent(metricMeter, 'redispatches', { rig: rig.name });
    setStatus('in_progress', `waiting for gt done from run ${runId}`);
    log.info('run started', { beadId: bead.id, runId, host: prepared.host, adopted: started.adopted });

    let exit: { exitCode: number | null } | undefined;
    let lost: string | undefined;
    const scope = new CancellationScope();
    const supervision = scope
      .run(() => supervisor.superviseAgentRun({ ...launch, handle: started.handle }))
      .then(
        (r) => void (exit = r),
        // Only a cancellation this bead asked for is expected; any other failure (or an unrequested cancel) means
        // supervision was lost and the attempt ends.
        (err: unknown) =>
          void (lost = isCancellation(err) && scope.consideredCancelled ? undefined : failureMessage(err)),
      );

    supervising = supervision;
    const run = current;
    let outcome: RunOutcome;
    for (;;) {
      const quietFor = Date.now() - run.lastProgressAt;
      await condition(
        () => !!run.done || !!run.handedOff || exit !== undefined || lost !== undefined || escalations.length > 0,
        Math.max(policy.stallTimeout - quietFor, 1),
      );
      await raisePending();
      if (run.done) outcome = 'done';
      else if (run.handedOff) outcome = 'handed_off';
      else if (exit) outcome = 'exited';
      else if (lost !== undefined) outcome = 'lost';
      else if (Date.now() - run.lastProgressAt >= policy.stallTimeout) outcome = 'stalled';
      else continue;
      break;
    }
    if (outcome === 'done' || outcome === 'handed_off')
      await condition(() => exit !== undefined || lost !== undefined, EXIT_GRACE_MS);
    if (exit === undefined && lost === undefined) {
      setStatus('in_progress', `stopping run ${runId} (${outcome})`);
      scope.cancel();
    }
    await supervision;
    supervising = undefined;
    current = undefined;
    record.outcome = outcome;
    record.endedAt = new Date().toISOString();
    record.exitCode = exit?.exitCode;

    if (outcome === 'handed_off') {
      log.info('run handed off', { beadId: bead.id, runId, handoffs: state.handoffs });
      return { handedOff: runId };
    }
    if (outcome !== 'done') {
      const why = {
        exited: `the agent exited (code ${exit?.exitCode ?? 'unknown'}) without calling gt done`,
        stalled: `the agent reported no progress for ${policy.stallTimeout} ms and was stopped`,
        lost: `supervision of the run was lost: ${lost}`,
      }[outcome];
      log.warn('run failed', { beadId: bead.id, runId, outcome, why });
      return { failure: `${runId}: ${why}` };
    }
    setStatus('in_progress', `publishing branch of ${runId}`);
    const published = await onHost.publishBranch.executeWithOptions(
      { summary: `${step ? `${stepLabel}: ` : ''}publish ${branch} from run ${runId}` },
      [{ rig, worktree: prepared.worktree, branch, targetBranch, runId, baseSha: prepared.baseSha }],
    );
    if (published.rejected)
      return { failure: `${runId}: gt done was called but the run's branch was not taken: ${published.rejected}` };
    // An intermediate formula step (a plan, a review) may commit nothing: only the final one must.
    if (published.commitsAhead === 0 && step && !step.prompt.final) return { headSha: '', summary: run.done!.summary };
    if (published.commitsAhead === 0) {
      return {
        failure: `${runId}: gt done was called but ${branch} has no commits ahead of ${targetBranch}${published.uncommittedChanges ? ' (changes were left uncommitted)' : ''}`,
      };
    }
    return { headSha: published.headSha, summary: run.done!.summary };
  };

  /**
   * Runs of one round until one hands in its branch: failed attempts are bounded by maxAttempts and spaced by
   * exponential backoff; a hand-off uses neither (the next run starts at once; maxHandoffs bounds them). Run ids
   * number every run of the round (a1, a2, …), failed or handed off. Without hand-offs this is the same sequence of
   * commands as the loop it replaced (one attempt per run), so recorded histories replay unchanged.
   *
   * With `step` (a formula's agent step, workflows/formula.ts) the step's own attempts bound its failures, and its
   * runs are numbered on from the runs the round already has (the formula's steps share the round). A formula step
   * never continues as new: the engine's position (step, loops, head) is not carried across, so the bead's history
   * just grows (docs/formulas.md, "Limits").
   */
  const runPolecat = async (
    round: number,
    from?: { nextRun: number; failures: string[]; lastFailed: boolean },
    step?: AgentStep,
  ): Promise<RunResult> => {
    const maxAttempts = step?.attempts ?? policy.maxAttempts;
    const failures = [...(from?.failures ?? [])];
    let lastFailed = from?.lastFailed ?? false;
    const nextRun = from?.nextRun ?? (step ? state.runs.filter((r) => r.round === round).length + 1 : 1);
    for (let run = nextRun; failures.length < maxAttempts; run++) {
      // Between runs nothing is in flight: the one place a long bead hands over to a fresh history.
      if (!step && continueAsNewDue()) await continueNow({ round, nextRun: run, failures, lastFailed });
      const result = await runAttempt(round, run, lastFailed, step);
      if ('headSha' in result) return result;
      lastFailed = 'failure' in result;
      if (!('failure' in result)) continue;
      failures.push(result.failure);
      if (failures.length < maxAttempts) {
        const backoff = Math.min(policy.retryBackoff * 2 ** (failures.length - 1), MAX_BACKOFF_MS);
        setStatus('open', `attempt ${failures.length} failed; next attempt in ${backoff} ms`);
        await sleep(backoff);
      }
    }
    return {
      failure: capText(
        `all ${maxAttempts} attempts ${step ? `of step ${step.prompt.id} ` : ''}of round ${round} failed:\n- ${failures.join('\n- ')}`,
        CAPS.feedback,
      ),
    };
  };

  /** What the formula engine (workflows/formula.ts) may use of this bead: its runs, its state and its status line. */
  const formulaHost: FormulaHost = {
    bead,
    rig,
    convoyId: convoy?.id,
    state,
    runAgent: (round, step) => runPolecat(round, undefined, step),
    setStep: (label) => void (stepLabel = label),
    setStatus,
  };

  const continueAsNewDue = () =>
    workflowInfo().continueAsNewSuggested ||
    (continueAsNewAfterEvents !== undefined && workflowInfo().historyLength >= continueAsNewAfterEvents);

  /** Hands the bead to a new run of its workflow (same id) at this point: no run, activity or child is in flight. */
  const continueNow = async (at: { round: number; nextRun: number; failures: string[]; lastFailed: boolean }) => {
    await raisePending();
    await Promise.all(toGate);
    await condition(allHandlersFinished);
    const next = (state.continuedAsNew ?? 0) + 1;
    log.info('bead continues as new', { beadId: bead.id, historyLength: workflowInfo().historyLength, next });
    return continueAsNew<typeof beadWorkflow>({
      bead,
      rig,
      convoy,
      formula,
      resume,
      continueAsNewAfterEvents,
      continued: {
        firstRound,
        ...at,
        // Failure texts carry agent-influenced detail: capped to what the continuation's schema accepts, so the
        // next run never refuses its own input.
        failures: at.failures.map((f) => capText(f, MAX_TEXT)),
        handoffs: state.handoffs ?? 0,
        continuedAsNew: next,
        state: {
          runs: state.runs.slice(-MAX_CARRIED_RUNS),
          rounds: state.rounds.slice(-MAX_CARRIED_ROUNDS),
          feedback: state.feedback,
          checkpoints,
          inbox: inbox.slice(-MAX_CARRIED_INBOX),
        },
      },
    });
  };

  const lastOutcome = () => {
    const o = state.rounds[state.rounds.length - 1]?.outcome;
    return o && 'feedback' in o ? `[${o.kind}] ${o.feedback.split('\n')[0]}` : 'unknown';
  };

  const finish = async (result: BeadResult): Promise<BeadResult> => {
    await Promise.all(toGate);
    setStatus(result.status, result.reason ?? (result.commit ? `merged as ${result.commit}` : result.status));
    await raisePending();
    if (result.status === 'failed') {
      state.failureReason = result.reason;
      // Bounded retries are exhausted: escalate once and leave the decision to a human.
      await town.raiseEscalation({
        // A retried run that fails again is a new escalation (the first one may be acknowledged already).
        id: `bead-${escalationIdPart(bead.id)}${retry ? `.retry${retry}` : ''}`,
        severity: 'high',
        source: 'bead',
        reason: `bead ${bead.id} failed: ${result.reason ?? 'unknown'}`,
        rig: rig.name,
        beadId: bead.id,
        convoyId: convoy?.id,
      });
    }
    if (convoy) {
      await CancellationScope.nonCancellable(() =>
        getExternalWorkflowHandle(convoyWorkflowId(convoy.id))
          .signal(beadReportSignal, {
            beadId: bead.id,
            status: result.status as 'closed' | 'failed' | 'cancelled',
            commit: result.commit,
            reason: result.reason,
            ...(retry ? { retry } : {}),
          })
          .catch((err: unknown) =>
            log.warn('could not report to convoy', { beadId: bead.id, convoyId: convoy.id, error: String(err) }),
          ),
      );
    }
    return retry ? { ...result, retry } : result;
  };

  try {
    for (let round = continued?.round ?? firstRound; round < firstRound + policy.maxRounds; round++) {
      state.round = round;
      const work =
        formula && !isSingleRun(formula) && patched(FORMULA_ENGINE)
          ? await runFormula(formulaHost, formula, round)
          : await runPolecat(round, continued?.round === round ? continued : undefined);
      if ('failure' in work) return await finish({ beadId: bead.id, status: 'failed', reason: work.failure });

      const mrId = mergeRequestWorkflowId(bead.id, round);
      state.rounds.push({ round, headSha: work.headSha, mergeRequest: mrId });
      setStatus('in_review', `merge request ${mrId} (${work.headSha.slice(0, 10)}) is with the refinery`);
      const outcome: MergeOutcome = await executeChild(mergeRequestWorkflow, {
        workflowId: mrId,
        args: [{ mrId, bead, rig, round, branch, headSha: work.headSha, targetBranch, convoyId: convoy?.id }],
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        typedSearchAttributes: [
          { key: SA.kind, value: 'merge-request' },
          { key: SA.rig, value: rig.name },
          { key: SA.beadId, value: bead.id },
          ...(convoy ? [{ key: SA.convoyId, value: convoy.id }] : []),
        ],
        staticSummary: `MR round ${round} of ${bead.id}: ${bead.title}`,
      });
      state.rounds[state.rounds.length - 1]!.outcome = outcome;
      if (outcome.kind === 'merged') {
        state.mergedCommit = outcome.commit;
        return await finish({ beadId: bead.id, status: 'closed', commit: outcome.commit });
      }
      if (outcome.kind === 'pr_closed') {
        // A human closed the pull request: a decision, not a defect to rework. Fail (and escalate) at once.
        return await finish({ beadId: bead.id, status: 'failed', reason: outcome.feedback });
      }
      state.feedback = appendFeedback(state.feedback, `[${outcome.kind}] ${outcome.feedback}`);
      log.info('merge request sent back for rework', { beadId: bead.id, mrId, kind: outcome.kind });
      // Counted only when a polecat gets it back: after the last round nobody does (the bead fails below).
      if (round < policy.maxRounds) countTownEvent(metricMeter, 'rework', { rig: rig.name, kind: outcome.kind });
    }
    return await finish({
      beadId: bead.id,
      status: 'failed',
      reason: capText(`no merge after ${policy.maxRounds} rounds of rework; the last: ${lastOutcome()}`, CAPS.feedback),
    });
  } catch (err) {
    if (isCancellation(err)) {
      // The cancel reached the supervising activity with the bead's; wait for it to stop the agent, so a cancelled
      // bead (and `gt bead cancel` returning) means its process is gone. Histories from before ended without waiting.
      const stopping = supervising;
      if (stopping && patched(CANCEL_WAITS_FOR_AGENT_STOP)) {
        setStatus(state.status, 'cancelled: stopping its agent');
        await CancellationScope.nonCancellable(() => stopping);
      }
      // The run in flight was stopped with the bead: its record must not stay "running" forever.
      for (const r of state.runs)
        if (r.outcome === 'running') Object.assign(r, { outcome: 'cancelled', endedAt: new Date().toISOString() });
      current = undefined;
      // An operator's recorded reason (gt bead cancel) goes to the convoy and the result; a convoy's stop has none.
      const why = state.cancellation
        ? `cancelled by ${state.cancellation.by}: ${state.cancellation.reason}`
        : 'cancelled by an operator';
      await CancellationScope.nonCancellable(() => finish({ beadId: bead.id, status: 'cancelled', reason: why }));
    }
    throw err;
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
