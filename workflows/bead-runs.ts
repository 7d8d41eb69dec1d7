/**
 * The bead's polecat runs (workflows/bead.ts is the process): the runs of one round until one hands in its branch —
 * each takes a slot from the rig's dispatch gate (capacity, operator pause, circuit breaker) and gives it back when it
 * ends, claims a host, prepares the worktree, runs the agent (workflows/agent-run.ts: start, supervision, stall, exit
 * grace) and publishes the branch. Between runs, nothing is in flight: the one place a long bead continues as new.
 *
 * Size (over ~300 lines): one class, because a round's runs, a formula's parallel legs and the formula host share the
 * same slot, fence and continue-as-new bookkeeping; split, each part would take all of it as arguments.
 */
import {
  allHandlersFinished,
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  metricMeter,
  workflowInfo,
} from '@temporalio/workflow';
import type { BeadResult, BeadWorkflowInput, RunRecord } from '../domain/bead';
import { MAX_CARRIED_INBOX, MAX_CARRIED_ROUNDS, MAX_CARRIED_RUNS, MAX_TEXT } from '../domain/bead';
import { CAPS, capText, keepNewest } from '../domain/caps';
import { carriedSteps, type FormulaProgress } from '../domain/formula';
import {
  type DispatchRequest,
  dispatchGateWorkflowId,
  dispatchReleaseSignal,
  dispatchReportSignal,
  dispatchRequestOf,
} from '../domain/dispatch';
import { beadBranch, legBranch, mergeRequestWorkflowId, runIdOf } from '../domain/ids';
import { countTownEvent } from '../domain/metrics';
import type { RigConfig } from '../domain/rig';
import { failureMessage } from '../domain/validation';
import { type AgentLaunch, type AttemptsAt, hostActivities, type Launched, runAttempts } from './agent-run';
import { type Bead, PolecatRun, town, townLocally } from './bead-state';
import type { HostQueueActivities } from '../activities';
import type { SlotAnswer } from '../activities/dispatch';
import type { AgentStep, FormulaHost, LegResult, RunResult } from './formula-host';
import { deliverLocally } from './local-delivery';
import { ticketTemplate } from './merge-request-state';
import { NON_RETRYABLE } from '../domain/failures';

/** patched() id: a run's report and release go to the dispatch gate without holding up the bead. */
export const GATE_SIGNALS_WITHOUT_WAITING = 'bead-gate-signals-without-waiting';
/** patched() id: the dispatch request, and the host claim of a run not retrying a failure, are local activities. */
export const DISPATCHES_LOCALLY = 'bead-dispatches-locally';
/** patched() id: one host activity, launchRun, prepares the run and starts its agent (prepareRun + startAgentRun). */
export const LAUNCHES_IN_ONE_ACTIVITY = 'bead-launches-in-one-activity';
/**
 * patched() id (in the bead's baseline only): a run's start is reported to the gate from a local activity, a marker
 * in the workflow task that learned it, where the signal cost two events and a workflow task for its acknowledgement.
 */
export const REPORTS_START_LOCALLY = 'bead-reports-start-locally';
/**
 * patched() id (in the bead's baseline only): a run not retrying a failure claims its host with its dispatch request,
 * one local activity where the request and the claim were two markers.
 */
export const CLAIMS_WITH_DISPATCH = 'bead-claims-with-dispatch';
/**
 * patched() id (in the bead's baseline only): launchRun tells the dispatch gate the agent started, as it starts; the
 * workflow task that learns of the start no longer runs a local activity for it (unless the host could not tell).
 */
export const LAUNCH_REPORTS_START = 'bead-launch-reports-start';
/**
 * patched() id (in the bead's baseline only): a run's slot goes back to the gate from a local activity, a marker where
 * the signal cost its initiation and its acknowledgement.
 */
export const RELEASES_LOCALLY = 'bead-releases-locally';
/**
 * patched() id (in the bead's baseline only): after a `gt done` that came through the gateway of the worker supervising
 * the run, the supervision times the exit grace (domain/bead.ts DoneUpdate), where a timer cost two events.
 */
