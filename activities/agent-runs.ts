/**
 * Agent run activities, executed on the task queue of the host that owns the agent process.
 * `superviseAgentRun` starts-or-adopts the run and heartbeats with its handle while it lives, so a retried
 * activity (new worker on the same host) re-attaches to the live process instead of launching another one.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { activityInfo, ApplicationFailure, cancellationDetails, Context, heartbeat, log } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import { z } from 'zod';
import { renderPrompt } from '../agents/prompt';
import { mintRunToken } from '../agents/run-token';
import type { AgentHandle, AgentRuntimeDriver, AgentStatus } from '../agents/runtime';
import { BeadSpec } from '../domain/bead';
import { beadBranch } from '../domain/ids';
import { AgentRuntime, RigConfig } from '../domain/rig';
import { paths } from '../host/home';
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
  runId: z.string(),
  round: z.number().int().min(1),
  attempt: z.number().int().min(1),
  targetBranch: z.string().min(1),
  feedback: z.array(z.string()).default([]),
  checkpoints: z.array(z.string()).default([]),
});
export type PrepareRunInput = z.input<typeof PrepareRunInput>;

export interface PreparedRun {
  host: string;
  worktree: string;
  promptFile: string;
  branch: string;
  baseSha: string;
}

export const SuperviseInput = z.object({
  runId: z.string(),
  beadId: z.string(),
  workflowId: z.string(),
  role: z.enum(['polecat', 'reviewer']),
  rig: RigConfig,
  worktree: z.string(),
  promptFile: z.string(),
  branch: z.string(),
  targetBranch: z.string(),
});
export type SuperviseInput = z.input<typeof SuperviseInput>;

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

/** Variables of the worker's environment that must never reach an agent (Temporal credentials, our secret). */
const WITHHELD_ENV = /^(TEMPORAL_|GT_GATEWAY_SECRET$|GT_HOME$)/;

