/**
 * Agent run activities, executed on the task queue of the host that owns the agent process.
 * `startAgentRun` starts-or-adopts the run by its id (an uncertain start retried any number of times yields one
 * agent); `superviseAgentRun` watches it and heartbeats with its handle while it lives, so a retried activity
 * (a new worker on the same host) re-attaches to the live agent instead of launching another one.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { activityInfo, ApplicationFailure, cancellationDetails, Context, heartbeat, log } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { type ActivityCancellationDetails, CancelledFailure } from '@temporalio/common';
import { z } from 'zod';
import { gatewaySocketDir, gatewaySocketPath, unixGatewayUrl } from '../agents/gateway-socket';
import { writePromptFile } from '../agents/prompt';
import { mintRunToken } from '../agents/run-token';
import type { AgentHandle, AgentRuntimeDriver, AgentStatus, Mount } from '../agents/runtime';
import { BeadSpec, EXIT_GRACE_MS } from '../domain/bead';
import { type DispatchAnswer, DispatchRequest } from '../domain/dispatch';
import type { DispatchAsksAhead } from './dispatch';
import { LaunchedOtherwise, type LaunchesAhead } from './launch-ahead';
import { beadBranch, CommitId, legBranch, MAX_AFTER_COMMITS, RunId } from '../domain/ids';
import { MergeTicket, MergeTicketTemplate } from '../domain/refinery';
import { AgentRuntime, RigConfig } from '../domain/rig';
import type { DoneRuns } from '../host/done-runs';
import { paths } from '../host/home';
import { runEnv, writeRunToken } from './agent-env';
import {
  createRunRepo,
  type ImportedBranch,
  importRunBranch,
  mirrorHolding,
  openQuarantine,
  type OpenedQuarantine,
  RunRepoRejected,
  syncMirror,
} from './git';
import { parseActivityInput } from '../domain/validation';
import { whileHeartbeating } from './heartbeat';
import { AgentHandleSchema, readHandle, recordHandle } from './run-handles';
import { discardEarlierAttempts, discardTree } from './trash';
import { type MergeRequestQueuer, workflowStillRuns } from './town';
import { Failure } from '../domain/failures';

export interface HostDeps {
  gtHome: string;
  hostId: string;
  hostQueue: string;
  gatewayUrl: string;
  gatewaySecret: Buffer;
  /** Directory holding the `gt` command, put first on the agent's PATH. */
  gtBinDir: string;
  runtimes: Partial<Record<AgentRuntime, AgentRuntimeDriver>>;
  /** How often supervision polls the agent's status (ms). */
  pollIntervalMs?: number;
  /** The worker's environment, the only source of what a run may be given (default: process.env). */
  hostEnv?: NodeJS.ProcessEnv;
  /** The runs whose `gt done` this process's gateway saw accepted: supervision publishes them as their agents exit. */
  doneRuns?: Pick<DoneRuns, 'take' | 'seen' | 'supervise' | 'supervisions' | 'launched' | 'onAccepted'>;
  /** Tells the rig's dispatch gate that a run's agent started (activities/dispatch.ts dispatchStartReporter). */
  reportStart?: (rig: string, report: { runId: string; started: boolean }) => Promise<void>;
  /** Gives a run's slot back to the rig's dispatch gate (activities/dispatch.ts dispatchSlotReleaser). */
  releaseSlot?: (rig: string, runId: string) => Promise<void>;
  /** Asks the rig's dispatch gate for a run's slot (activities/dispatch.ts dispatchSlotRequester). */
  requestSlot: (rig: string, request: DispatchRequest) => Promise<DispatchAnswer>;
  /** Answers this process's convoy activities asked for ahead of a launch (activities/dispatch.ts dispatchAsksAhead). */
  askedAhead?: Pick<DispatchAsksAhead, 'take'>;
  /** Launches this process's convoy activities began ahead of their beads' launches (activities/launch-ahead.ts). */
  launchesAhead?: Pick<LaunchesAhead, 'serve' | 'take'>;
  /** Hands a ticket to its rig's refinery unless the rig asks for a review (activities/town.ts mergeRequestQueuer). */
  queueMergeRequest?: MergeRequestQueuer;
  /** Whether a workflow is still running: false once closed or gone, undefined when the server cannot say. */
  workflowRunning?: (workflowId: string) => Promise<boolean | undefined>;
}

/** workflowRunning from a client: one describe, bounded, an error (the server down) answering undefined. */
export function workflowRunningProbe(client: Client): NonNullable<HostDeps['workflowRunning']> {
  return (workflowId) =>
    client.withDeadline(Date.now() + 5_000, () => workflowStillRuns(client, workflowId)).catch(() => undefined);
}

export const PrepareRunInput = z.object({
  rig: RigConfig,
  bead: BeadSpec,
  runId: RunId,
  round: z.number().int().min(1),
  attempt: z.number().int().min(1),
  targetBranch: z.string().min(1),
  feedback: z.array(z.string()).default([]),
  checkpoints: z.array(z.string()).default([]),
  /** Operator messages already waiting when the run starts. */
  messages: z.array(z.string()).default([]),
  /**
   * Commits the target is known to hold (a convoy bead's first run: its dependencies' merges). A mirror whose target
   * already holds them is new enough to start from, and the run starts without fetching (docs/performance.md).
   */
  targetHas: z.array(CommitId).max(MAX_AFTER_COMMITS).optional(),
  /**
   * A leg of a formula's legs step: its number (its branch is legBranch, its worktree one of its own), and the last run
   * of the round before the legs: runs numbered above it are sibling legs, live side by side, never stopped as stale.
   */
  leg: z
    .object({
      index: z.number().int().min(1).max(8),
      after: z.number().int().min(0),
      /** This leg's own earlier attempts: stale ones among them are stopped like any stale run (same worktree). */
      earlier: z.array(RunId).max(20).default([]),
    })
    .optional(),
  /** The formula step of this run, if the bead runs a formula of several steps (its instructions already rendered). */
  step: z
    .object({
      id: z.string().max(63),
      title: z.string().max(200),
      index: z.number().int().min(1),
      total: z.number().int().min(1),
      formula: z.string().max(200),
      instructions: z.string().max(60_000),
      final: z.boolean(),
      single: z.boolean().optional(),
    })
    .optional(),
});
export type PrepareRunInput = z.input<typeof PrepareRunInput>;