export const GRACE_ON_HOST = 'bead-grace-on-host';
/**
 * patched() id (in the bead's baseline only): the bead hands its merge request's ticket to the refinery itself, from a
 * local activity in the workflow task that starts the merge request, and the merge request only waits for the answer.
 * Such a bead's polecat runs also give their supervision the ticket but for its head, which the host then hands over as
 * it publishes the branch (`RunExit.enqueued`): the bead's local activity is left out when it did.
 */
export const QUEUES_MERGE_REQUEST = 'bead-queues-merge-request';
/**
 * patched() id: a run's branch that the refinery already merged as the round's merge request (a ticket its supervision
 * handed over unheard: `ImportedBranch.mergedAs`) is the round's head, not a run that committed nothing; the merge
 * request the bead then starts is given the refinery's kept answer. Asked only for such a branch.
 */
export const TAKES_MERGED_BRANCH = 'bead-takes-merged-branch';

/**
 * patched() id (in the bead's baseline only; a bead from before asks it for such a run): the first run of a bead that
 * came with the host that started it (`BeadWorkflowInput.startedOn`: a convoy's worker) goes to that host and asks the
 * dispatch gate from its launch (launchRunWhenGranted), beside the worktree's preparation: the bead's first workflow
 * task runs no local activity and waits for no update.
 */
export const ASKS_IN_LAUNCH = 'bead-asks-in-launch';

/** Which of a run's steps go the newer way (asked as the attempt starts, before any local activity of it). */
interface RunPatches {
  locally: boolean;
  oneActivity: boolean;
  launchReports: boolean;
  graceOnHost: boolean;
}

/** A run's status while the rig's gate has not granted it a slot. */
const waitingForSlot = (rig: string) => `waiting for a dispatch slot on rig ${rig} (\`gt rig dispatch ${rig}\`)`;

/**
 * The highest run number `round` has used (0 for none): the next run of the round is numbered after it. The newest
 * records are the ones carried across continue-as-new, so this holds when the oldest were dropped (a count would not).
 */
const lastRunOf = (runs: readonly RunRecord[], round: number) =>
  runs.reduce((n, r) => (r.round === round ? Math.max(n, r.attempt) : n), 0);

/** A run's worktree and prompt on its host, as prepareRun (or launchRun) made them. */
type Prepared = Awaited<ReturnType<HostQueueActivities['prepareRun']>>;

/** How one run of a round ended: its branch was handed in, it failed, or it handed off to the next run. */
type AttemptResult = RunResult | { handedOff: string };

export class PolecatRuns {
  /** Signals to the gate still in flight: the bead waits for them only before it ends (histories from before waited each time). */
  private readonly toGate = new Set<Promise<void>>();
  /**
   * Runs that handed in their branch and whose slot goes back once the merge request has started (releaseDeferred): a
   * local activity keeps its workflow task open until it returns, and in the task that starts the merge request it
   * would hold up that start.
   */
  private readonly deferredReleases: string[] = [];
  /** The ticket the last run's supervision handed to the refinery as it published the branch (handedAtExit). */
  private enqueuedAtExit: { round: number; headSha: string; rig: RigConfig; queued: boolean } | undefined;
  /**
   * Rounds whose ticket a run's supervision was given, to hand to the refinery as it publishes the branch, and that
   * neither a merge request nor the bead has taken charge of since (ticketSettled).
   */
  private readonly ticketsGiven = new Set<number>();
  /** Runs whose host gave their slot back as the agent exited (RunExit.slotReleased): the bead does not again. */
  private readonly releasedAtExit = new Set<string>();
  private readonly branch: string;

  constructor(private readonly b: Bead) {
    this.branch = beadBranch(b.input.bead.id);
  }