export function createAgentRunActivities(deps: HostDeps) {
  const driverFor = async (runtime: AgentRuntime): Promise<AgentRuntimeDriver> => {
    const driver = deps.runtimes[runtime];
    if (!driver) throw ApplicationFailure.nonRetryable(`runtime '${runtime}' is not configured on host ${deps.hostId}`, 'RuntimeUnavailable');
    const available = await driver.available();
    if (!available.ok) throw ApplicationFailure.nonRetryable(`runtime '${runtime}' is unavailable on host ${deps.hostId}: ${available.reason}`, 'RuntimeUnavailable');
    return driver;
  };

  return {
    async prepareRun(raw: PrepareRunInput): Promise<PreparedRun> {
      const input = parseActivityInput(PrepareRunInput, raw);
      const mirror = await syncMirror(input.rig.name, input.rig.repo, deps.gtHome);
      const branch = beadBranch(input.bead.id);
      const published = await remoteBranchSha(mirror, branch);
      const base = published ?? (await remoteBranchSha(mirror, input.targetBranch));
      if (!base) throw ApplicationFailure.nonRetryable(`target branch '${input.targetBranch}' does not exist in ${input.rig.repo}`, 'TargetMissing');
      const worktree = paths.worktree(input.rig.name, input.bead.id, deps.gtHome);
      await resetWorktree(mirror, worktree, branch, base);
      const runDir = paths.runDir(input.runId, deps.gtHome);
      mkdirSync(runDir, { recursive: true });
      const promptFile = join(runDir, 'prompt.md');
      writeFileSync(
        promptFile,
        renderPrompt({
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
        }),
      );
      log.info('run prepared', { runId: input.runId, beadId: input.bead.id, worktree, base });
      return { host: deps.hostId, worktree, promptFile, branch, baseSha: base };
    },

    async superviseAgentRun(raw: SuperviseInput): Promise<RunExit> {
      const input = parseActivityInput(SuperviseInput, raw);
      const { rig } = input;
      const driver = await driverFor(rig.runtime);
      const runDir = paths.runDir(input.runId, deps.gtHome);
      const ids = { beadId: input.beadId, runId: input.runId };
      const command = input.role === 'reviewer' ? rig.reviewer : rig.agent;
      if (!command) throw ApplicationFailure.nonRetryable(`rig ${rig.name} has no ${input.role} command`, 'NoAgentCommand');

      const prior = activityInfo().heartbeatDetails as { handle?: AgentHandle } | undefined;
      let handle: AgentHandle;
      let adopted: boolean;
      if (prior?.handle?.runId === input.runId) {
        handle = prior.handle;
        adopted = true;
      } else {
        const token = mintRunToken(deps.gatewaySecret, {
          beadId: input.beadId,
          runId: input.runId,
          role: input.role,
          workflowId: input.workflowId,
          exp: Date.now() + rig.policy.runTimeout + 3_600_000,
        });
        const inherited = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !WITHHELD_ENV.test(k))) as Record<string, string>;
        const started = await driver.startOrAdopt({
          runId: input.runId,
          beadId: input.beadId,
          role: input.role,
          command,
          cwd: input.worktree,
          runDir,
          allowNetwork: true,
          env: {
            ...inherited,
            ...rig.env,
            PATH: `${deps.gtBinDir}:${process.env.PATH ?? '/usr/bin:/bin'}`,
            GT_ROLE: input.role,
            GT_RIG: rig.name,
            GT_BEAD_ID: input.beadId,
            GT_RUN_ID: input.runId,
            GT_RUN_TOKEN: token,
            GT_GATEWAY_URL: deps.gatewayUrl,
            GT_PROMPT_FILE: input.promptFile,
            GT_BRANCH: input.branch,
            GT_TARGET_BRANCH: input.targetBranch,
          },
        });
        handle = started.handle;
        adopted = started.adopted;
      }
      log.info(adopted ? 'agent run adopted' : 'agent run started', { ...ids, ref: handle.ref, attempt: activityInfo().attempt });
      heartbeat({ handle });

      const poll = deps.pollIntervalMs ?? 500;
      const ctx = Context.current();
      try {
        for (;;) {
          const status = await probe(driver, handle, runDir);
          if (status.state === 'exited') {
            log.info('agent run exited', { ...ids, exitCode: status.exitCode });
            return { runId: input.runId, exitCode: status.exitCode, adopted };
          }
          if (status.state === 'unknown') log.warn('agent status probe failed; not treating it as death', { ...ids, detail: status.detail });
          heartbeat({ handle });
          await ctx.sleep(poll);
        }
      } catch (err) {
        if (err instanceof CancelledFailure) {
          if (cancellationDetails()?.workerShutdown) {
            // The worker is going away, not the run: leave the agent alive for the next worker to adopt. A thrown
            // CancelledFailure would be reported as "cancelled" (which nobody asked for); a retryable failure makes
            // the server retry, and the retry re-attaches through the handle in the heartbeat details.
            log.info('worker shutting down; leaving agent run for re-attachment', ids);
            throw ApplicationFailure.retryable(`worker on ${deps.hostId} shut down; run ${input.runId} continues and will be re-attached`, 'WorkerShutdown');
          } else {
            log.info('stopping agent run', { ...ids, reason: err.message });
            await driver.stop(handle, 5_000);
          }
        }
        throw err;
      }
    },

    async stopAgentRun(raw: { rig: RigConfig; handle: AgentHandle }): Promise<void> {
      const driver = await driverFor(raw.rig.runtime);
      await driver.stop(raw.handle, 5_000);
    },

    async publishBranch(raw: PublishInput): Promise<PublishedBranch> {
      const input = parseActivityInput(PublishInput, raw);
      const mirror = await syncMirror(input.rig.name, input.rig.repo, deps.gtHome);
      const wt = git(input.worktree);
      const headSha = (await wt.revparse(['HEAD'])).trim();
      const uncommittedChanges = !(await wt.status()).isClean();
      const ahead = Number((await wt.raw(['rev-list', '--count', `refs/remotes/origin/${input.targetBranch}..${headSha}`])).trim());
      if (ahead > 0) {
        await withLock(mirror, () => wt.raw(['push', '--force', 'origin', `${headSha}:refs/heads/${input.branch}`]));
      }
      return { headSha, commitsAhead: ahead, uncommittedChanges };
    },
  };
}

/** A status probe that hangs or throws is reported as unknown, never as a dead agent (failure class 3). */
async function probe(driver: AgentRuntimeDriver, handle: AgentHandle, runDir: string): Promise<AgentStatus> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      driver.status(handle, runDir),
      new Promise<AgentStatus>((resolve) => {
        timer = setTimeout(() => resolve({ state: 'unknown', detail: 'status probe timed out' }), 10_000);
      }),
    ]);
  } catch (err) {
    return { state: 'unknown', detail: String(err) };
  } finally {
    clearTimeout(timer);
  }
}

export type AgentRunActivities = ReturnType<typeof createAgentRunActivities>;
