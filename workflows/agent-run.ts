/**
 * One agent run, as every workflow that runs agents needs it — the bead's polecat runs (workflows/bead-runs.ts, and
 * through them the formula's agent steps) and the merge request's reviewer runs (workflows/review.ts):
 * - `townActivities`, `hostActivities`: the town's activities, and a run's on the queue of the host that claimed it;
 * - `AgentRuns`: the fence — only a live run may speak to the workflow (anything addressed to an ended run is refused
 *   with `StaleRun`) — and the escalations its agents raised, raised from the main loop (handlers cannot run activities);
 * - `AgentRun`: one run as a handle of its own (its id, its last progress, its supervision): start it, supervise it
 *   with the stall timer, give it EXIT_GRACE_MS to exit after it ended on purpose, stop it otherwise;
 * - `runAttempts`: attempts until one succeeds, failed ones spaced by exponential backoff capped at MAX_BACKOFF_MS.
 * A fence may hold several live runs at once (parallel legs of one bead); today every workflow runs one at a time.
 *
 * Determinism: every command (activity, timer, upsert, cancel) is issued in the order and with the options the bead
 * and the merge request issued before this module existed, so recorded histories replay unchanged.
 */
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  sleep,
} from '@temporalio/workflow';
import type { HostQueueActivities, TownQueueActivities } from '../activities';
import { type AgentReply, EscalateRequest, EXIT_GRACE_MS } from '../domain/bead';
import { escalationIdPart } from '../domain/escalation';
import { escalateUpdate } from '../domain/messages';
import type { RigConfig } from '../domain/rig';
import { parseOrReject } from '../domain/validation';
import { Failure, NON_RETRYABLE, RETRY } from '../domain/failures';

/** How long a host activity's own work (preparing a worktree, publishing a branch) may take. */
const HOST_WORK_MS = 10 * 60_000;
/** The longest wait between two failed attempts. */
export const MAX_BACKOFF_MS = 600_000;

type RunPolicy = RigConfig['policy'];
export type AgentLaunch = Parameters<HostQueueActivities['startAgentRun']>[0];
export type StartedAgent = Awaited<ReturnType<HostQueueActivities['startAgentRun']>>;
type RunExit = Awaited<ReturnType<HostQueueActivities['superviseAgentRun']>>;
/** A polecat run prepared and started by one activity (launchRun): what supervision needs, and the start's answer. */
export interface Launched {
  launch: AgentLaunch;
  started: StartedAgent;
}
export type HostActivities = ReturnType<typeof hostActivities>;

/** The town's activities (dispatch slots, hosts, escalations, the merge queue), each tried `maximumAttempts` times. */
export function townActivities(maximumAttempts: number) {
  return proxyActivities<TownQueueActivities>({
    startToCloseTimeout: '1m',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts },
  });
}

/**
 * The activities of run `runId` on `hostQueue`: `onHost` (prepare, publish, clean up), `starter` (start-or-adopt by run
 * id), `launcher` (prepare and start-or-adopt in one: a polecat run's launchRun) and `supervisor` (watches the agent;
 * its cancellation stops it). `summary` names each activity in the UI.
 */