  /** What the formula engine (workflows/formula.ts) may use of this bead: its runs, its state and its status line. */
  formulaHost(): FormulaHost {
    const { bead, rig, convoy } = this.b.input;
    return {
      bead,
      rig,
      convoyId: convoy?.id,
      state: this.b.state,
      runAgent: (round, step) => this.runRound(round, undefined, step),
      runLegs: (round, legs, ended) => this.runLegs(round, legs, ended),
      setStep: (label) => void (this.b.stepLabel = label),
      walk: (session) => void (this.b.singleSession = session),
      carried: (round) => {
        const { continued, resume } = this.b.input;
        // A continued run was handed the position of its first round only; a retry's is for its first round.
        if (continued) return continued.round === round ? continued.formula?.at : undefined;
        return round === this.b.firstRound ? resume?.carried?.formula?.at : undefined;
      },
      continueAsNewDue: () => this.continueAsNewDue(),
      continueAsNew: (round) => {
        const { state } = this.b;
        return this.continueNow(
          { round, nextRun: lastRunOf(state.runs, round) + 1, failures: [], lastFailed: false },
          { at: state.formulaAt!, steps: carriedSteps(state.steps ?? []) },
        );
      },
      setStatus: (status, waitingFor) => this.b.setStatus(status, waitingFor),
      patched: (patchId) => this.b.patches.has(patchId),
    };
  }

  /**
   * What the supervision of the run that published round `round`'s `headSha` did with the round's ticket: handed it to
   * the refinery (`queued`), or found the rig asks for a review (the merge request hands it over after that), under the
   * rig configuration it read. Undefined when it did neither: the bead hands the ticket over itself.
   */
  handedAtExit(round: number, headSha: string): { rig: RigConfig; queued: boolean } | undefined {
    const at = this.enqueuedAtExit;
    if (at?.round !== round || at.headSha !== headSha) return undefined;
    return { rig: at.rig, queued: at.queued };
  }

  /**
   * Whether round `round`'s ticket may be with the refinery without this bead knowing it: a run's supervision was given
   * it, nothing has taken charge of it since, and the run's gt done was accepted (the supervision hands a ticket over only then). Its answer says whether it
   * did, but an answer can be lost: an attempt that handed the ticket over and died with its worker, and a retry that
   * knew nothing of it (doneRuns is the gateway's memory, of one worker), or a cancel that came first.
   */
  mayHoldTicket(round: number): boolean {
    if (!this.ticketsGiven.has(round)) return false;
    const { b } = this;
    return (
      b.state.runs.some((r) => r.round === round && r.outcome === 'done') ||
      b.runs.all.some((r) => r.record.round === round && r.done !== undefined)
    );
  }

  /** Round `round`'s ticket is taken back, or its merge request started (which takes it back should it be cancelled). */
  ticketSettled(round: number): void {
    this.ticketsGiven.delete(round);
  }

  /** The round's ticket but for its head, for the supervision of a run that is not a formula's step to hand over. */
  private ticketFor(round: number, step: AgentStep | undefined) {
    if (step || !this.b.patches.has(QUEUES_MERGE_REQUEST)) return {};
    this.ticketsGiven.add(round);
    return { enqueue: { ticket: ticketTemplate(this.b.mergeRequestOf(round)) } };
  }

  /** Sends the releases deferred until now, then waits for the signals to the dispatch gate still in flight. */
  gateSignalsSent(): Promise<void[]> {
    this.releaseDeferred();
    return Promise.all(this.toGate);
  }

  /** Gives back the slots of runs that handed in their branch (the bead calls it once their merge request started). */
  releaseDeferred(): void {
    for (const runId of this.deferredReleases.splice(0))
      void CancellationScope.nonCancellable(() => this.sendToGate(this.release(runId, true)));
  }

  /**
   * Runs of one round until one hands in its branch: failed attempts are bounded by maxAttempts and spaced by
   * exponential backoff; a hand-off uses neither (the next run starts at once; maxHandoffs bounds them). Run ids
   * number every run of the round (a1, a2, …), failed or handed off. Without hand-offs this is the same sequence of
   * commands as the loop it replaced (one attempt per run), so recorded histories replay unchanged.
   *
   * With `step` (a formula's agent step, workflows/formula.ts) the step's own attempts bound its failures, and its
   * runs are numbered on from the runs the round already has (the formula's steps share the round). A formula step
   * never continues as new between its attempts: the engine does, between steps (formulaHost().continueAsNew).
   */
  async runRound(round: number, from?: AttemptsAt, step?: AgentStep): Promise<RunResult> {
    const { state, input } = this.b;
    const policy = input.rig.policy;
    const maxAttempts = step?.attempts ?? policy.maxAttempts;
    const result = await runAttempts<{ headSha: string; summary?: string }>({
      maxAttempts,
      retryBackoff: policy.retryBackoff,
      from: {
        nextRun: from?.nextRun ?? (step ? lastRunOf(state.runs, round) + 1 : 1),
        failures: from?.failures ?? [],
        lastFailed: from?.lastFailed ?? false,
      },
      // Between runs nothing is in flight: the one place a long bead hands over to a fresh history.
      between: async (at) => {
        if (!step && this.continueAsNewDue()) await this.continueNow({ round, ...at });
      },
      attempt: (run, lastFailed) => this.runAttempt(round, run, lastFailed, step),
      backingOff: (failed, backoff) =>
        this.b.setStatus('open', `attempt ${failed} failed; next attempt in ${backoff} ms`),
    });
    if (!('failures' in result)) return result;
    return {
      failure: capText(
        `all ${maxAttempts} attempts ${step ? `of step ${step.prompt.id} ` : ''}of round ${round} failed:\n- ${result.failures.join('\n- ')}`,
        CAPS.feedback,
      ),
    };
  }

