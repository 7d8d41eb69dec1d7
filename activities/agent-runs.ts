/**
 * Agent run activities, executed on the task queue of the host that owns the agent process.
 * `startAgentRun` starts-or-adopts the run by its id (an uncertain start retried any number of times yields one
 * agent); `superviseAgentRun` watches it and heartbeats with its handle while it lives, so a retried activity
 * (a new worker on the same host) re-attaches to the live agent instead of launching another one.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { activityInfo, ApplicationFailure, cancellationDetails, Context, heartbeat, log } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import { z } from 'zod';
import { gatewaySocketDir, gatewaySocketPath, unixGatewayUrl } from '../agents/gateway-socket';
import { writePromptFile } from '../agents/prompt';
import { mintRunToken } from '../agents/run-token';
import type { AgentHandle, AgentRuntimeDriver, AgentStatus, Mount } from '../agents/runtime';
import { BeadSpec } from '../domain/bead';
import { beadBranch, RunId } from '../domain/ids';
import { AgentRuntime, RigConfig } from '../domain/rig';
import { paths } from '../host/home';
import { runGitCredentials } from './credentials';
import { git, remoteBranchSha, resetWorktree, syncMirror, withLock } from './git';
import { parseActivityInput } from './validation';

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
});
export type PrepareRunInput = z.input<typeof PrepareRunInput>;

export interface PreparedRun {
  host: string;
  worktree: string;
  promptFile: string;
  branch: string;
  baseSha: string;
  /** Agents of earlier runs of this bead found alive on this host and stopped before the worktree was reset. */
  staleRunsStopped: string[];
}

export const AgentHandleSchema = z.object({ runtime: AgentRuntime, runId: RunId, ref: z.string().min(1).max(200) });

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
});
export type SuperviseInput = z.input<typeof SuperviseInput>;

export interface StartedRun {
  handle: AgentHandle;
  adopted: boolean;
  host: string;
}

export interface RunExit {
  runId: string;
  exitCode: number | null;
  adopted: boolean;
}


export const PublishInput = z.object({ rig: RigConfig, worktree: z.string(), branch: z.string(), targetBranch: z.string() });
export type PublishInput = z.input<typeof PublishInput>;

export interface PublishedBranch {
  headSha: string;
  commitsAhead: number;
  uncommittedChanges: boolean;
}

/**
 * Variables of the worker's environment that must never reach an agent: Temporal credentials, our secret and home,
 * forge tokens (agents get git access only through their run's credential helper), the host's git config overrides.
 */
const WITHHELD_ENV = /^(TEMPORAL_|GT_GATEWAY_SECRET$|GT_CODEC_|GT_PAYLOAD_CODEC$|GT_HOME$|GT_AGENT_PASSTHROUGH$|GITHUB_TOKEN$|GH_TOKEN$|GITLAB_TOKEN$|GIT_CONFIG_)/;
/** Host variables every runtime passes into the run (containers get nothing else from the host): agent CLIs' model keys. */
const DEFAULT_PASSTHROUGH = ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'OPENROUTER_API_KEY'];
const STOP_GRACE_MS = 5_000;
const HANDLE_FILE = 'handle.json';

/** Where the run's handle is recorded on its host, so a later run of the bead can find (and stop) a stale agent. */
export function recordHandle(runDir: string, handle: AgentHandle): void {
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, HANDLE_FILE), JSON.stringify(handle));
}