/**
 * A run's worktree and prompt on its host, as prepareRun (or launchRun) made them; launchRun records it in the run's
 * directory (worker-owned, never visible to a contained agent), so a retry never prepares the run again.
 */
const PreparedRunSchema = z.object({
  host: z.string(),
  worktree: z.string(),
  promptFile: z.string(),
  branch: z.string(),
  baseSha: z.string(),
  /** Agents of earlier runs of this bead found alive on this host and stopped before the worktree was reset. */
  staleRunsStopped: z.array(z.string()),
  /** Whether the mirror was fetched for this start (not when it held `targetHas` already); absent in older records. */
  fetched: z.boolean().optional(),
});
export type PreparedRun = z.infer<typeof PreparedRunSchema>;

export const SuperviseInput = z.object({
  runId: RunId,
  beadId: z.string(),
  workflowId: z.string(),
  role: z.enum(['polecat', 'reviewer']),
  rig: RigConfig,
  worktree: z.string(),
  promptFile: z.string(),
  branch: z.string(),
  targetBranch: z.string(),
  /** The handle `startAgentRun` returned; without it supervision starts-or-adopts the run itself. */
  handle: AgentHandleSchema.optional(),
  /**
   * A polecat run's starting commit: when its agent exits after a `gt done` this host's gateway saw accepted, the branch
   * is published as publishBranch would (`RunExit.published`) before supervision returns.
   */
  publish: z.object({ baseSha: CommitId }).optional(),
  /**
   * With `publish`: the round's merge request ticket but for its head. Once the branch is published with commits,
   * supervision hands the ticket, stamped with that head, to the rig's refinery unless the rig asks for a review
   * (`RunExit.enqueued`): the bead's workflow task need not, and the refinery starts the merge that much sooner.
   */
  enqueue: z.object({ ticket: MergeTicketTemplate }).optional(),
  /**
   * The run holds a dispatch slot its workflow would give back after the run: the host gives it back as the agent
   * exits (`RunExit.slotReleased`), so the gate hears it while the branch is published, not after.
   */
  releaseSlot: z.boolean().default(false),
});
export type SuperviseInput = z.input<typeof SuperviseInput>;

/**
 * A polecat run prepared and started by one activity (launchRun): what prepareRun takes, and what the start needs on
 * top — a formula step's own agent command and runtime replace the rig's for the start (prepare uses neither).
 */
export const LaunchRunInput = PrepareRunInput.extend({
  workflowId: z.string(),
  agent: z.string().min(1).max(4000).optional(),
  runtime: AgentRuntime.optional(),
  /** true: tell the rig's dispatch gate that the agent started, as it starts (the bead then need not). */
  reportStart: z.boolean().default(false),
});
export type LaunchRunInput = z.input<typeof LaunchRunInput>;

/** launchRun once the rig's gate grants the run a slot, asked for as the run is prepared (launchRunWhenGranted). */
export const LaunchWhenGrantedInput = LaunchRunInput.extend({ request: DispatchRequest });
export type LaunchWhenGrantedInput = z.input<typeof LaunchWhenGrantedInput>;

export interface LaunchedRun {
  prepared: PreparedRun;
  started: StartedRun;
  /** The dispatch gate was told the agent started (asked by `reportStart`); absent, the bead tells it. */
  reported?: true;
  /** launchRunWhenGranted took the gate's answer asked for ahead of it, as the bead was started (dispatchAsksAhead). */
  askedAhead?: true;
  /** launchRunWhenGranted took the launch begun ahead of it, as the bead was started (activities/launch-ahead.ts). */
  launchedAhead?: true;
}

export interface StartedRun {
  handle: AgentHandle;
  adopted: boolean;
  host: string;
}

export interface RunExit {
  runId: string;
  exitCode: number | null;
  adopted: boolean;
  /** The run's branch, published at the exit (see `SuperviseInput.publish`); its workflow need not publish it. */
  published?: PublishedBranch;
  /** The run's dispatch slot was given back at the exit (see `SuperviseInput.releaseSlot`); its workflow need not. */
  slotReleased?: true;
  /**
   * What became of the ticket (see `SuperviseInput.enqueue`): handed to the refinery (`queued`) or left to the merge
   * request for a rig asking for a review, under the rig configuration read. Absent: the workflow hands it over.
   */
  enqueued?: { rig: RigConfig; queued: boolean };
}

export const PublishInput = z.object({
  rig: RigConfig,
  worktree: z.string(),
  branch: z.string(),
  targetBranch: z.string(),
  /** The run and the commit it started from (histories before these were sent lack them). */
  runId: RunId.optional(),
  baseSha: CommitId.optional(),
  /** The round's merge request, when a supervision may have handed its ticket over (`ImportedBranch.mergedAs`). */
  mrId: MergeTicket.shape.mrId.optional(),
});
export type PublishInput = z.input<typeof PublishInput>;

export interface PublishedBranch extends ImportedBranch {
  /** Why the run's result was not taken (a damaged or tampered repository); the attempt failed. */
  rejected?: string;
}

/** A run whose agent may have outlived its workflow's cancel (stopRunAgent). */
export const StopRunInput = z.object({ runId: RunId });
export type StopRunInput = z.input<typeof StopRunInput>;