  /**
   * The legs of a formula's legs step (workflows/formula.ts), all at once: each leg is a run of attempts of its own
   * (its own dispatch slot, its own run ids and so its own fence, a branch and worktree of its own), as runRound's are.
   * Run numbers are handed out as attempts start (legs interleave), above every run the round had before; `ended` is
   * told as each leg ends. Only formulas with a legs step get here, and those were refused at sling before this
   * existed (formulaRunProblem), so no recorded history reaches it: it needs no patched() id.
   */
  async runLegs(round: number, legs: AgentStep[], ended: (i: number, r: LegResult) => void): Promise<LegResult[]> {
    const { state, input } = this.b;
    const policy = input.rig.policy;
    const after = lastRunOf(state.runs, round);
    let next = after + 1;
    return Promise.all(
      legs.map(async (step, i) => {
        const runs: string[] = [];
        const maxAttempts = step.attempts ?? policy.maxAttempts;
        const result = await runAttempts<{ headSha: string; summary?: string }>({
          maxAttempts,
          retryBackoff: policy.retryBackoff,
          from: { nextRun: 1, failures: [], lastFailed: false },
          attempt: (_run, lastFailed) => {
            const run = next++;
            const leg = { index: i + 1, after, earlier: [...runs] };
            runs.push(runIdOf(input.bead.id, round, run));
            return this.runAttempt(round, run, lastFailed, { ...step, leg });
          },
          backingOff: (failed, backoff) =>
            this.b.setStatus('in_progress', `leg ${i + 1}: attempt ${failed} failed; next attempt in ${backoff} ms`),
        });
        const done: LegResult =
          'failures' in result
            ? {
                failure: capText(
                  `all ${maxAttempts} attempts of leg ${i + 1} failed:\n- ${result.failures.join('\n- ')}`,
                  CAPS.feedback,
                ),
                runs,
              }
            : { ...result, runs };
        ended(i, done);
        return done;
      }),
    );
  }

  private continueAsNewDue() {
    const after = this.b.input.continueAsNewAfterEvents;
    return workflowInfo().continueAsNewSuggested || (after !== undefined && workflowInfo().historyLength >= after);
  }

  /**
   * Hands the bead to a new run of its workflow (same id) at this point: no run, activity or child is in flight.
   * `progress`: the formula engine's position and step records, when it is between two steps.
   */
  private async continueNow(at: AttemptsAt & { round: number }, progress?: FormulaProgress): Promise<never> {
    const { state, input } = this.b;
    await this.b.runs.raisePending();
    await this.gateSignalsSent();
    await condition(allHandlersFinished);
    const next = (state.continuedAsNew ?? 0) + 1;
    log.info('bead continues as new', { beadId: input.bead.id, historyLength: workflowInfo().historyLength, next });
    const { bead, rig, convoy, formula, resume, continueAsNewAfterEvents } = input;
    return continueAsNew<(input: BeadWorkflowInput) => Promise<BeadResult>>({
      bead,
      rig,
      convoy,
      formula,
      resume,
      continueAsNewAfterEvents,
      continued: {
        firstRound: this.b.firstRound,
        ...at,
        // Failure texts carry agent-influenced detail: capped to what the continuation's schema accepts, so the
        // next run never refuses its own input.
        failures: at.failures.map((f) => capText(f, MAX_TEXT)),
        handoffs: state.handoffs ?? 0,
        continuedAsNew: next,
        ...(progress ? { formula: progress } : {}),
        state: {
          runs: state.runs.slice(-MAX_CARRIED_RUNS),
          rounds: state.rounds.slice(-MAX_CARRIED_ROUNDS),
          feedback: state.feedback,
          checkpoints: this.b.checkpoints,
          inbox: this.b.inbox.slice(-MAX_CARRIED_INBOX),
        },
      },
    });
  }

