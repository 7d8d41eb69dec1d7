/**
 * The refinery's merge section, by the bors rule: build the candidate (one MR, or a batch in queue order) on top
 * of the current target, run the gates on exactly that tree, then move the target to exactly that commit by
 * compare-and-swap. If the target moved meanwhile, start over on the new target. Every landed MR carries the
 * trailer `Gt-Merge-Request: <mrId>@<head>`, so a retry finds its earlier success instead of merging twice.
 */
import { existsSync } from 'node:fs';
import { activityInfo, cancellationDetails, Context, heartbeat, log } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { z } from 'zod';
import type { MergeOutcome } from '../domain/outcomes';
import { type CandidateResult, conflictOutcome, MergeTicket } from '../domain/refinery';
import { type AgentRuntime, RigConfig } from '../domain/rig';
import { fsSafe } from '../domain/ids';
import type { AgentRuntimeDriver } from '../agents/runtime';
import { paths } from '../host/home';
import { type GateLaunch, runGates } from './gates';
import { runEnv } from './agent-env';
import {
  createCandidateTree,
  findMergedCommit,
  git,
  gitStatus,
  mergeTrailer,
  remoteBranchSha,
  removeCandidateTree,
  type Repo,
  syncMirror,
  withLock,
} from './git';
import { parseActivityInput } from './validation';

const MAX_CAS_ROUNDS = 5;

export const MergeCandidatesInput = z
  .object({
    rig: RigConfig,
    /** In queue order; a batch lands as one candidate or not at all. */
    tickets: z.array(MergeTicket).min(1).max(32),
    /** `merge` lands the gated candidate; `verify` (PR strategy) only builds and gates it. */
    mode: z.enum(['merge', 'verify']).default('merge'),
  })
  .refine(
    (i) => i.tickets.every((t) => t.targetBranch === i.tickets[0]!.targetBranch),
    'all tickets of a candidate must share one target branch',
  );
export type MergeCandidatesInput = z.input<typeof MergeCandidatesInput>;

type Ticket = MergeTicket;

/** What a merge section needs of its host: where its state lives and how gates run (their runtime, `gt`, env). */
export interface MergeDeps {
  gtHome: string;
  gtBinDir: string;
  runtimes: Partial<Record<AgentRuntime, AgentRuntimeDriver>>;
  /** The worker's environment, the only source of what a gate may be given (default: process.env). */
  hostEnv?: NodeJS.ProcessEnv;
}

export function createMergeActivities(deps: MergeDeps) {
  return {
    mergeCandidate: (raw: MergeCandidatesInput) => mergeCandidate(deps, raw),
  };
}

/** The runtime a rig's gates run in: its agents' runtime, which must be available on this host. */
export async function gateRuntime(deps: MergeDeps, rig: RigConfig): Promise<AgentRuntimeDriver> {
  const driver = deps.runtimes[rig.runtime];
  const available = driver ? await driver.available() : { ok: false as const, reason: 'not configured' };
  if (!driver || !available.ok) {
    // Retryable: another host of the town may have it (and this one may get it back); the section waits, bounded.
    throw ApplicationFailure.retryable(
      `gates of rig ${rig.name} need runtime '${rig.runtime}', unavailable here: ${available.ok ? '' : available.reason}`,
      'RuntimeUnavailable',
    );
  }
  return driver;
}