const STOP_GRACE_MS = 5_000;
const PREPARED_FILE = 'prepared.json';
const DONE_AT_FILE = 'done-at';
/** The supervision's longest retry backoff (domain/failures.ts RETRY.agentSupervise), with room for its dispatch. */
const HANDOVER_BACKOFF_MS = 20_000;

/**
 * A cancellation by which this activity attempt was given up without anyone asking: the server no longer knows it (a
 * heartbeat timed out on its side), or the worker's own heartbeat timer ran out (the worker was frozen). Not the
 * run's hard cap (the attempt's start-to-close timeout), not the workflow's cancel, not a shutdown.
 */
const gaveUpOnAttempt = (
  d: ActivityCancellationDetails | undefined,
  info: { currentAttemptScheduledTimestampMs: number; startToCloseTimeoutMs: number },
) =>
  !!d &&
  (d.notFound || d.timedOut) &&
  !d.cancelRequested &&
  !d.workerShutdown &&
  !(d.timedOut && Date.now() - info.currentAttemptScheduledTimestampMs >= info.startToCloseTimeoutMs);

/**
 * When this host saw the run's `gt done` accepted (ms since the epoch), recorded in the run's directory as its
 * supervision first knows it. A retry on a restarted worker reads it when the heartbeats did not carry it (the SDK
 * sends an attempt's details at most every 0.8 heartbeat timeouts): without it, an agent lingering after its `gt done`
 * is never stopped, and its bead, told that the host times the exit grace, waits for the run's timeout.
 */
function recordDoneAt(runDir: string, at: number): void {
  try {
    writeFileSync(join(runDir, DONE_AT_FILE), String(at));
  } catch (err) {
    // Called from the gateway's answer to the agent, out of the activity's context (whose logger would throw there): a
    // record not written leaves it to the heartbeats, as before.
    process.emitWarning(`could not record in ${runDir} when the run was done: ${String(err)}`, 'GtRunWarning');
  }
}

function readDoneAt(runDir: string): number | undefined {
  try {
    const at = Number(readFileSync(join(runDir, DONE_AT_FILE), 'utf8'));
    return Number.isSafeInteger(at) && at > 0 ? at : undefined;
  } catch {
    return undefined;
  }
}