  private gate() {
    return getExternalWorkflowHandle(dispatchGateWorkflowId(this.b.input.rig.name));
  }
  private async sendToGate(signal: Promise<void>): Promise<void> {
    if (!this.b.patches.has(GATE_SIGNALS_WITHOUT_WAITING)) return signal;
    const pending: Promise<void> = signal.finally(() => this.toGate.delete(pending));
    this.toGate.add(pending);
  }
  /** Tells the rig's gate whether the run's agent started (its circuit breaker counts consecutive failures). */
  private reportStart(runId: string, started: boolean, reason = '') {
    const report = { runId, started, reason: reason.slice(0, 2000) };
    const sent = this.b.patches.has(REPORTS_START_LOCALLY)
      ? deliverLocally.reportDispatchStart.executeWithOptions(
          { summary: `report to the dispatch gate that run ${runId} ${started ? 'started' : 'failed to start'}` },
          [{ rig: this.b.input.rig.name, report }],
        )
      : this.gate().signal(dispatchReportSignal, report);
    return sent.catch((err: unknown) =>
      log.warn('could not report to the dispatch gate', { runId, error: String(err) }),
    );
  }

  /**
   * Gives the run's slot back: from a local activity (RELEASES_LOCALLY), else, or should that fail, by signal. A
   * formula's parallel legs release by signal, as they ask by signal (runAttempt).
   */
  private release(runId: string, locally: boolean): Promise<void> {
    const bySignal = () =>
      this.gate()
        .signal(dispatchReleaseSignal, { runId })
        .catch((err: unknown) => log.warn('could not release the dispatch slot', { runId, error: String(err) }));
    if (!locally) return bySignal();
    return deliverLocally.releaseDispatchSlot
      .executeWithOptions({ summary: `give the dispatch slot of run ${runId} back` }, [
        { rig: this.b.input.rig.name, release: { runId } },
      ])
      .catch(bySignal);
  }