export function hostActivities(
  hostQueue: string,
  policy: RunPolicy,
  runId: string,
  opts: { summary?: (what: string) => string; hostNonRetryable?: string[] } = {},
) {
  const { summary, hostNonRetryable } = opts;
  const hostRetry = (nonRetryable?: string[]) => ({
    initialInterval: '2s',
    maximumInterval: '30s',
    maximumAttempts: 5,
    ...(nonRetryable ? { nonRetryableErrorTypes: nonRetryable } : {}),
  });
  const onHost = proxyActivities<HostQueueActivities>({
    taskQueue: hostQueue,
    startToCloseTimeout: HOST_WORK_MS,
    // The activities heartbeat (activities/heartbeat.ts): a host that dies mid-way is noticed this soon.
    heartbeatTimeout: policy.heartbeatTimeout,
    // If the host that claimed the run disappears, fail fast and dispatch the next attempt elsewhere.
    scheduleToStartTimeout: policy.startTimeout,
    retry: hostRetry(hostNonRetryable),
  });
  const starter = proxyActivities<HostQueueActivities>({
    taskQueue: hostQueue,
    ...(summary ? { summary: summary(`start agent run ${runId}`) } : {}),
    startToCloseTimeout: policy.startTimeout,
    scheduleToStartTimeout: policy.startTimeout,
    // Start-or-adopt by run id: a retry after an uncertain start adopts the agent instead of launching a second.
    retry: RETRY.agentStart,
  });
  const launcher = proxyActivities<HostQueueActivities>({
    taskQueue: hostQueue,
    // The preparation's ten minutes (onHost), then the start's timeout, which the activity keeps for its start part.
    startToCloseTimeout: HOST_WORK_MS + policy.startTimeout,
    // It heartbeats throughout, as the preparation does: a host that dies mid-way is noticed this soon.
    heartbeatTimeout: policy.heartbeatTimeout,
    scheduleToStartTimeout: policy.startTimeout,
    // A retry after the preparation goes straight to start-or-adopt (the preparation is recorded on the host).
    retry: hostRetry([...new Set([...(hostNonRetryable ?? []), ...NON_RETRYABLE.agentStart])]),
  });
  const supervisor = proxyActivities<HostQueueActivities>({
    taskQueue: hostQueue,
    ...(summary ? { summary: summary(`supervise agent run ${runId}`) } : {}),
    startToCloseTimeout: policy.runTimeout,
    heartbeatTimeout: policy.heartbeatTimeout,
    scheduleToStartTimeout: policy.startTimeout,
    // Retries re-attach to the live agent (its handle is in the input and the heartbeat details); they never relaunch it.
    retry: RETRY.agentSupervise,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  });
  const stopper = proxyActivities<HostQueueActivities>({
    taskQueue: hostQueue,
    ...(summary ? { summary: summary(`stop the agent of run ${runId} if it outlived the cancel`) } : {}),
    // It waits for a start of the run in flight on the host, then stops the agent within its grace.
    startToCloseTimeout: policy.startTimeout + 60_000,
    // A host that is gone has no agent left to stop; the cancel must not wait on it longer than this.
    scheduleToStartTimeout: policy.heartbeatTimeout,
    retry: { initialInterval: '1s', maximumAttempts: 3 },
  });
  return { onHost, starter, launcher, supervisor, stopper };
}

/** An escalation an agent raised with `gt escalate`, as the workflow hands it to raiseEscalation. */
export interface AgentEscalation {
  id: string;
  severity: 'low' | 'medium' | 'high' | 'critical';
  reason: string;
  source: 'agent';
  runId: string;
}

/**
 * The runs allowed to speak to one workflow right now, and the escalations their agents raised. `refused` words the
 * answer to a run that is not live (an ended run, a run of another round).
 */
export class AgentRuns<R extends { runId: string }> {
  private readonly live: R[] = [];
  private readonly escalations: AgentEscalation[] = [];
  private escalated = 0;

  constructor(
    private readonly refused: (runId: string, current: R | undefined) => string,
    private readonly raise: (e: AgentEscalation) => Promise<unknown>,
  ) {}

  /** Every live run, oldest first (parallel legs of a formula are several). */
  get all(): readonly R[] {
    return this.live;
  }
  /** The live run (the first, should several be live). */
  get current(): R | undefined {
    return this.live[0];
  }
  admit(run: R): void {
    this.live.push(run);
  }
  retire(run: R): void {
    const i = this.live.indexOf(run);
    if (i >= 0) this.live.splice(i, 1);
  }
  retireAll(): void {
    this.live.length = 0;
  }
  /** The live run `runId`, or a non-retryable `StaleRun` failure (an update's validator refuses it, leaving no history). */
  require(runId: string): R {
    const run = this.live.find((r) => r.runId === runId);
    if (!run) throw ApplicationFailure.nonRetryable(this.refused(runId, this.current), Failure.StaleRun);
    return run;
  }