function readHandle(runDir: string): AgentHandle | undefined {
  try {
    const parsed = AgentHandleSchema.safeParse(JSON.parse(readFileSync(join(runDir, HANDLE_FILE), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

const beadOfRun = (runId: string) => /^(.+)\/r\d+\/a\d+$/.exec(runId)?.[1];

export function createAgentRunActivities(deps: HostDeps) {
  const driverFor = async (runtime: AgentRuntime): Promise<AgentRuntimeDriver> => {
    const driver = deps.runtimes[runtime];
    if (!driver) throw ApplicationFailure.nonRetryable(`runtime '${runtime}' is not configured on host ${deps.hostId}`, 'RuntimeUnavailable');
    const available = await driver.available();
    if (!available.ok) throw ApplicationFailure.nonRetryable(`runtime '${runtime}' is unavailable on host ${deps.hostId}: ${available.reason}`, 'RuntimeUnavailable');
    return driver;
  };

  /**
   * Stops every agent of an earlier polecat run of this bead still alive on this host. Supervision of such a run was
   * lost (its worker vanished long enough for the bead to move on); it must not share the worktree with the next run.
   */
  const stopStaleRuns = async (beadId: string, exceptRunId: string): Promise<string[]> => {
    const runsDir = join(deps.gtHome, 'runs');
    if (!existsSync(runsDir)) return [];
    const stopped: string[] = [];
    for (const entry of readdirSync(runsDir)) {
      const runDir = join(runsDir, entry);
      const handle = readHandle(runDir);
      if (!handle || handle.runId === exceptRunId || beadOfRun(handle.runId) !== beadId) continue;
      const driver = deps.runtimes[handle.runtime];
      if (!driver) continue;
      const status = await probe(driver, handle, runDir, 10_000);
      if (status.state === 'exited') continue;
      log.warn('stopping a stale agent of this bead before the next run', { beadId, staleRunId: handle.runId, nextRunId: exceptRunId, status: status.state });
      await driver.stop(handle, STOP_GRACE_MS);
      stopped.push(handle.runId);
    }
    return stopped;
  };

  const launchEnv = (input: z.output<typeof SuperviseInput>, runDir: string) => {
    const { rig } = input;
    const token = mintRunToken(deps.gatewaySecret, {
      beadId: input.beadId,
      runId: input.runId,
      role: input.role,
      workflowId: input.workflowId,
      exp: Date.now() + rig.policy.runTimeout + 3_600_000,
    });
    const passthrough = process.env.GT_AGENT_PASSTHROUGH?.split(',').map((s) => s.trim()).filter(Boolean) ?? DEFAULT_PASSTHROUGH;
    const hostEnv = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !WITHHELD_ENV.test(k))) as Record<string, string>;
    const fromHost = Object.fromEntries(passthrough.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]!]));
    // Sandboxed and containerized agents can't reach the gateway's TCP port; its unix socket is mounted for them.
    const viaSocket = rig.runtime !== 'process' && existsSync(gatewaySocketPath(deps.gtHome));
    const identity = rig.gitIdentity ?? { name: `Gas Town ${input.role}`, email: `${input.role}@gastown.local` };
    const env: Record<string, string> = {
      ...fromHost,
      ...rig.env,
      GIT_AUTHOR_NAME: identity.name,
      GIT_AUTHOR_EMAIL: identity.email,
      GIT_COMMITTER_NAME: identity.name,
      GIT_COMMITTER_EMAIL: identity.email,
      ...runGitCredentials({ gtHome: deps.gtHome, runDir, repo: rig.repo }),
      PATH: `${deps.gtBinDir}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      GT_ROLE: input.role,
      GT_RIG: rig.name,
      GT_BEAD_ID: input.beadId,
      GT_RUN_ID: input.runId,
      GT_RUN_TOKEN: token,
      GT_GATEWAY_URL: viaSocket ? unixGatewayUrl(deps.gtHome) : deps.gatewayUrl,
      GT_PROMPT_FILE: input.promptFile,
      GT_BRANCH: input.branch,
      GT_TARGET_BRANCH: input.targetBranch,
    };
    return { env, hostEnv };
  };

  /** Host paths an agent needs besides its worktree and run directory (sandbox and docker mount exactly these). */
  const mountsFor = (rig: RigConfig): Mount[] => {
    const mirror = paths.mirror(rig.name, deps.gtHome);
    return [
      // The worktree's git directory lives in the rig's mirror: commits write objects and the bead's branch there.
      { path: mirror, writable: true },
      { path: join(mirror, 'config'), writable: false },
      { path: join(mirror, 'hooks'), writable: false },
      // `gt` itself (bin/ and its node_modules) and the gateway's socket.
      { path: dirname(deps.gtBinDir), writable: false },
      { path: gatewaySocketDir(deps.gtHome), writable: false },
    ];
  };

  const startOrAdopt = async (input: z.output<typeof SuperviseInput>, driver: AgentRuntimeDriver): Promise<{ handle: AgentHandle; adopted: boolean }> => {
    const { rig } = input;
    const command = input.role === 'reviewer' ? rig.reviewer : rig.agent;
    if (!command) throw ApplicationFailure.nonRetryable(`rig ${rig.name} has no ${input.role} command`, 'NoAgentCommand');
    const runDir = paths.runDir(input.runId, deps.gtHome);
    const { env, hostEnv } = launchEnv(input, runDir);
    try {
      const started = await driver.startOrAdopt({
        runId: input.runId,
        beadId: input.beadId,
        role: input.role,
        command,
        cwd: input.worktree,
        runDir,
        allowNetwork: rig.network,
        mounts: mountsFor(rig),
        image: rig.image,
        env,
        hostEnv,
      });
      recordHandle(runDir, started.handle);
      return started;
    } catch (err) {
      if ((err as { nonRetryable?: boolean }).nonRetryable) throw ApplicationFailure.nonRetryable((err as Error).message, 'AgentStartRefused');
      throw err;
    }
  };

  return {
    async prepareRun(raw: PrepareRunInput): Promise<PreparedRun> {
      const input = parseActivityInput(PrepareRunInput, raw);
      const staleRunsStopped = await stopStaleRuns(input.bead.id, input.runId);
      const mirror = await syncMirror(input.rig.name, input.rig.repo, deps.gtHome);
      const branch = beadBranch(input.bead.id);
      const published = await remoteBranchSha(mirror, branch);
      const base = published ?? (await remoteBranchSha(mirror, input.targetBranch));
      if (!base) throw ApplicationFailure.nonRetryable(`target branch '${input.targetBranch}' does not exist in ${input.rig.repo}`, 'TargetMissing');
      const worktree = paths.worktree(input.rig.name, input.bead.id, deps.gtHome);
      await resetWorktree(mirror, worktree, branch, base);
      const promptFile = writePromptFile(paths.runDir(input.runId, deps.gtHome), {
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
      });
      log.info('run prepared', { runId: input.runId, beadId: input.bead.id, worktree, base, staleRunsStopped });
      return { host: deps.hostId, worktree, promptFile, branch, baseSha: base, staleRunsStopped };
    },

    /** Starts the run's agent, or adopts it when an earlier (uncertain) attempt already did. */
    async startAgentRun(raw: SuperviseInput): Promise<StartedRun> {
      const input = parseActivityInput(SuperviseInput, raw);
      const driver = await driverFor(input.rig.runtime);
      const { handle, adopted } = await startOrAdopt(input, driver);
      log.info(adopted ? 'agent run adopted' : 'agent run started', { runId: input.runId, ref: handle.ref, attempt: activityInfo().attempt });
      return { handle, adopted, host: deps.hostId };
    },

    async superviseAgentRun(raw: SuperviseInput): Promise<RunExit> {
      const input = parseActivityInput(SuperviseInput, raw);
      const driver = await driverFor(input.rig.runtime);
      const runDir = paths.runDir(input.runId, deps.gtHome);
      const ids = { beadId: input.beadId, runId: input.runId };

      const prior = activityInfo().heartbeatDetails as { handle?: AgentHandle } | undefined;
      let handle: AgentHandle;
      let adopted = true;
      if (input.handle) handle = input.handle;
      else if (prior?.handle?.runId === input.runId) handle = prior.handle;
      else ({ handle, adopted } = await startOrAdopt(input, driver));
      log.info('supervising agent run', { ...ids, ref: handle.ref, attempt: activityInfo().attempt });

      const ctx = Context.current();
      const poll = deps.pollIntervalMs ?? 500;
      const heartbeatTimeout = activityInfo().heartbeatTimeoutMs ?? 60_000;
      // Heartbeats prove *this worker* is alive, so they never wait on a probe: a slow probe must not look like a dead worker.
      heartbeat({ handle });
      const beat = setInterval(() => heartbeat({ handle }), Math.max(100, Math.min(poll, heartbeatTimeout / 3)));
      const probeTimeout = Math.min(10_000, Math.max(1_000, input.rig.policy.heartbeatTimeout));
      // An exit noticed at once rather than at the next poll: on a chain of beads every hop waits for it.
      const hint = driver.exitHint?.(handle, runDir);
      let early: Promise<void> | undefined = hint?.promise.then(() => (early = undefined));
      try {
        for (;;) {
          const status = await Promise.race([probe(driver, handle, runDir, probeTimeout), ctx.cancelled]);
          if (status.state === 'exited') {
            log.info('agent run exited', { ...ids, exitCode: status.exitCode });
            return { runId: input.runId, exitCode: status.exitCode, adopted };
          }
          if (status.state === 'unknown') log.warn('agent status probe failed; not treating it as death', { ...ids, detail: status.detail });
          await Promise.race([ctx.sleep(poll), ...(early ? [early] : [])]);
        }
      } catch (err) {
        if (err instanceof CancelledFailure) {
          if (cancellationDetails()?.workerShutdown) {
            // The worker is going away, not the run: leave the agent alive for the next worker to adopt. A thrown
            // CancelledFailure would be reported as "cancelled" (which nobody asked for); a retryable failure makes
            // the server retry, and the retry re-attaches through the handle in the input / heartbeat details.
            log.info('worker shutting down; leaving agent run for re-attachment', ids);
            throw ApplicationFailure.retryable(`worker on ${deps.hostId} shut down; run ${input.runId} continues and will be re-attached`, 'WorkerShutdown');
          } else {
            log.info('stopping agent run', { ...ids, reason: err.message });
            await driver.stop(handle, STOP_GRACE_MS);
          }
        }
        throw err;
      } finally {
        clearInterval(beat);
        hint?.close();
      }
    },

    async publishBranch(raw: PublishInput): Promise<PublishedBranch> {
      const input = parseActivityInput(PublishInput, raw);
      const mirror = await syncMirror(input.rig.name, input.rig.repo, deps.gtHome);
      const wt = input.worktree;
      const headSha = (await git(wt, ['rev-parse', 'HEAD'])).trim();
      const uncommittedChanges = (await git(wt, ['status', '--porcelain'])).trim() !== '';
      const ahead = Number((await git(wt, ['rev-list', '--count', `refs/remotes/origin/${input.targetBranch}..${headSha}`])).trim());
      if (ahead > 0) {
        await withLock(mirror, () => git(wt, ['push', '--force', 'origin', `${headSha}:refs/heads/${input.branch}`]));
      }
      return { headSha, commitsAhead: ahead, uncommittedChanges };
    },
  };
}

/** A status probe that hangs or throws is reported as unknown, never as a dead agent (failure class 3). */
export async function probe(driver: AgentRuntimeDriver, handle: AgentHandle, runDir: string, timeoutMs: number): Promise<AgentStatus> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      driver.status(handle, runDir),
      new Promise<AgentStatus>((resolve) => {
        timer = setTimeout(() => resolve({ state: 'unknown', detail: `status probe timed out after ${timeoutMs} ms` }), timeoutMs);
      }),
    ]);
  } catch (err) {
    return { state: 'unknown', detail: String(err) };
  } finally {
    clearTimeout(timer);
  }
}

export type AgentRunActivities = ReturnType<typeof createAgentRunActivities>;