  /** One attempt: a dispatch slot, then a run from start to gt_done / exit / stall. Returns the published head on success. */
  private async runAttempt(
    round: number,
    attempt: number,
    afterFailure: boolean,
    step?: AgentStep,
  ): Promise<AttemptResult> {
    const { bead, rig } = this.b.input;
    const runId = runIdOf(bead.id, round, attempt);
    const leg = !!step?.leg;
    // Asked here, before any local activity of the run, as the merge request and the convoy ask theirs: asked after
    // the host claim, its marker followed the claim's in the same workflow task, and a query's replay of such a
    // history failed once ("Non-deprecated patch marker encountered … no corresponding change command").
    const { patches } = this.b;
    const releasesLocally = !leg && patches.has(RELEASES_LOCALLY);
    let ended: AttemptResult | undefined;
    try {
      this.b.setStatus('open', waitingForSlot(rig.name));
      // Local: two hand-offs fewer before the agent starts (docs/performance.md). A workflow task retried runs the
      // request again, which the gate takes as a repeat (a waiting run stays queued once, a holder is granted again).
      const locally = patches.has(DISPATCHES_LOCALLY);
      const oneActivity = patches.has(LAUNCHES_IN_ONE_ACTIVITY);
      const launchReports = patches.has(LAUNCH_REPORTS_START);
      const graceOnHost = patches.has(GRACE_ON_HOST);
      // The host this worker's: as the local claim would be (runGranted), taken in the request's answer.
      const claimHost = locally && !afterFailure && !leg && patches.has(CLAIMS_WITH_DISPATCH);
      const request = dispatchRequestOf(bead.id, runId, workflowInfo().workflowId, rig);
      const { startedOn, resume, continued } = this.b.input;
      const first = this.b.state.runs.length === 0 && !resume && !continued;
      if (claimHost && oneActivity && launchReports && startedOn && first && patches.has(ASKS_IN_LAUNCH)) {
        const run = { locally, oneActivity, launchReports, graceOnHost, claimed: startedOn, ask: request };
        return (ended = await this.runGranted(runId, round, attempt, afterFailure, run, step));
      }
      const answer: SlotAnswer | undefined = await (locally ? townLocally : town).requestDispatchSlot({
        rig: rig.name,
        // A formula's parallel legs ask by signal: granted in answers, each would go on to its host claim (a local
        // activity) while its siblings' requests were still running in the same workflow task, and a query's replay
        // of such a task failed ("Missing associated machine for LocalActivity"). One run at a time asks for the answer.
        answer: !leg,
        ...(claimHost ? { claimHost } : {}),
        request,
      });
      // Granted in the gate's answer: the run starts in this workflow task, no grant signal comes (a recorded request
      // from before the answer returned nothing, and its grant came by signal, as a queued run's still does).
      if (answer?.granted) this.b.grants.add(runId);
      await condition(() => this.b.grants.has(runId));
      const run = { locally, oneActivity, launchReports, graceOnHost, claimed: answer?.hostQueue };
      ended = await this.runGranted(runId, round, attempt, afterFailure, run, step);
      return ended;
    } finally {
      // A round's branch handed in goes to a merge request next: its slot goes back once that has started. A formula
      // step's run gives it back now (the next step may need the slot).
      if (this.releasedAtExit.delete(runId)) log.info('dispatch slot given back at the exit', { runId });
      else if (releasesLocally && !step && ended && 'headSha' in ended) this.deferredReleases.push(runId);
      else await CancellationScope.nonCancellable(() => this.sendToGate(this.release(runId, releasesLocally)));
    }
  }