function readPrepared(runDir: string): PreparedRun | undefined {
  try {
    const parsed = PreparedRunSchema.safeParse(JSON.parse(readFileSync(join(runDir, PREPARED_FILE), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

const beadOfRun = (runId: string) => /^(.+)\/r\d+\/a\d+$/.exec(runId)?.[1];
/**
 * Whether `runId` is another leg's run of the same legs step: of round `round`, numbered above `after`, and not one of
 * this leg's own earlier attempts.
 */
const isSiblingLeg = (runId: string, legs: { round: number; after: number; earlier: string[] } | undefined) => {
  const m = /\/r(\d+)\/a(\d+)$/.exec(runId);
  return !!legs && !!m && Number(m[1]) === legs.round && Number(m[2]) > legs.after && !legs.earlier.includes(runId);
};

export function createAgentRunActivities(deps: HostDeps) {
  const driverFor = async (runtime: AgentRuntime): Promise<AgentRuntimeDriver> => {
    const driver = deps.runtimes[runtime];
    if (!driver)
      throw ApplicationFailure.nonRetryable(
        `runtime '${runtime}' is not configured on host ${deps.hostId}`,
        Failure.RuntimeUnavailable,
      );
    const available = await driver.available();
    if (!available.ok)
      throw ApplicationFailure.nonRetryable(
        `runtime '${runtime}' is unavailable on host ${deps.hostId}: ${available.reason}`,
        Failure.RuntimeUnavailable,
      );
    return driver;
  };

  /**
   * Stops every agent of an earlier polecat run of this bead still alive on this host. Supervision of such a run was
   * lost (its worker vanished long enough for the bead to move on); it must not share the worktree with the next run.
   */
  const stopStaleRuns = async (
    beadId: string,
    exceptRunId: string,
    legs?: { round: number; after: number; earlier: string[] },
  ): Promise<string[]> => {
    const runsDir = join(deps.gtHome, 'runs');
    if (!existsSync(runsDir)) return [];
    const stopped: string[] = [];
    for (const entry of readdirSync(runsDir)) {
      const runDir = join(runsDir, entry);
      const handle = readHandle(runDir);
      if (!handle || handle.runId === exceptRunId || beadOfRun(handle.runId) !== beadId) continue;
      // Parallel legs of a formula step are live side by side, each in a worktree of its own: never stopped here.
      if (isSiblingLeg(handle.runId, legs)) continue;
      const driver = deps.runtimes[handle.runtime];
      if (!driver) continue;
      const status = await probe(driver, handle, runDir, 10_000);
      if (status.state === 'exited') continue;
      log.warn('stopping a stale agent of this bead before the next run', {
        beadId,
        staleRunId: handle.runId,
        nextRunId: exceptRunId,
        status: status.state,
      });
      await driver.stop(handle, STOP_GRACE_MS);
      stopped.push(handle.runId);
    }
    return stopped;
  };

  /**
   * Whether a retry of this run's supervision runs in this process, waiting for one to start for as long as the server
   * takes to time an attempt out and retry it (the heartbeat timeout, then the retry's backoff). Without the count of
   * supervisions (a host built without DoneRuns) nothing can tell, and the agent is stopped as before.
   */
  const retryTakesOver = async (runId: string, heartbeatTimeoutMs: number): Promise<boolean> => {
    const runs = deps.doneRuns;
    if (!runs) return false;
    const until = Date.now() + heartbeatTimeoutMs + HANDOVER_BACKOFF_MS;
    while (runs.supervisions(runId) < 2) {
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
    return true;
  };

  /** The run's environment (allow-listed) and its token, written to a file in the run's own directory. */
  const launchEnv = (input: z.output<typeof SuperviseInput>, agentDir: string) => {
    const { rig } = input;
    const token = mintRunToken(deps.gatewaySecret, {
      beadId: input.beadId,
      runId: input.runId,
      role: input.role,
      workflowId: input.workflowId,
      exp: Date.now() + rig.policy.runTimeout + 3_600_000,
    });
    // Sandboxed and containerized agents can't reach the gateway's TCP port; its unix socket is mounted for them.
    const viaSocket = rig.runtime !== 'process' && existsSync(gatewaySocketPath(deps.gtHome));
    return runEnv({
      runtime: rig.runtime,
      rig,
      hostEnv: deps.hostEnv ?? process.env,
      agentDir,
      gtBinDir: deps.gtBinDir,
      identity: rig.gitIdentity ?? { name: `Gas Town ${input.role}`, email: `${input.role}@gastown.local` },
      gt: {
        GT_ROLE: input.role,
        GT_RIG: rig.name,
        GT_BEAD_ID: input.beadId,
        GT_RUN_ID: input.runId,
        GT_RUN_TOKEN_FILE: writeRunToken(agentDir, token),
        GT_GATEWAY_URL: viaSocket ? unixGatewayUrl(deps.gtHome) : deps.gatewayUrl,
        GT_PROMPT_FILE: input.promptFile,
        GT_BRANCH: input.branch,
        GT_TARGET_BRANCH: input.targetBranch,
      },
    });
  };

  const startOrAdopt = async (
    input: z.output<typeof SuperviseInput>,
    driver: AgentRuntimeDriver,
  ): Promise<{ handle: AgentHandle; adopted: boolean }> => {
    const { rig } = input;
    const command = input.role === 'reviewer' ? rig.reviewer : rig.agent;
    if (!command)
      throw ApplicationFailure.nonRetryable(`rig ${rig.name} has no ${input.role} command`, Failure.NoAgentCommand);
    const runDir = paths.runDir(input.runId, deps.gtHome);
    const agentDir = paths.agentDir(input.runId, deps.gtHome);
    try {
      const started = await driver.startOrAdopt({
        runId: input.runId,
        beadId: input.beadId,
        role: input.role,
        command,
        cwd: input.worktree,
        runDir,
        agentDir,
        allowNetwork: rig.network,
        mounts: runMounts(deps, rig),
        image: rig.image,
        limits: rig.limits,
        env: launchEnv(input, agentDir),
      });
      recordHandle(runDir, started.handle);
      return started;
    } catch (err) {
      if ((err as { nonRetryable?: boolean }).nonRetryable)
        throw ApplicationFailure.nonRetryable((err as Error).message, Failure.AgentStartRefused);
      throw err;
    }
  };

  /** The run's worktree (on the bead's branch, or the leg's) and prompt, after stopping stale runs of the bead. */
  const prepare = async (input: z.output<typeof PrepareRunInput>): Promise<PreparedRun> => {
    const { leg } = input;
    // Side by side (the start is on every bead's critical path): the fetch touches only the mirror, and the worktree a
    // stale agent could still write to is made below, after both.
    const [staleRunsStopped, { mirror, fetched }] = await Promise.all([
      stopStaleRuns(
        input.bead.id,
        input.runId,
        leg ? { round: input.round, after: leg.after, earlier: leg.earlier } : undefined,
      ),
      input.targetHas
        ? mirrorHolding(input.rig.name, input.rig.repo, deps.gtHome, input.targetBranch, input.targetHas)
        : syncMirror(input.rig.name, input.rig.repo, deps.gtHome).then((dir) => ({ mirror: dir, fetched: true })),
    ]);
    // A leg starts where the bead's branch is (or the target) and works on a branch and worktree of its own.
    const branch = leg ? legBranch(input.bead.id, input.round, leg.index) : beadBranch(input.bead.id);
    const worktree = paths.worktree(
      input.rig.name,
      leg ? `${input.bead.id}.leg-${leg.index}` : input.bead.id,
      deps.gtHome,
    );
    const base = await createRunRepo(
      mirror,
      worktree,
      {
        branch,
        sha: (originBranch) => {
          const start = originBranch(beadBranch(input.bead.id)) ?? originBranch(input.targetBranch);
          if (!start)
            throw ApplicationFailure.nonRetryable(
              `target branch '${input.targetBranch}' does not exist in ${input.rig.repo}`,
              Failure.TargetMissing,
            );
          return start;
        },
      },
      paths.trash(input.rig.name, deps.gtHome),
    );
    const promptFile = writePromptFile(paths.agentDir(input.runId, deps.gtHome), {
      bead: input.bead,
      rig: input.rig.name,
      runId: input.runId,
      role: 'polecat',
      round: input.round,
      attempt: input.attempt,
      branch,
      targetBranch: input.targetBranch,
      feedback: input.feedback,
      checkpoints: input.checkpoints,
      messages: input.messages,
      step: input.step,
    });
    log.info('run prepared', { runId: input.runId, beadId: input.bead.id, worktree, base, fetched, staleRunsStopped });
    return { host: deps.hostId, worktree, promptFile, branch, baseSha: base, staleRunsStopped, fetched };
  };

  /** Where a run's import works: the rig's mirror, the run's quarantine, and the trash the quarantine goes to. */
  const importPlaces = (rig: string, run: string) => ({
    mirror: paths.mirror(rig, deps.gtHome),
    quarantine: paths.quarantine(rig, run, deps.gtHome),
    trash: paths.trash(rig, deps.gtHome),
  });

  /**
   * Takes the finished run's branch from its repository (as data, validated in quarantine) and pushes it. A
   * repository the agent damaged or tampered with is a failed attempt, said in `rejected`, never an error of ours.
   */
  const publish = async (input: z.output<typeof PublishInput>, opened?: OpenedQuarantine): Promise<PublishedBranch> => {
    try {
      return await importRunBranch({
        ...importPlaces(input.rig.name, input.runId ?? input.branch),
        repo: input.rig.repo,
        syncMirror: () => syncMirror(input.rig.name, input.rig.repo, deps.gtHome),
        workTree: input.worktree,
        branch: input.branch,
        targetBranch: input.targetBranch,
        baseSha: input.baseSha,
        mrId: input.mrId,
        home: deps.gtHome,
        opened,
      });
    } catch (err) {
      if (!(err instanceof RunRepoRejected)) throw err;
      log.warn('run result rejected', { branch: input.branch, runId: input.runId, reason: err.message });
      return { headSha: input.baseSha ?? '', commitsAhead: 0, uncommittedChanges: false, rejected: err.message };
    }
  };

  /**
   * The branch of a run whose agent just exited, published if its `gt done` was accepted through this host's gateway
   * (the workflow would publish it next). Any failure leaves it to the workflow's publishBranch and its retries.
   */
  const publishAtExit = async (
    input: z.output<typeof SuperviseInput>,
    opened: OpenedQuarantine | undefined,
  ): Promise<PublishedBranch | undefined> => {
    // Only a polecat's launch carries `publish`, and only a polecat's token may call gt done.
    if (!input.publish || !deps.doneRuns?.take(input.runId, activityInfo().attempt)) return undefined;
    const { rig, worktree, branch, targetBranch, runId } = input;
    const { baseSha } = input.publish;
    const mrId = input.enqueue?.ticket.mrId;
    try {
      return await publish({ rig, worktree, branch, targetBranch, runId, baseSha, mrId }, opened);
    } catch (err) {
      log.warn('publishing at the exit failed; the workflow publishes the branch', {
        beadId: input.beadId,
        runId,
        error: String(err),
      });
      return undefined;
    }
  };

  /**
   * The round's ticket, stamped with the head just published, handed to the refinery (see `SuperviseInput.enqueue`).
   * Any failure leaves it to the workflow, which hands it over next (the refinery ignores a repeat).
   */
  const enqueueAtExit = async (
    input: z.output<typeof SuperviseInput>,
    published: PublishedBranch,
    /** The hand-off whose rig read began as the gateway accepted the run's gt done, if it did. */
    begun: ReturnType<MergeRequestQueuer> | undefined,
  ): Promise<RunExit['enqueued']> => {
    if (!input.enqueue || published.rejected || published.commitsAhead === 0) return;
    const queue = begun ?? deps.queueMergeRequest?.(input.rig);
    if (!queue) return;
    try {
      return await queue({
        ...input.enqueue.ticket,
        headSha: published.headSha,
        enqueuedAt: Date.now(),
      });
    } catch (err) {
      log.warn('handing the ticket to the refinery at the exit failed; the workflow hands it over', {
        beadId: input.beadId,
        runId: input.runId,
        error: String(err),
      });
      return undefined;
    }
  };

  /** Starts the run's agent, or adopts it when an earlier (uncertain) attempt already did. */
  const start = async (launch: z.output<typeof SuperviseInput>): Promise<StartedRun> => {
    const { handle, adopted } = await startOrAdopt(launch, await driverFor(launch.rig.runtime));
    log.info(adopted ? 'agent run adopted' : 'agent run started', {
      runId: launch.runId,
      ref: handle.ref,
      attempt: activityInfo().attempt,
    });
    return { handle, adopted, host: deps.hostId };
  };

  /**
   * Tells the rig's gate something about a run from its host: that its agent started (launchRun), or gives its slot
   * back as the agent exits (supervision). The bead's workflow task then has nothing to send. A hint, never the record:
   * whether the gate was told is the activity's answer, and a failure (or a host without the means) leaves it to the
   * bead, as before.
   */
  const toldGate = async (send: (() => Promise<void>) | undefined, what: string, runId: string): Promise<boolean> => {
    if (!send) return false;
    try {
      await send();
      return true;
    } catch (err) {
      log.warn(`could not ${what} at the host; the bead does`, { runId, error: String(err) });
      return false;
    }
  };

  /**
   * launchRun's preparation, recorded in the run's directory once done. A failure says it was the preparation (as
   * the workflow words a failed prepareRun) and keeps its type, so the same failures stay non-retryable.
   */
  const prepareOnce = async (input: z.output<typeof PrepareRunInput>, runDir: string): Promise<PreparedRun> => {
    let prepared: PreparedRun;
    try {
      prepared = await prepare(input);
    } catch (err) {
      const message = `preparing the worktree failed: ${err instanceof Error ? err.message : String(err)}`;
      // The type an error would have had (an Error's is its name), and no cause: the workflow reports a failure's
      // innermost message, which would drop what failed.
      const failure = err instanceof ApplicationFailure ? err : undefined;
      throw ApplicationFailure.create({
        message,
        type: failure ? (failure.type ?? undefined) : err instanceof Error ? err.name : undefined,
        nonRetryable: !!failure?.nonRetryable,
      });
    }
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, PREPARED_FILE), JSON.stringify(prepared));
    return prepared;
  };

  /**
   * The starts (launchRun, startAgentRun) running in this process, by run: stopRunAgent waits for one to end, as it
   * may start the agent yet.
   */
  const starting = new Map<string, Promise<unknown>>();
  const tracked = <T>(runId: string, start: Promise<T>): Promise<T> => {
    starting.set(runId, start);
    const forget = () => void (starting.get(runId) === start && starting.delete(runId));
    start.then(forget, forget);
    return start;
  };

  /**
   * The start half of a launch: starts (or adopts) the agent of a prepared run within the start's timeout, and tells the
   * rig's gate of the start when asked to (`reportStart`).
   */
  const launch = async (input: z.output<typeof LaunchRunInput>, prepared: PreparedRun): Promise<LaunchedRun> => {
    const rig = {
      ...input.rig,
      ...(input.agent !== undefined ? { agent: input.agent } : {}),
      ...(input.runtime !== undefined ? { runtime: input.runtime } : {}),
    };
    const supervised = SuperviseInput.parse({
      runId: input.runId,
      beadId: input.bead.id,
      workflowId: input.workflowId,
      role: 'polecat',
      rig,
      worktree: prepared.worktree,
      promptFile: prepared.promptFile,
      branch: prepared.branch,
      targetBranch: input.targetBranch,
    });
    const timeout = rig.policy.startTimeout;
    let timer: NodeJS.Timeout | undefined;
    const started = await Promise.race([
      start(supervised),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              ApplicationFailure.retryable(
                `starting the agent took longer than the start timeout (${timeout} ms)`,
                Failure.AgentStartTimedOut,
              ),
            ),
          timeout,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    // A fast agent may call gt done before its supervision starts: the gateway is to know it is supervised here.
    deps.doneRuns?.launched(input.runId);
    const { reportStart } = deps;
    const reported =
      input.reportStart &&
      (await toldGate(
        reportStart && (() => reportStart(input.rig.name, { runId: input.runId, started: true })),
        'report the start to the dispatch gate',
        input.runId,
      ));
    return { prepared, started, ...(reported ? { reported: true as const } : {}) };
  };

  /**
   * launchRunWhenGranted's work, also a launch begun ahead of it (activities/launch-ahead.ts): asks the gate while the
   * run is prepared; granted, starts the agent; queued, starts nothing and discards the preparation. `ahead` is the
   * gate's answer asked for as the bead was started, if any.
   */
  const launchWhenGranted = async (
    { request, ...input }: z.output<typeof LaunchWhenGrantedInput>,
    ahead?: Promise<DispatchAnswer>,
  ): Promise<LaunchedRun | { queued: true; askedAhead?: true }> => {
    const runDir = paths.runDir(input.runId, deps.gtHome);
    const recorded = readPrepared(runDir);
    // The answer this worker's convoy asked for as it started the bead, if any: else asked now. Either way the
    // same request, so a failed ask ahead is simply asked again.
    const ask = () => deps.requestSlot(input.rig.name, request).then((answer) => ({ answer, ahead: false }));
    // Both settle before anything else happens: a failed ask leaves no preparation half-recorded behind it.
    const [asked, preparing] = await Promise.allSettled([
      ahead ? ahead.then((answer) => ({ answer, ahead: true }), ask) : ask(),
      recorded ?? prepareOnce(input, runDir),
    ]);
    if (preparing.status === 'rejected') throw preparing.reason;
    if (asked.status === 'rejected') throw asked.reason;
    const askedAhead = asked.value.ahead ? { askedAhead: true as const } : {};
    if (!asked.value.answer.granted) {
      rmSync(join(runDir, PREPARED_FILE), { force: true });
      log.info('dispatch slot queued; the run starts when granted', { runId: input.runId });
      return { queued: true as const, ...askedAhead };
    }
    return { ...(await launch(input, preparing.value)), ...askedAhead };
  };

  /** Stops the run's agent if it is alive on this host (a start of it in flight here is for the caller to await). */
  const stopLiveAgent = async (runId: string): Promise<boolean> => {
    const runDir = paths.runDir(runId, deps.gtHome);
    const handle = readHandle(runDir);
    const driver = handle && deps.runtimes[handle.runtime];
    if (!handle || !driver) return false;
    if ((await probe(driver, handle, runDir, 10_000)).state === 'exited') return false;
    await driver.stop(handle, STOP_GRACE_MS);
    return true;
  };

  // Begun from a convoy's activity (activities/convoy.ts), whose context the launch keeps: its logger.
  deps.launchesAhead?.serve({
    normalize: (raw) => LaunchWhenGrantedInput.parse(JSON.parse(JSON.stringify(raw))),
    launch: (input) => tracked(input.runId, launchWhenGranted(input)),
    abandon: async (runId) => {
      try {
        if (await stopLiveAgent(runId))
          log.warn('stopped an agent launched ahead that its bead did not take', { runId });
      } catch (err) {
        log.error('could not stop an agent launched ahead that its bead did not take', { runId, error: String(err) });
      }
    },
  });

  return {
    prepareRun(raw: PrepareRunInput): Promise<PreparedRun> {
      return whileHeartbeating('preparing the run', () => prepare(parseActivityInput(PrepareRunInput, raw)));
    },

    /** Starts (or adopts) the agent of a run prepareRun prepared: the start half of launchRun, for earlier histories. */
    startAgentRun(raw: SuperviseInput): Promise<StartedRun> {
      const input = parseActivityInput(SuperviseInput, raw);
      return tracked(input.runId, start(input));
    },

    /**
     * prepareRun and startAgentRun in one activity, one hand-off fewer before the agent runs (docs/performance.md);
     * the workflow admits the run to its fence before scheduling it, so an agent calling `gt done` before this returns
     * is heard. Heartbeats throughout (a host dying mid-way is noticed within the heartbeat timeout). Idempotent by run
     * id: a retry after the preparation finds it recorded in the run's directory and goes straight to start-or-adopt,
     * so a live agent's worktree is never prepared again under it. The start part keeps the start's timeout.
     */
    launchRun(raw: LaunchRunInput): Promise<LaunchedRun> {
      const input = parseActivityInput(LaunchRunInput, raw);
      return tracked(
        input.runId,
        whileHeartbeating('launching the run', async () => {
          const runDir = paths.runDir(input.runId, deps.gtHome);
          return launch(input, readPrepared(runDir) ?? (await prepareOnce(input, runDir)));
        }),
      );
    },

    /**
     * launchRun for a run whose slot the rig's gate has not granted yet: asks for it (dispatchSlotRequester) while the
     * run is prepared, so the gate's round trip is not a step of its own before the launch (docs/performance.md).
     * Granted, it starts the agent as launchRun does; queued, it starts nothing, discards the preparation (the run is
     * prepared again when granted, from its target as it is then) and answers `queued`: the grant comes to the bead by
     * signal, and the bead then schedules launchRun. A retry asks again, which the gate takes as a repeat (a waiting
     * run stays queued once, a holder is granted again). The first run of a bead this worker's convoy started takes
     * the launch that convoy began as it started the bead (`launchedAhead`, activities/launch-ahead.ts), or else the
     * gate's answer it asked for then (`askedAhead`) instead of asking.
     */
    launchRunWhenGranted(
      raw: LaunchWhenGrantedInput,
    ): Promise<LaunchedRun | { queued: true; askedAhead?: true; launchedAhead?: true }> {
      const input = parseActivityInput(LaunchWhenGrantedInput, raw);
      return tracked(
        input.runId,
        whileHeartbeating('asking for a slot and launching the run', async () => {
          const ahead = deps.launchesAhead?.take(input);
          if (ahead) {
            try {
              return { ...(await ahead), launchedAhead: true as const };
            } catch (err) {
              if (err instanceof LaunchedOtherwise)
                throw ApplicationFailure.nonRetryable(err.message, Failure.LaunchedOtherwise);
              // As a retry would: the start-or-adopt finds any agent the launch begun ahead started.
              log.warn('the launch begun ahead failed; launching again', { runId: input.runId, error: String(err) });
            }
          }
          return launchWhenGranted(input, deps.askedAhead?.take(input.request));
        }),
      );
    },

    /**
     * Stops the run's agent if it is alive on this host, once a start of it in flight here has ended: after a bead's
     * (or a merge request's) cancel, for every run it had live. Its supervision stopped the agent if it ran; but the
     * start may have ended after the cancel (it goes on to the end: the workflow does not wait for it), and a
     * supervision cancelled before a worker picked it up never ran. Idempotent: an agent gone (or never started) is
     * nothing to stop.
     */
    async stopRunAgent(raw: StopRunInput): Promise<{ stopped: boolean }> {
      const { runId } = parseActivityInput(StopRunInput, raw);
      await starting.get(runId)?.catch(() => undefined);
      const stopped = await stopLiveAgent(runId);
      if (stopped) log.warn('stopped an agent that outlived its bead', { runId });
      return { stopped };
    },

    async superviseAgentRun(raw: SuperviseInput): Promise<RunExit> {
      const input = parseActivityInput(SuperviseInput, raw);
      const driver = await driverFor(input.rig.runtime);
      const runDir = paths.runDir(input.runId, deps.gtHome);
      const ids = { beadId: input.beadId, runId: input.runId };

      const prior = activityInfo().heartbeatDetails as { handle?: AgentHandle; doneAt?: number } | undefined;
      let handle: AgentHandle;
      let adopted = true;
      if (input.handle) handle = input.handle;
      else if (prior?.handle?.runId === input.runId) handle = prior.handle;
      else ({ handle, adopted } = await startOrAdopt(input, driver));
      log.info('supervising agent run', { ...ids, ref: handle.ref, attempt: activityInfo().attempt });

      const ctx = Context.current();
      const poll = deps.pollIntervalMs ?? 500;
      const heartbeatTimeout = activityInfo().heartbeatTimeoutMs ?? 60_000;
      // When this process's gateway saw the run's gt done accepted (kept in the heartbeat and the run's directory, so a
      // retry on a restarted worker still knows): the agent then has EXIT_GRACE_MS to exit before it is stopped
      // (domain/bead.ts DoneUpdate).
      let doneAt = prior?.handle?.runId === input.runId ? prior.doneAt : undefined;
      if (doneAt === undefined && activityInfo().attempt > 1) doneAt = readDoneAt(runDir);
      const noteDone = () => {
        if (doneAt !== undefined) return;
        doneAt = Date.now();
        recordDoneAt(runDir, doneAt);
      };
      let stoppedAfterGrace = false;
      const details = () => ({ handle, ...(doneAt !== undefined ? { doneAt } : {}) });
      const unsupervise = deps.doneRuns?.supervise(input.runId, activityInfo().attempt);
      // The import's first step (a quarantine, the mirror's reads) begins as this gateway accepts the run's gt done,
      // while the agent is still exiting: none of it reads anything of the agent's. The import at the exit takes it
      // over and discards it; else it is discarded as this activity ends. Its quarantine is its attempt's own (a retry
      // overlapping this attempt has another; the workflow's publishBranch after this imports into the run's usual
      // one), and one an earlier attempt's dead worker left is discarded here.
      let opened: OpenedQuarantine | undefined;
      // The rig's read for the round's ticket, begun with the quarantine: the import then runs beside it.
      let queue: ReturnType<MergeRequestQueuer> | undefined;
      const atDoneOf = (attempt: number) => importPlaces(input.rig.name, `${input.runId}-at-done-a${attempt}`);
      const atDone = atDoneOf(activityInfo().attempt);
      discardEarlierAttempts((a) => atDoneOf(a).quarantine, activityInfo().attempt, atDone.trash);
      const { publish: publishes } = input;
      const stopListening = deps.doneRuns?.onAccepted(input.runId, () => {
        noteDone();
        if (publishes) {
          opened = openQuarantine({
            ...atDone,
            targetBranch: input.targetBranch,
            baseSha: publishes.baseSha,
          }).catch(() => undefined);
          if (input.enqueue) queue = deps.queueMergeRequest?.(input.rig);
        }
      });
      // Heartbeats prove *this worker* is alive, so they never wait on a probe: a slow probe must not look like a dead worker.
      // The first goes at once only with a handle nothing holds yet (a retry must find it); otherwise the interval's
      // first beat is the first, as an earlier one would prove nothing the start did not (activities/heartbeat.ts).
      if (!input.handle && prior?.handle?.runId !== input.runId) heartbeat(details());
      const beat = setInterval(() => heartbeat(details()), Math.max(100, Math.min(poll, heartbeatTimeout / 3)));
      const probeTimeout = Math.min(10_000, Math.max(1_000, input.rig.policy.heartbeatTimeout));
      // An exit noticed at once rather than at the next poll: on a chain of beads every hop waits for it.
      const hint = driver.exitHint?.(handle, runDir);
      let early: Promise<void> | undefined = hint?.promise.then(() => (early = undefined));
      try {
        for (;;) {
          const status = await Promise.race([probe(driver, handle, runDir, probeTimeout), ctx.cancelled]);
          if (status.state === 'exited') {
            log.info('agent run exited', { ...ids, exitCode: status.exitCode });
            // The slot goes back while the branch is published: the gate's workflow task then runs during the import's
            // git work, not beside the merge request's first task.
            const { releaseSlot } = deps;
            const [released, { published, enqueued }] = await Promise.all([
              input.releaseSlot &&
                toldGate(
                  releaseSlot && (() => releaseSlot(input.rig.name, input.runId)),
                  'give the dispatch slot back',
                  input.runId,
                ),
              publishAtExit(input, opened).then(async (published) => ({
                published,
                enqueued: published && (await enqueueAtExit(input, published, queue)),
              })),
            ]);
            return {
              runId: input.runId,
              exitCode: status.exitCode,
              adopted,
              ...(released ? { slotReleased: true as const } : {}),
              ...(published ? { published } : {}),
              ...(enqueued ? { enqueued } : {}),
            };
          }
          if (status.state === 'unknown')
            log.warn('agent status probe failed; not treating it as death', { ...ids, detail: status.detail });
          // The interval's next beat keeps it, within `poll`, for a retry on a restarted worker.
          if (deps.doneRuns?.seen(input.runId)) noteDone();
          if (doneAt !== undefined && !stoppedAfterGrace && Date.now() - doneAt >= EXIT_GRACE_MS) {
            stoppedAfterGrace = true;
            log.warn('agent did not exit within the grace after gt done; stopping it', ids);
            await driver.stop(handle, STOP_GRACE_MS);
            continue;
          }
          await Promise.race([ctx.sleep(poll), ...(early ? [early] : [])]);
        }
      } catch (err) {
        if (err instanceof CancelledFailure) {
          clearInterval(beat); // this attempt is over: nothing more to prove alive
          if (cancellationDetails()?.workerShutdown) {
            // The worker is going away, not the run: leave the agent alive for the next worker to adopt. A thrown
            // CancelledFailure would be reported as "cancelled" (which nobody asked for); a retryable failure makes
            // the server retry, and the retry re-attaches through the handle in the input / heartbeat details.
            log.info('worker shutting down; leaving agent run for re-attachment', ids);
            throw ApplicationFailure.retryable(
              `worker on ${deps.hostId} shut down; run ${input.runId} continues and will be re-attached`,
              Failure.WorkerShutdown,
            );
          } else if (
            gaveUpOnAttempt(cancellationDetails(), activityInfo()) &&
            // The run's workflow ended (a bead terminated, a merge request cancelled with its reviewer running): no
            // retry will come. Asked of the server, whose silence (still down) leaves it to the wait below.
            (await deps.workflowRunning?.(input.workflowId)) !== false &&
            (await retryTakesOver(input.runId, heartbeatTimeout))
          ) {
            // This attempt was timed out (its heartbeats did not reach the server in time: a worker frozen, the
            // server or its database down), and the supervision's retry on this host's queue re-attached to the agent
            // through its handle: stopping it here would kill the agent the retry supervises (failure class 3).
            log.warn('supervision attempt timed out; its retry supervises the agent', ids);
          } else {
            log.info('stopping agent run', { ...ids, reason: err.message });
            await driver.stop(handle, STOP_GRACE_MS);
          }
        }
        throw err;
      } finally {
        clearInterval(beat);
        hint?.close();
        unsupervise?.();
        stopListening?.();
        if (opened) {
          await opened;
          discardTree(atDone.quarantine, atDone.trash);
        }
      }
    },

    /** Publishes a finished run's branch (`publish`), unless its supervision did (`RunExit.published`). */
    publishBranch(raw: PublishInput): Promise<PublishedBranch> {
      return whileHeartbeating('importing the run branch', () => publish(parseActivityInput(PublishInput, raw)));
    },
  };
}

/** The read-only paths of a contained run: the mirror (its repository's alternates and `origin`), `gt`, the gateway socket. */
function runMounts(deps: Pick<HostDeps, 'gtHome' | 'gtBinDir'>, rig: RigConfig): Mount[] {
  return [
    { path: paths.mirror(rig.name, deps.gtHome), writable: false },
    // `gt` itself (bin/, its node_modules and the agent bundle).
    { path: dirname(deps.gtBinDir), writable: false },
    { path: gatewaySocketDir(deps.gtHome), writable: false },
  ];
}

/** A status probe that hangs or throws is reported as unknown, never as a dead agent (failure class 3). */
export async function probe(
  driver: AgentRuntimeDriver,
  handle: AgentHandle,
  runDir: string,
  timeoutMs: number,
): Promise<AgentStatus> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      driver.status(handle, runDir),
      new Promise<AgentStatus>((resolve) => {
        timer = setTimeout(
          () => resolve({ state: 'unknown', detail: `status probe timed out after ${timeoutMs} ms` }),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    return { state: 'unknown', detail: String(err) };
  } finally {
    clearTimeout(timer);
  }
}

export type AgentRunActivities = ReturnType<typeof createAgentRunActivities>;