async function mergeCandidate(deps: MergeDeps, raw: MergeCandidatesInput): Promise<CandidateResult> {
  const { rig, tickets, mode } = parseActivityInput(MergeCandidatesInput, raw);
  const lead = tickets[0]!;
  const target = lead.targetBranch;
  const mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
  const attempt = activityInfo().attempt;
  // One tree per attempt: a gate of an attempt whose worker died may still be running in the old one.
  const candidateDir = paths.candidate(rig.name, `${lead.mrId}-a${attempt}`, deps.gtHome);
  const ctx = { mrIds: tickets.map((t) => t.mrId), attempt, mode };
  let gateRuns = 0;

  try {
    for (let casRound = 1; casRound <= MAX_CAS_ROUNDS; casRound++) {
      heartbeat(`building candidate (round ${casRound})`);
      const landed: { mrId: string; commit: string }[] = [];
      const todo: Ticket[] = [];
      for (const t of tickets) {
        const commit = mode === 'merge' ? await findMergedCommit(mirror, target, t.mrId, t.headSha) : null;
        if (commit) landed.push({ mrId: t.mrId, commit });
        else todo.push(t);
      }
      if (todo.length === 0) {
        log.info('candidate already merged; reporting the earlier merge', { ...ctx, landed });
        return {
          kind: 'merged',
          commit: landed[landed.length - 1]!.commit,
          merged: landed,
          gateRuns,
          alreadyMerged: true,
        };
      }

      const targetSha = await remoteBranchSha(mirror, target);
      if (!targetSha)
        return excluded(
          todo[0]!,
          { kind: 'rejected', feedback: `target branch '${target}' does not exist in ${rig.repo}` },
          gateRuns,
        );
      for (const t of todo) {
        const unusable = await checkHead(mirror, t, targetSha);
        if (unusable) return excluded(t, unusable, gateRuns);
      }

      const candidate = await createCandidateTree(mirror, candidateDir, `gt-candidate/${lead.beadId}`, targetSha);
      const commits: { mrId: string; commit: string }[] = [];
      for (const t of todo) {
        const built = await applyTicket(candidate, rig.mergeStrategy, t, targetSha);
        if (built.kind === 'conflict') return excluded(t, built, gateRuns);
        commits.push({ mrId: t.mrId, commit: built.sha });
      }
      const candidateSha = commits[commits.length - 1]!.commit;

      if (rig.gates.length) gateRuns++;
      const gateKey = `gate-${fsSafe(lead.mrId)}-${candidateSha.slice(0, 12)}-a${attempt}r${casRound}`;
      const gateResults = rig.gates.length
        ? await runGates(
            await gateRuntime(deps, rig),
            rig.gates,
            gateKey,
            gateLaunch(deps, rig, candidateDir, gateKey, {
              GT_MR_ID: lead.mrId,
              GT_MR_IDS: todo.map((t) => t.mrId).join(' '),
              GT_BEAD_ID: lead.beadId,
              GT_BEAD_IDS: todo.map((t) => t.beadId).join(' '),
              GT_TARGET_BRANCH: target,
              GT_CANDIDATE_SHA: candidateSha,
            }),
            rig.gateTimeout,
          )
        : [];
      stopIfCancelled();
      const failed = gateResults.find((g) => !g.ok);
      if (failed) {
        const why = failed.timedOut ? `timed out after ${rig.gateTimeout} ms` : `exited with ${failed.exitCode}`;
        const together = todo.length > 1 ? ` (gated together with ${todo.map((t) => t.mrId).join(', ')})` : '';
        return {
          kind: 'gates_failed',
          gateRuns,
          outcome: {
            kind: 'gates_failed',
            gate: failed.gate,
            logPath: failed.logPath,
            feedback: `Gate \`${failed.gate}\` ${why} on the merge of your branch into ${target}${together}.\nLast output:\n${failed.tail}`,
          },
        };
      }
      if (mode === 'verify') return { kind: 'verified', candidateSha, gateRuns };

      heartbeat('pushing');
      // Under the mirror's lock: a push that lands also moves the mirror's origin/<target>, and a fetch running
      // beside it would fail to lock that ref. That move is also why a landed push needs no fetch afterwards.
      // From the mirror, never from the candidate's tree: a gate could have rewritten anything there.
      const push = await withLock(mirror, () =>
        gitStatus(mirror, [
          'push',
          'origin',
          `${candidateSha}:refs/heads/${target}`,
          `--force-with-lease=refs/heads/${target}:${targetSha}`,
        ]),
      );
      if (push.ok) {
        log.info('merged', { ...ctx, commit: candidateSha, target, gateRuns });
        return {
          kind: 'merged',
          commit: candidateSha,
          merged: [...landed, ...commits],
          gateRuns,
          alreadyMerged: false,
        };
      }
      const refusal = pushRefusal(push.stderr);
      if (refusal === 'refused') {
        throw ApplicationFailure.nonRetryable(
          `${rig.repo} refused the push of ${target}: ${push.stderr.trim().slice(0, 1000)}`,
          'PushRefused',
        );
      }
      if (refusal === 'failed')
        throw new Error(`pushing ${target} to ${rig.repo} failed: ${push.stderr.trim().slice(0, 1000)}`);
      log.warn('target moved while gating; rebuilding on the new target', { ...ctx, error: push.stderr.trim() });
      await syncMirror(rig.name, rig.repo, deps.gtHome);
    }
    throw ApplicationFailure.retryable(
      `target ${target} kept moving during ${MAX_CAS_ROUNDS} merge attempts`,
      'TargetKeptMoving',
    );
  } finally {
    if (existsSync(candidateDir)) await removeCandidateTree(mirror, candidateDir);
  }
}

/**
 * Why a compare-and-swap push failed: the target moved (lost the lease: build again on the new target), the
 * repository refused it (a hook, a protected branch, a checked-out branch, permissions: building again cannot help,
 * so the merge fails with git's reason), or anything else (the network: the activity is retried).
 */
export function pushRefusal(stderr: string): 'moved' | 'refused' | 'failed' {
  if (/\((stale info|fetch first|non-fast-forward)\)/.test(stderr)) return 'moved';
  if (/\[remote rejected\]|refusing to update|declined|denied|protected branch|permission/i.test(stderr))
    return 'refused';
  return 'failed';
}

const excluded = (t: Ticket, outcome: MergeOutcome, gateRuns: number): CandidateResult => ({
  kind: 'excluded',
  mrId: t.mrId,
  outcome,
  gateRuns,
});