  private async runGranted(
    runId: string,
    round: number,
    attempt: number,
    afterFailure: boolean,
    patches: RunPatches & { claimed?: string; ask?: DispatchRequest },
    step?: AgentStep,
  ): Promise<AttemptResult> {
    const { b } = this;
    const { bead, rig } = b.input;
    const { state } = b;
    const { targetBranch } = state;
    const summary = (what: string) =>
      `${step ? `${b.stepLabel}${step.leg ? ` leg ${step.leg.index}` : ''}: ` : ''}${what}`;
    // A leg works on a branch of its own; every other run on the bead's.
    const branch = step?.leg ? legBranch(bead.id, round, step.leg.index) : this.branch;
    // Claimed locally, the host is the worker running this workflow task: the one that ran the bead's first task,
    // since sticky execution keeps a workflow on its worker. That spreads beads over hosts as the town-queue claim
    // does (a bead's first task goes to any worker), but keeps all of one bead's runs on one host: right while they
    // succeed (a rework round), wrong after a failure the host may have caused (a broken runtime, a full disk), which
    // every attempt would then meet again. So a run retrying a failure claims through the town queue, as before.
    const claim = patches.locally && !afterFailure ? townLocally : town;
    const { hostQueue } = patches.claimed
      ? { hostQueue: patches.claimed }
      : await claim.claimHost.executeWithOptions({ summary: summary(`claim a host for run ${runId}`) }, []);
    const activities = hostActivities(hostQueue, rig.policy, runId, {
      summary,
      hostNonRetryable: [...NON_RETRYABLE.worktree],
    });
    const { onHost } = activities;

    const record: RunRecord = { runId, round, attempt, outcome: 'running', startedAt: new Date().toISOString() };
    state.runs.push(record);
    const startFailed = async (why: string) => {
      Object.assign(record, { outcome: 'start_failed', endedAt: new Date().toISOString() });
      await this.reportStart(runId, false, why);
      log.warn('run failed to start', { beadId: bead.id, runId, why });
      return { failure: `${runId}: the agent could not be started: ${why}` };
    };

    const toPrepare = {
      rig,
      bead,
      runId,
      round,
      attempt,
      targetBranch,
      feedback: state.feedback,
      checkpoints: keepNewest(
        b.checkpoints.map((c) => `${c.note} (saved by ${c.runId})`),
        CAPS.checkpointsTotal,
      ),
      messages: keepNewest(
        b.inbox.slice(-20).map((m) => `${m.message} (from ${m.from})`),
        CAPS.messagesTotal,
      ),
      ...(step ? { step: step.prompt } : {}),
      ...(step?.leg ? { leg: step.leg } : {}),
      // Only the bead's very first run: a later one (a rework, a retry, a formula's next step) starts from the bead's
      // branch as the repository has it, which the run's host learns only by fetching.
      ...(state.runs.length === 1 && !b.input.resume && !b.input.continued ? { targetHas: b.input.convoy?.after } : {}),
    };
    const launchOf = (p: Prepared) => ({
      runId,
      beadId: bead.id,
      workflowId: workflowInfo().workflowId,
      role: 'polecat' as const,
      // A formula step's own agent command and runtime replace the rig's for its runs (start and supervision).
      rig: {
        ...rig,
        ...(step?.agent !== undefined ? { agent: step.agent } : {}),
        ...(step?.runtime !== undefined ? { runtime: step.runtime } : {}),
      },
      worktree: p.worktree,
      promptFile: p.promptFile,
      branch,
      targetBranch,
      // Supervision publishes the branch as the agent exits after an accepted gt done (activities/agent-runs.ts), and
      // hands the round's ticket to the refinery with it (a formula's steps are not a round's last word).
      publish: { baseSha: p.baseSha },
      ...this.ticketFor(round, step),
      // And gives the slot back then (a formula's parallel legs give theirs back by signal, as they ask).
      ...(step?.leg ? {} : { releaseSlot: true }),
    });
    let prepared: Prepared | undefined;
    // launchRun told the gate the agent started (LAUNCH_REPORTS_START): the bead need not. Its recorded result decides.
    let reported = false;
    let launch: AgentLaunch | (() => Promise<Launched>);
    if (patches.oneActivity) {
      // One hand-off fewer before the agent runs (docs/performance.md). drive() admits the run to the fence before it
      // schedules this: a fast agent may call gt done before launchRun returns.
      const toLaunch = {
        ...toPrepare,
        workflowId: workflowInfo().workflowId,
        ...(step?.agent !== undefined ? { agent: step.agent } : {}),
        ...(step?.runtime !== undefined ? { runtime: step.runtime } : {}),
        ...(patches.launchReports ? { reportStart: true } : {}),
      };
      const { ask } = patches;
      launch = async () => {
        let launched: Awaited<ReturnType<HostQueueActivities['launchRun']>> | undefined;
        if (ask) {
          const asked = await activities.launcher.launchRunWhenGranted.executeWithOptions(
            { summary: summary(`ask for a dispatch slot, prepare the worktree of ${bead.id} and start run ${runId}`) },
            [{ ...toLaunch, request: ask }],
          );
          if ('queued' in asked) {
            // Queued by the gate: the grant comes by signal, and the run is launched as any granted run is. Its record
            // and the stall clock start with that launch, as after a wait for the slot before it.
            b.setStatus('open', waitingForSlot(rig.name));
            await condition(() => b.grants.has(runId));
            record.startedAt = new Date().toISOString();
            b.setStatus('in_progress', `preparing and starting run ${runId}`);
          } else launched = asked;
        }
        launched ??= await activities.launcher.launchRun.executeWithOptions(
          { summary: summary(`prepare the worktree of ${bead.id} and start run ${runId}`) },
          [toLaunch],
        );
        reported = patches.launchReports && launched.reported === true;
        prepared = launched.prepared;
        record.host = prepared.host;
        return { launch: launchOf(prepared), started: launched.started };
      };
    } else {
      b.setStatus('in_progress', `preparing run ${runId}`);
      try {
        prepared = await onHost.prepareRun.executeWithOptions(
          { summary: summary(`prepare the worktree of ${bead.id} for run ${runId}`) },
          [toPrepare],
        );
      } catch (err) {
        if (isCancellation(err)) throw err;
        return startFailed(`preparing the worktree failed: ${failureMessage(err)}`);
      }
      record.host = prepared.host;
      launch = launchOf(prepared);
    }
    const run = new PolecatRun(runId, record, b.inboxHead);
    const driven = await run.drive({
      runs: b.runs,
      activities,
      launch,
      stallTimeout: rig.policy.stallTimeout,
      ...(step?.timeout !== undefined ? { timeout: step.timeout } : {}),
      starting: () =>
        b.setStatus(
          'in_progress',
          prepared ? `starting run ${runId} on ${prepared.host}` : `preparing and starting run ${runId}`,
        ),
      started: async (started) => {
        if (!reported) await this.sendToGate(this.reportStart(runId, true));
        countTownEvent(metricMeter, 'runsStarted', { rig: rig.name });
        if (afterFailure) countTownEvent(metricMeter, 'redispatches', { rig: rig.name });
        b.setStatus('in_progress', `waiting for gt done from run ${runId}`);
        log.info('run started', { beadId: bead.id, runId, host: record.host, adopted: started.adopted });
      },
      stopping: (end) => b.setStatus('in_progress', `stopping run ${runId} (${end})`),
      exitGraceOnHost: () => patches.graceOnHost && !!run.done?.exitGraceOnHost,
    });
    if ('startFailed' in driven) return startFailed(failureMessage(driven.startFailed));
    // Set once the agent started: by prepareRun before, or by launchRun.
    const { worktree, baseSha } = prepared!;
    const outcome = driven.end;
    record.outcome = outcome;
    record.endedAt = new Date().toISOString();
    record.exitCode = run.exit?.exitCode;
    // A recorded result decides, so histories from before (no slotReleased) give the slot back as they did.
    if (run.exit?.slotReleased) this.releasedAtExit.add(runId);

    if (outcome === 'handed_off') {
      log.info('run handed off', { beadId: bead.id, runId, handoffs: state.handoffs });
      return { handedOff: runId };
    }
    if (outcome !== 'done') {
      const why = {
        exited: `the agent exited (code ${run.exit?.exitCode ?? 'unknown'}) without calling gt done`,
        stalled: `the agent reported no progress for ${rig.policy.stallTimeout} ms and was stopped`,
        lost: `supervision of the run was lost: ${run.lost ? failureMessage(run.lost.error) : ''}`,
        timed_out: `the run passed step ${step?.prompt.id ?? ''}'s timeout of ${step?.timeout ?? 0} ms and was stopped`,
      }[outcome];
      log.warn('run failed', { beadId: bead.id, runId, outcome, why });
      return { failure: `${runId}: ${why}` };
    }
    // Published by its supervision unless the gt done went through another host's gateway, or the agent did not wait
    // for it: one activity and one workflow task fewer on the way to the merge request. A recorded result decides, so
    // histories from before replay as they ran.
    let published = run.exit?.published;
    if (!published) {
      b.setStatus('in_progress', `publishing branch of ${runId}`);
      // The round's merge request for a run that was given its ticket (a formula's steps are not).
      const mrId = step ? undefined : mergeRequestWorkflowId(bead.id, round);
      published = await onHost.publishBranch.executeWithOptions(
        { summary: summary(`publish ${branch} from run ${runId}`) },
        [{ rig, worktree, branch, targetBranch, runId, baseSha, ...(mrId ? { mrId } : {}) }],
      );
    } else if (run.exit?.enqueued) this.enqueuedAtExit = { round, headSha: published.headSha, ...run.exit.enqueued };
    if (published.rejected)
      return { failure: `${runId}: gt done was called but the run's branch was not taken: ${published.rejected}` };
    if (published.mergedAs && this.b.patches.has(TAKES_MERGED_BRANCH)) {
      log.warn('run branch already merged as the round’s merge request; taking it as handed in', {
        beadId: bead.id,
        runId,
        headSha: published.headSha,
        commit: published.mergedAs,
      });
      return { headSha: published.headSha, summary: run.done!.summary, mergedAs: published.mergedAs };
    }
    // An intermediate formula step (a plan, a review) may commit nothing: only the final one must.
    if (published.commitsAhead === 0 && step && !step.prompt.final) return { headSha: '', summary: run.done!.summary };
    if (published.commitsAhead === 0) {
      return {
        failure: `${runId}: gt done was called but ${branch} has no commits ahead of ${targetBranch}${published.uncommittedChanges ? ' (changes were left uncommitted)' : ''}`,
      };
    }
    return { headSha: published.headSha, summary: run.done!.summary };
  }
}