  get escalationsPending(): boolean {
    return this.escalations.length > 0;
  }
  /** Raises the escalations waiting, oldest first (from the main loop: handlers cannot run activities). */
  async raisePending(): Promise<void> {
    while (this.escalations.length) await this.raise(this.escalations.shift()!);
  }
  /** `gt escalate` from a live run: queued, and raised by the run's supervision loop. */
  handleEscalations(logContext: Record<string, unknown>): void {
    setHandler(
      escalateUpdate,
      (raw): AgentReply => {
        const req = EscalateRequest.parse(raw);
        this.require(req.runId);
        log.warn('agent escalated', { ...logContext, runId: req.runId, severity: req.severity, reason: req.reason });
        this.escalations.push({
          id: `run-${escalationIdPart(req.runId)}-${++this.escalated}`,
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
      { validator: (raw) => void this.require(parseOrReject(EscalateRequest, raw, 'gt_escalate').runId) },
    );
  }
}

/** How a run ended: on purpose (`done`: gt done or a verdict; `handed_off`), or not. */
export type RunEnd = 'done' | 'handed_off' | 'exited' | 'lost' | 'stalled' | 'timed_out';

/** What `AgentRun.drive` needs from its workflow. */
export interface Drive<R extends AgentRun> {
  runs: AgentRuns<R>;
  activities: HostActivities;
  /** The agent's launch, started by startAgentRun; or the one activity that prepares and starts it (launchRun). */
  launch: AgentLaunch | (() => Promise<Launched>);
  stallTimeout: number;
  /**
   * The hard cap on the run (a formula step's `timeout`), from when it is driven: then it is stopped as `timed_out`.
   * Only formula steps that set it pass it, and those were refused before it existed, so no recorded history has it.
   */
  timeout?: number;
  /** Called once the run is live, before its agent is started. */
  starting(): void;
  /** Called once the agent has started (or was adopted). */
  started(started: StartedAgent): Promise<void> | void;
  /** Called before an agent still running is stopped (it stalled, or did not exit within the grace). */
  stopping?(end: RunEnd): void;
  /**
   * Whether the agent's host times the exit grace after its `gt done` (domain/bead.ts DoneUpdate): then the run waits
   * for its supervision to end, with no timer of its own.
   */
  exitGraceOnHost?(): boolean;
}

/**
 * One agent run: live (in its workflow's AgentRuns) from before its agent starts — a fast agent may speak before the
 * start activity returns — until its supervision has ended. Subclasses hold what the agent said (`ending`).
 */
export class AgentRun {
  lastProgressAt = Date.now();
  /** Set when the supervising activity returned: the agent exited (a polecat's branch may be published already). */
  exit?: Pick<RunExit, 'exitCode' | 'published' | 'slotReleased' | 'enqueued'>;
  /** Set when supervision failed other than by this workflow's cancel: the run is lost. */
  lost?: { error: unknown };
  /** Settles once the supervising activity has ended (after a stop: once the agent is gone); unset before it starts. */
  supervision?: Promise<void>;

  /** The run's host's activities, once it is driven. */
  private host?: HostActivities;

  constructor(readonly runId: string) {}

  /**
   * After its workflow's cancel: stops the run's agent on its host if the agent is still alive there. The supervision
   * stops it when it runs; this covers a launch that ended after the cancel and a supervision cancelled before any
   * worker began it (the server then ends it at once: nothing on the host heard of the cancel). Never throws.
   */
  async stopLeftover(): Promise<void> {
    if (!this.host) return;
    await this.host.stopper
      .stopRunAgent({ runId: this.runId })
      .catch((err: unknown) =>
        log.warn('could not make sure the agent of a cancelled run stopped', { runId: this.runId, error: String(err) }),
      );
  }

  /** How the agent ended the run on purpose, once it did. */
  ending(): 'done' | 'handed_off' | undefined {
    return undefined;
  }

  private get over(): boolean {
    return this.exit !== undefined || this.lost !== undefined;
  }

  /**
   * Starts the agent, supervises it until it ends (on purpose, by exiting, by stalling, or lost) and returns how it
   * ended; an agent that could not be started is returned as `startFailed` (a cancellation is thrown).
   */
  async drive(d: Drive<this>): Promise<{ end: RunEnd } | { startFailed: unknown }> {
    let deadline = d.timeout === undefined ? undefined : Date.now() + d.timeout;
    d.runs.admit(this);
    this.host = d.activities;
    d.starting();
    let launch: AgentLaunch;
    let started: StartedAgent;
    try {
      if (typeof d.launch === 'function') {
        ({ launch, started } = await d.launch());
        // The stall clock and a step's timeout start after the preparation, as when it was an activity of its own.
        this.lastProgressAt = Date.now();
        if (d.timeout !== undefined) deadline = Date.now() + d.timeout;
      } else {
        launch = d.launch;
        started = await d.activities.starter.startAgentRun(launch);
      }
    } catch (err) {
      if (isCancellation(err)) throw err;
      d.runs.retire(this);
      return { startFailed: err };
    }
    await d.started(started);
    const scope = new CancellationScope();
    this.supervision = scope
      .run(() => d.activities.supervisor.superviseAgentRun({ ...launch, handle: started.handle }))
      .then(
        (r) => void (this.exit = r),
        // Only a cancellation this workflow asked for is expected; any other failure (or an unrequested cancel)
        // means supervision was lost and the attempt ends.
        (error: unknown) =>
          void (this.lost = isCancellation(error) && scope.consideredCancelled ? undefined : { error }),
      );
    const end = await this.watch(d.runs, d.stallTimeout, deadline);
    if (end === 'done' && d.exitGraceOnHost?.()) await condition(() => this.over);
    else if (end === 'done' || end === 'handed_off') await condition(() => this.over, EXIT_GRACE_MS);
    if (!this.over) {
      d.stopping?.(end);
      scope.cancel();
    }
    await this.supervision;
    d.runs.retire(this);
    return { end };
  }

  /** Waits for the run to end, raising its agents' escalations as they come; stalled after `stallTimeout` of silence. */
  private async watch(runs: AgentRuns<this>, stallTimeout: number, deadline?: number): Promise<RunEnd> {
    for (;;) {
      const quietFor = Date.now() - this.lastProgressAt;
      const wait = stallTimeout - quietFor;
      await condition(
        () => !!this.ending() || this.over || runs.escalationsPending,
        Math.max(deadline === undefined ? wait : Math.min(wait, deadline - Date.now()), 1),
      );
      await runs.raisePending();
      const ending = this.ending();
      if (ending) return ending;
      if (this.exit) return 'exited';
      if (this.lost !== undefined) return 'lost';
      if (Date.now() - this.lastProgressAt >= stallTimeout) return 'stalled';
      if (deadline !== undefined && Date.now() >= deadline) return 'timed_out';
    }
  }
}

/** Where a run of attempts stands: the next run's number, the failures so far, whether the last run failed. */
export interface AttemptsAt {
  nextRun: number;
  failures: string[];
  lastFailed: boolean;
}

/**
 * Attempts until one succeeds or `maxAttempts` have failed: a failure waits retryBackoff · 2^(failures − 1), capped at
 * MAX_BACKOFF_MS; a hand-off is neither a failure nor a wait (the next run starts at once). `between` runs before every
 * attempt (nothing is in flight then).
 */
export async function runAttempts<T extends object>(o: {
  maxAttempts: number;
  retryBackoff: number;
  from: AttemptsAt;
  between?: (at: AttemptsAt) => Promise<void>;
  attempt: (run: number, lastFailed: boolean) => Promise<T | { failure: string } | { handedOff: string }>;
  backingOff: (failed: number, backoff: number) => void;
}): Promise<T | { failures: string[] }> {
  const failures = [...o.from.failures];
  let lastFailed = o.from.lastFailed;
  for (let run = o.from.nextRun; failures.length < o.maxAttempts; run++) {
    if (o.between) await o.between({ nextRun: run, failures, lastFailed });
    const result = await o.attempt(run, lastFailed);
    if (!('failure' in result) && !('handedOff' in result)) return result;
    lastFailed = 'failure' in result;
    if (!('failure' in result)) continue;
    failures.push(result.failure);
    if (failures.length < o.maxAttempts) {
      const backoff = Math.min(o.retryBackoff * 2 ** (failures.length - 1), MAX_BACKOFF_MS);
      o.backingOff(failures.length, backoff);
      await sleep(backoff);
    }
  }
  return { failures };
}