/** Why an MR's head cannot be merged at all, if it cannot. */
async function checkHead(mirror: string, t: Ticket, targetSha: string): Promise<MergeOutcome | undefined> {
  const hasHead = (await gitStatus(mirror, ['cat-file', '-e', `${t.headSha}^{commit}`])).ok;
  if (!hasHead)
    return {
      kind: 'rejected',
      feedback: `commit ${t.headSha} of ${t.branch} is not in the repository (was the branch pushed?)`,
    };
  const isAncestor = (await gitStatus(mirror, ['merge-base', '--is-ancestor', t.headSha, targetSha])).ok;
  if (isAncestor)
    return {
      kind: 'rejected',
      feedback: `branch ${t.branch} has no changes that are not already on ${t.targetBranch}`,
    };
  return undefined;
}

/**
 * Never push after a cancellation: the section is being abandoned. A worker shutting down is not the workflow's
 * decision, so it is reported as a retryable failure and the merge is retried (and re-gated) elsewhere.
 */
function stopIfCancelled(): void {
  const signal = Context.current().cancellationSignal;
  if (!signal.aborted) return;
  if (cancellationDetails()?.workerShutdown)
    throw ApplicationFailure.retryable('merge interrupted: the worker is shutting down', 'WorkerShutdown');
  throw new CancelledFailure('merge section cancelled');
}

type Built = { kind: 'built'; sha: string } | Extract<MergeOutcome, { kind: 'conflict' }>;

/** Applies one MR on top of the candidate's HEAD; a conflict is aborted, leaving nothing half-merged. */
async function applyTicket(
  dir: Repo,
  strategy: RigConfig['mergeStrategy'],
  ticket: Ticket,
  targetSha: string,
): Promise<Built> {
  const before = (await git(dir, ['rev-parse', 'HEAD'])).trim();
  const message = `${ticket.title} (${ticket.beadId})\n\nMerge ${ticket.branch} into ${ticket.targetBranch}.\n\n${mergeTrailer(ticket.mrId, ticket.headSha)}`;
  const conflict = async (): Promise<Built> => {
    const conflicted = (await git(dir, ['diff', '--name-only', '--diff-filter=U'])).split('\n').filter(Boolean);
    await gitStatus(dir, ['merge', '--abort']);
    await gitStatus(dir, ['cherry-pick', '--abort']);
    await git(dir, ['reset', '--hard', before]);
    await git(dir, ['clean', '-fdx']);
    return conflictOutcome(conflicted, ticket.targetBranch);
  };
  const base = strategy === 'rebase' ? (await git(dir, ['merge-base', targetSha, ticket.headSha])).trim() : undefined;
  // A polecat resolves a conflict by merging the target into its branch (its feedback says so). Replaying only its own
  // commits would drop that resolution and conflict again in every round, so such a branch lands squashed: linear too.
  const replay =
    base !== undefined && !(await git(dir, ['rev-list', '--merges', '-n', '1', `${base}..${ticket.headSha}`])).trim();
  if (strategy === 'merge') {
    if (!(await gitStatus(dir, ['merge', '--no-ff', '-m', message, ticket.headSha])).ok) return conflict();
  } else if (!replay) {
    if (!(await gitStatus(dir, ['merge', '--squash', ticket.headSha])).ok) return conflict();
    await git(dir, ['commit', '--allow-empty', '-m', message]);
  } else {
    const commits = (await git(dir, ['rev-list', '--reverse', '--no-merges', `${base}..${ticket.headSha}`]))
      .split('\n')
      .filter(Boolean);
    for (const c of commits) {
      if (!(await gitStatus(dir, ['cherry-pick', '--allow-empty', '--keep-redundant-commits', c])).ok)
        return conflict();
    }
    const last = (await git(dir, ['log', '-1', '--format=%B'])).trim();
    await git(dir, [
      'commit',
      '--amend',
      '--allow-empty',
      '-m',
      `${last}\n\n${mergeTrailer(ticket.mrId, ticket.headSha)}`,
    ]);
  }
  return { kind: 'built', sha: (await git(dir, ['rev-parse', 'HEAD'])).trim() };
}

/** A gate's launch: the candidate's tree, the mirror its `.git` points into (read-only), allow-listed env, rig limits. */
export function gateLaunch(
  deps: MergeDeps,
  rig: RigConfig,
  candidateDir: string,
  key: string,
  gt: Record<string, string>,
): GateLaunch {
  const agentDir = paths.agentDir(key, deps.gtHome);
  return {
    beadId: gt.GT_BEAD_ID!,
    cwd: candidateDir,
    runDir: (runId) => paths.runDir(runId, deps.gtHome),
    agentDir,
    allowNetwork: rig.network,
    mounts: [{ path: paths.mirror(rig.name, deps.gtHome), writable: false }],
    image: rig.image,
    limits: rig.limits,
    env: runEnv({
      runtime: rig.runtime,
      rig,
      hostEnv: deps.hostEnv ?? process.env,
      agentDir,
      gtBinDir: deps.gtBinDir,
      gt,
    }),
  };
}
