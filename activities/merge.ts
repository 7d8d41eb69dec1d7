/**
 * The refinery's merge section, by the bors rule: build the candidate (one MR, or a batch in queue order) on top
 * of the current target, run the gates on exactly that tree, then move the target to exactly that commit by
 * compare-and-swap. If the target moved meanwhile, start over on the new target. Every landed MR carries the
 * trailer `Gt-Merge-Request: <mrId>@<head>`, so a retry finds its earlier success instead of merging twice.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { activityInfo, cancellationDetails, Context, heartbeat, log } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { z } from 'zod';
import type { MergeOutcome } from '../domain/outcomes';
import {
  type CandidateResult,
  conflictOutcome,
  type LandResult,
  MergeTicket,
  type SpeculativeGateResult,
} from '../domain/refinery';
import { type AgentRuntime, RigConfig } from '../domain/rig';
import { CommitId, fsSafe } from '../domain/ids';
import type { AgentRuntimeDriver } from '../agents/runtime';
import { paths } from '../host/home';
import { type GateLaunch, runGates, stopLeftoverGates } from './gates';
import { discardEarlierAttempts } from './trash';
import { runEnv } from './agent-env';
import {
  clearingStaleRefLocks,
  commitIds,
  createCandidateTree,
  findMergedCommit,
  git,
  gitStatus,
  heldLocks,
  mergeTrailer,
  missingCommits,
  mirrorWith,
  remoteBranchSha,
  removeCandidateTree,
  type Repo,
  syncMirror,
  withLock,
} from './git';
import { parseActivityInput } from '../domain/validation';
import { Failure } from '../domain/failures';
import type { MergedBranchSweeper } from './merged-branches';
import { type BeadReport, mergeReport } from '../domain/messages';

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
  /** Tells a convoy of a bead's merge: false when the convoy is gone (activities/index.ts signals it). */
  reportMerge?: (convoyId: string, report: BeadReport) => Promise<boolean>;
  /** Deletes the branches of merged requests from the rig's repository, later and in batches. */
  mergedBranches?: MergedBranchSweeper;
}

/**
 * One MR of a speculative chain and the time (Unix seconds) its commit carries. With the time fixed, building the same
 * chain on the same base makes the same commits wherever and whenever it is built: candidate k's commits start with
 * candidate k−1's, so landing k after k−1 is a fast-forward, and the host that lands need not be the one that gated.
 */
export const ChainLink = z.object({ ticket: MergeTicket, at: z.number().int().nonnegative() });
export type ChainLink = z.infer<typeof ChainLink>;

const oneTarget = (chain: ChainLink[]) => chain.every((l) => l.ticket.targetBranch === chain[0]!.ticket.targetBranch);

export const GateSpeculativeInput = z
  .object({
    rig: RigConfig,
    /** The commit the chain builds on: the target as the refinery last saw it. */
    base: CommitId,
    /** The MRs ahead of the candidate's own MR, then it (last). */
    chain: z.array(ChainLink).min(1).max(32),
    /** Unique per candidate and rebuild: names its tree and its gate runs. */
    key: z.string().regex(/^[A-Za-z0-9._-]{1,160}$/),
  })
  .refine((i) => oneTarget(i.chain), 'all MRs of a chain must share one target branch');
export type GateSpeculativeInput = z.input<typeof GateSpeculativeInput>;

export const LandChainInput = z
  .object({
    rig: RigConfig,
    /** The lease: the target must still be exactly this commit. */
    base: CommitId,
    /** The chain being landed, as gated (same MRs, same times) on `base`. */
    chain: z.array(ChainLink).min(1).max(32),
    /** The gated commit the target moves to: the chain's last. */
    candidateSha: CommitId,
  })
  .refine((i) => oneTarget(i.chain), 'all MRs of a chain must share one target branch');
export type LandChainInput = z.input<typeof LandChainInput>;

export const TargetTipInput = z.object({ rig: RigConfig, targetBranch: z.string().min(1).max(200) });
export type TargetTipInput = z.input<typeof TargetTipInput>;

export function createMergeActivities(deps: MergeDeps) {
  return {
    mergeCandidate: (raw: MergeCandidatesInput) => mergeCandidate(deps, raw),
    gateSpeculative: (raw: GateSpeculativeInput) => gateSpeculative(deps, raw),
    landChain: (raw: LandChainInput) => landChain(deps, raw),
    targetTip: (raw: TargetTipInput) => targetTip(deps, raw),
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
      Failure.RuntimeUnavailable,
    );
  }
  return driver;
}

/**
 * This attempt's candidate tree for `key` (one per attempt) and the ledger of the gates it runs there. What earlier
 * attempts left behind when their worker was killed mid-section goes first: the gates still running (stopped), then the
 * trees (discarded). Those attempts are over; a first attempt looks at nothing.
 */
export async function attemptTree(deps: MergeDeps, rig: string, key: string): Promise<AttemptTree> {
  const { attempt } = activityInfo();
  const at = (a: number) => paths.candidate(rig, `${key}-a${a}`, deps.gtHome);
  const ledgerOf = (a: number) => paths.gateLedger(rig, `${key}-a${a}`, deps.gtHome);
  if (attempt > 1) {
    const earlier = Array.from({ length: attempt - 1 }, (_, i) => ledgerOf(i + 1));
    const stopped = await stopLeftoverGates(deps.runtimes, earlier, (runId) => paths.runDir(runId, deps.gtHome));
    if (stopped.length) log.warn('stopped gates an earlier attempt left running', { key, attempt, stopped });
  }
  discardEarlierAttempts(at, attempt, paths.trash(rig, deps.gtHome));
  return { attempt, dir: at(attempt), ledger: ledgerOf(attempt) };
}

export interface AttemptTree {
  attempt: number;
  dir: string;
  ledger: string;
}

/** An attempt's tree and ledger, discarded as it ends: its gates have ended (runGate stops any it would leave). */
export function discardAttemptTree(deps: MergeDeps, rig: string, tree: AttemptTree): void {
  removeCandidateTree(tree.dir, paths.trash(rig, deps.gtHome));
  rmSync(tree.ledger, { force: true });
}

async function mergeCandidate(deps: MergeDeps, raw: MergeCandidatesInput): Promise<CandidateResult> {
  const { rig, tickets, mode } = parseActivityInput(MergeCandidatesInput, raw);
  const lead = tickets[0]!;
  const target = lead.targetBranch;
  // A merge fetches only when the mirror lacks the target or a head: the compare-and-swap push below catches a target
  // that moved meanwhile (and fetches then). A verification never pushes, so it fetches to gate on the newest target.
  let { mirror, fetched, ids } =
    mode === 'merge'
      ? await mirrorWith(rig.name, rig.repo, deps.gtHome, [
          `refs/remotes/origin/${target}`,
          ...tickets.map((t) => t.headSha),
        ])
      : { mirror: await syncMirror(rig.name, rig.repo, deps.gtHome), fetched: true, ids: undefined };
  const tree = await attemptTree(deps, rig.name, lead.mrId);
  const { attempt, dir: candidateDir } = tree;
  const ctx = { mrIds: tickets.map((t) => t.mrId), attempt, mode };
  let gateRuns = 0;

  try {
    for (let casRound = 1; casRound <= MAX_CAS_ROUNDS; casRound++) {
      heartbeat(`building candidate (round ${casRound})`);
      const look = await lookAtMirror(mirror, target, tickets, mode, ids);
      ids = undefined; // what mirrorWith read is the first round's only
      const landed: { mrId: string; commit: string }[] = [];
      const todo: Ticket[] = [];
      let unusable: { ticket: Ticket; outcome: MergeOutcome } | undefined;
      for (const [i, t] of tickets.entries()) {
        const commit = look.earlier[i];
        if (commit) landed.push({ mrId: t.mrId, commit });
        else todo.push(t);
        const outcome = look.problems[i];
        if (!commit && outcome && !unusable) unusable = { ticket: t, outcome };
      }
      if (todo.length === 0) {
        log.info('candidate already merged; reporting the earlier merge', { ...ctx, landed });
        if (mode === 'merge') deps.mergedBranches?.merged(rig, tickets);
        return {
          kind: 'merged',
          commit: landed[landed.length - 1]!.commit,
          merged: landed,
          gateRuns,
          alreadyMerged: true,
        };
      }

      const { targetSha } = look;
      if (!targetSha)
        unusable = {
          ticket: todo[0]!,
          outcome: { kind: 'rejected', feedback: `target branch '${target}' does not exist in ${rig.repo}` },
        };
      if (unusable && !fetched) {
        // Decided on the mirror as it was: an MR is sent back only on what the repository holds now.
        mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
        fetched = true;
        casRound--; // not a round of the compare-and-swap: nothing was built
        continue;
      }
      if (unusable) return excluded(unusable.ticket, unusable.outcome, gateRuns);

      const candidate = await createCandidateTree(mirror, candidateDir, targetSha!);
      const commits: { mrId: string; commit: string }[] = [];
      let head = targetSha!;
      for (const t of todo) {
        const built = await applyTicket(candidate, rig.mergeStrategy, t, targetSha!, undefined, head);
        if (built.kind === 'conflict') return excluded(t, built, gateRuns);
        commits.push({ mrId: t.mrId, commit: built.sha });
        head = built.sha;
      }
      let candidateSha = commits[commits.length - 1]!.commit;
      // Several MRs under the merge strategy land as one merge commit, as bors does: the target's first-parent
      // history then holds only trees that were gated, as one MR at a time does. Its tree is the chain's.
      if (rig.mergeStrategy === 'merge' && todo.length > 1) {
        candidateSha = await batchMergeCommit(candidate, targetSha!, todo, candidateSha);
        for (const c of commits) c.commit = candidateSha;
      }

      if (rig.gates.length) gateRuns++;
      const gateKey = `gate-${fsSafe(lead.mrId)}-${candidateSha.slice(0, 12)}-a${attempt}r${casRound}`;
      const failed = await gateCandidate(deps, rig, tree, gateKey, lead, todo, candidateSha);
      if (failed) return { kind: 'gates_failed', gateRuns, outcome: failed };
      if (mode === 'verify') return { kind: 'verified', candidateSha, gateRuns };

      heartbeat('pushing');
      // From the mirror, never from the candidate's tree: a gate could have rewritten anything there. A landed push
      // moves the mirror's origin/<target> too, so it needs no fetch afterwards.
      const push = await pushTarget(rig, mirror, [
        `${candidateSha}:refs/heads/${target}`,
        `--force-with-lease=refs/heads/${target}:${targetSha}`,
      ]);
      if (push.ok) {
        log.info('merged', { ...ctx, commit: candidateSha, target, gateRuns });
        const merged = [...landed, ...commits];
        const convoyTold = await tellConvoys(deps, tickets, merged);
        deps.mergedBranches?.merged(rig, tickets);
        return {
          kind: 'merged',
          commit: candidateSha,
          merged,
          gateRuns,
          alreadyMerged: false,
          ...(convoyTold.length ? { convoyTold } : {}),
        };
      }
      const refusal = pushRefusal(push.stderr);
      if (refusal === 'refused') {
        throw ApplicationFailure.nonRetryable(
          `${rig.repo} refused the push of ${target}: ${push.stderr.trim().slice(0, 1000)}`,
          Failure.PushRefused,
        );
      }
      if (refusal === 'failed')
        throw new Error(`pushing ${target} to ${rig.repo} failed: ${push.stderr.trim().slice(0, 1000)}`);
      log.warn('target moved while gating; rebuilding on the new target', { ...ctx, error: push.stderr.trim() });
      await syncMirror(rig.name, rig.repo, deps.gtHome);
      fetched = true;
    }
    throw ApplicationFailure.retryable(
      `target ${target} kept moving during ${MAX_CAS_ROUNDS} merge attempts`,
      Failure.TargetKeptMoving,
    );
  } finally {
    discardAttemptTree(deps, rig.name, tree);
  }
}

/**
 * One merge commit for a batch: the tree of the MRs merged one after another (`chainTip`), the target and every MR's
 * head as parents, each MR's trailer (findMergedCommit finds any of them), and HEAD moved to it so the gates see the
 * commit that may land. The titles are the operator's, kept to one line each so none can add a trailer.
 */
async function batchMergeCommit(dir: Repo, targetSha: string, tickets: Ticket[], chainTip: string): Promise<string> {
  const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();
  const message = [
    `Merge ${tickets.length} merge requests into ${tickets[0]!.targetBranch}`,
    tickets.map((t) => `- ${oneLine(t.title)} (${t.beadId}): ${t.branch}`).join('\n'),
    tickets.map((t) => mergeTrailer(t.mrId, t.headSha)).join('\n'),
  ].join('\n\n');
  const parents = [...new Set([targetSha, ...tickets.map((t) => t.headSha)])].flatMap((p) => ['-p', p]);
  const sha = (await git(dir, ['commit-tree', `${chainTip}^{tree}`, ...parents, '-m', message])).trim();
  await git(dir, ['reset', '-q', '--soft', sha]);
  return sha;
}

/**
 * Runs the rig's gates on the candidate's tree (`own`: the MR the candidate is named after; `tickets`: the MRs it holds
 * beyond the target, in order); the first failure as the outcome sent back, or undefined when every gate passed.
 */
async function gateCandidate(
  deps: MergeDeps,
  rig: RigConfig,
  tree: Pick<AttemptTree, 'dir' | 'ledger'>,
  gateKey: string,
  own: Ticket,
  tickets: Ticket[],
  candidateSha: string,
): Promise<Extract<MergeOutcome, { kind: 'gates_failed' }> | undefined> {
  if (!rig.gates.length) return undefined;
  const target = own.targetBranch;
  const gateResults = await runGates(
    await gateRuntime(deps, rig),
    rig.gates,
    gateKey,
    gateLaunch(deps, rig, tree, gateKey, {
      GT_MR_ID: own.mrId,
      GT_MR_IDS: tickets.map((t) => t.mrId).join(' '),
      GT_BEAD_ID: own.beadId,
      GT_BEAD_IDS: tickets.map((t) => t.beadId).join(' '),
      GT_TARGET_BRANCH: target,
      GT_CANDIDATE_SHA: candidateSha,
    }),
    rig.gateTimeout,
  );
  stopIfCancelled();
  const failed = gateResults.find((g) => !g.ok);
  if (!failed) return undefined;
  const why = failed.timedOut ? `timed out after ${rig.gateTimeout} ms` : `exited with ${failed.exitCode}`;
  const together = tickets.length > 1 ? ` (gated together with ${tickets.map((t) => t.mrId).join(', ')})` : '';
  return {
    kind: 'gates_failed',
    gate: failed.gate,
    logPath: failed.logPath,
    feedback: `Gate \`${failed.gate}\` ${why} on the merge of your branch into ${target}${together}.\nLast output:\n${failed.tail}`,
  };
}

// --- speculative execution -----------------------------------------------------------------------------------

/** Where the target branch is now (after a fetch): the base the refinery builds its speculative chains on. */
async function targetTip(deps: MergeDeps, raw: TargetTipInput): Promise<{ sha: string | null }> {
  const { rig, targetBranch } = parseActivityInput(TargetTipInput, raw);
  const mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
  return { sha: await remoteBranchSha(mirror, targetBranch) };
}

type ChainBuild =
  | { kind: 'built'; commits: { mrId: string; commit: string }[] }
  | { kind: 'conflict'; mrId: string; outcome: MergeOutcome };

/**
 * Merge commits this process has made or is making for speculative chains: "link L merged onto commit P" → its commit
 * (undefined: it conflicted). Chains are deterministic, so the candidates of one window, which share their first
 * k − 1 links, build each link once instead of candidate k merging all k of them (a window of N: N merges, not
 * N(N+1)/2). Another host's candidates build for themselves; a miss only costs the merge.
 */
const builtLinks = new Map<string, Promise<string | undefined>>();
const BUILT_LINKS_KEEP = 2000;
const linkKey = (rig: RigConfig, base: string, parent: string, { ticket, at }: ChainLink) =>
  // A rebased MR's commits depend on its merge base with the chain's base too.
  [
    rig.name,
    rig.mergeStrategy,
    rig.mergeStrategy === 'rebase' ? base : '',
    parent,
    ticket.mrId,
    ticket.headSha,
    at,
  ].join(' ');

/** Builds `base` + the chain's MRs in the candidate tree at `dir`, each commit at its link's fixed time. */
async function buildChain(
  mirror: string,
  dir: string,
  rig: RigConfig,
  base: string,
  chain: ChainLink[],
): Promise<ChainBuild> {
  const commits: { mrId: string; commit: string }[] = [];
  // The links already merged here (or being merged by a sibling candidate): wait for them rather than merge again.
  let parent = base;
  for (const link of chain) {
    const known = await builtLinks.get(linkKey(rig, base, parent, link))?.catch(() => undefined);
    if (!known) break;
    commits.push({ mrId: link.ticket.mrId, commit: known });
    parent = known;
  }
  if (commits.length && (await missingCommits(mirror, [parent])).length) {
    // Pruned since (a `git gc`): build everything again.
    builtLinks.clear();
    commits.length = 0;
    parent = base;
  }
  const tree = await createCandidateTree(mirror, dir, parent);
  for (const link of chain.slice(commits.length)) {
    const key = linkKey(rig, base, parent, link);
    let settle: (commit: string | undefined) => void = () => undefined;
    builtLinks.set(key, new Promise((resolve) => (settle = resolve)));
    if (builtLinks.size > BUILT_LINKS_KEEP) builtLinks.delete(builtLinks.keys().next().value!);
    let built: Built;
    try {
      built = await applyTicket(tree, rig.mergeStrategy, link.ticket, base, link.at, parent);
    } catch (err) {
      builtLinks.delete(key);
      settle(undefined);
      throw err;
    }
    if (built.kind === 'conflict') {
      // Waiting siblings merge it themselves and see the conflict with its paths.
      builtLinks.delete(key);
      settle(undefined);
      return { kind: 'conflict', mrId: link.ticket.mrId, outcome: built };
    }
    settle(built.sha);
    commits.push({ mrId: link.ticket.mrId, commit: built.sha });
    parent = built.sha;
  }
  return { kind: 'built', commits };
}

/**
 * Speculative candidate: builds `base` + the chain (the MRs ahead of this one, then it) and runs the gates on exactly
 * that tree. It never pushes: the refinery lands passing chains in queue order (landChain), so a candidate whose
 * predecessor fails is only ever discarded. No fetch unless the mirror lacks the base or a head.
 */
async function gateSpeculative(deps: MergeDeps, raw: GateSpeculativeInput): Promise<SpeculativeGateResult> {
  const { rig, base, chain, key } = parseActivityInput(GateSpeculativeInput, raw);
  const own = chain[chain.length - 1]!.ticket;
  const { mirror, fetched } = await mirrorWith(rig.name, rig.repo, deps.gtHome, [
    base,
    ...chain.map((l) => l.ticket.headSha),
  ]);
  if (fetched && (await missingCommits(mirror, [base])).length)
    return { kind: 'stale', reason: `base ${base} is not in ${rig.repo}`, gateRuns: 0 };
  // Only its own MR: each MR ahead is checked by its own candidate, and this one is discarded if that one fails.
  // Both looks at once (read-only); the second fails anyway when the first does, so it is judged second.
  const [ownIds, onBase] = await Promise.all([commitIds(mirror, [own.headSha]), isOnTarget(mirror, own, base)]);
  const unusable = headProblem(own, ownIds[0] !== undefined, onBase);
  if (unusable) {
    // Already on the base with its trailer: landed by an earlier attempt whose answer was lost, not "no changes".
    const landed = await findMergedCommit(mirror, base, own.mrId, own.headSha);
    if (landed) return { kind: 'landed', commit: landed, gateRuns: 0 };
    return excluded(own, unusable, 0) as SpeculativeGateResult;
  }
  const tree = await attemptTree(deps, rig.name, key);
  const { attempt, dir } = tree;
  try {
    heartbeat('building speculative candidate');
    const built = await buildChain(mirror, dir, rig, base, chain);
    if (built.kind === 'conflict') return { kind: 'excluded', mrId: built.mrId, outcome: built.outcome, gateRuns: 0 };
    const candidateSha = built.commits[built.commits.length - 1]!.commit;
    const failed = await gateCandidate(
      deps,
      rig,
      tree,
      `gate-${key}-a${attempt}`,
      own,
      chain.map((l) => l.ticket),
      candidateSha,
    );
    const gateRuns = rig.gates.length ? 1 : 0;
    if (failed) return { kind: 'gates_failed', outcome: failed, gateRuns };
    return { kind: 'passed', candidateSha, commits: built.commits, gateRuns };
  } finally {
    discardAttemptTree(deps, rig.name, tree);
  }
}

/**
 * Moves the target to a gated chain's last commit by compare-and-swap on `base`: the refinery calls it in queue
 * order, for chains whose gates passed, so the target only ever holds trees that passed. A host that did not gate
 * the chain builds it again (same MRs, same times: same commits) and lands it only if it is the very commit gated.
 */
async function landChain(deps: MergeDeps, raw: LandChainInput): Promise<LandResult> {
  const { rig, base, chain, candidateSha } = parseActivityInput(LandChainInput, raw);
  const target = chain[0]!.ticket.targetBranch;
  const tickets = chain.map((l) => l.ticket);
  const sweepBranches = () => deps.mergedBranches?.merged(rig, tickets);
  const { mirror } = await mirrorWith(rig.name, rig.repo, deps.gtHome, [base]);
  if ((await missingCommits(mirror, [candidateSha])).length) {
    const tree = await attemptTree(deps, rig.name, `land-${candidateSha.slice(0, 12)}`);
    try {
      const built = await buildChain(mirror, tree.dir, rig, base, chain);
      const sha = built.kind === 'built' ? built.commits[built.commits.length - 1]!.commit : undefined;
      if (sha !== candidateSha)
        return {
          kind: 'stale',
          reason: `the chain built here is ${sha ?? 'a conflict'}, not the gated ${candidateSha}`,
        };
    } finally {
      discardAttemptTree(deps, rig.name, tree);
    }
  }
  if (!(await gitStatus(mirror, ['merge-base', '--is-ancestor', base, candidateSha])).ok)
    return { kind: 'stale', reason: `${candidateSha} does not build on ${base}` };
  heartbeat('pushing');
  const push = await pushTarget(rig, mirror, [
    `${candidateSha}:refs/heads/${target}`,
    `--force-with-lease=refs/heads/${target}:${base}`,
  ]);
  if (push.ok) {
    log.info('merged speculative chain', { mrIds: chain.map((l) => l.ticket.mrId), commit: candidateSha, target });
    sweepBranches();
    return { kind: 'merged', commit: candidateSha, alreadyMerged: false };
  }
  const refusal = pushRefusal(push.stderr);
  if (refusal === 'refused')
    throw ApplicationFailure.nonRetryable(
      `${rig.repo} refused the push of ${target}: ${push.stderr.trim().slice(0, 1000)}`,
      Failure.PushRefused,
    );
  if (refusal === 'failed')
    throw new Error(`pushing ${target} to ${rig.repo} failed: ${push.stderr.trim().slice(0, 1000)}`);
  // Lost the lease: an earlier attempt of this landing may have pushed (its answer lost), or someone else moved it.
  await syncMirror(rig.name, rig.repo, deps.gtHome);
  const now = await remoteBranchSha(mirror, target);
  if (now && (await gitStatus(mirror, ['merge-base', '--is-ancestor', candidateSha, now])).ok) {
    sweepBranches();
    return { kind: 'merged', commit: candidateSha, alreadyMerged: true };
  }
  return { kind: 'stale', reason: `target ${target} moved to ${now ?? '(deleted)'} while the chain was gated` };
}

/**
 * The rig's target pushed from the mirror, under the mirror's lock: a push that lands also moves the mirror's
 * origin/<target>, and a fetch running beside it would fail to lock that ref. Ref locks a killed git left in a local
 * repository are removed and the push tried again (clearingStaleRefLocks).
 */
function pushTarget(rig: RigConfig, mirror: string, refspecs: string[]) {
  return clearingStaleRefLocks(rig.repo, () =>
    withLock(mirror, () => gitStatus(mirror, ['push', 'origin', ...refspecs])),
  );
}

/**
 * Why a compare-and-swap push failed: the target moved (lost the lease: build again on the new target), the
 * repository refused it (a hook, a protected branch, a checked-out branch, permissions: building again cannot help,
 * so the merge fails with git's reason), or anything else (the network: the activity is retried).
 */
export function pushRefusal(stderr: string): 'moved' | 'refused' | 'failed' {
  if (/\((stale info|fetch first|non-fast-forward)\)/.test(stderr)) return 'moved';
  // A ref's lock held by another push, or left by a killed one (removed once stale: pushTarget): the repository's
  // state, not its refusal of this change, so the push is retried rather than the merge request sent back.
  if (/cannot lock ref/.test(stderr) || heldLocks(stderr).length) return 'failed';
  if (/\[remote rejected\]|refusing to update|declined|denied|protected branch|permission/i.test(stderr))
    return 'refused';
  return 'failed';
}

/**
 * Convoy beads' merges told to their convoys as soon as the push landed, rather than once the refinery's workflow task
 * has taken this activity's result: starting the dependents is the next step of every chain (docs/performance.md).
 * Best effort: a convoy not told here is told by the refinery, as before, and a convoy takes a repeat as a no-op.
 * Answers the merge requests whose convoy heard it.
 */
async function tellConvoys(
  deps: MergeDeps,
  tickets: Ticket[],
  merged: { mrId: string; commit: string }[],
): Promise<string[]> {
  const { reportMerge } = deps;
  if (!reportMerge) return [];
  const refinery = activityInfo().workflowExecution?.workflowId;
  const told = await Promise.all(
    tickets.map(async (t) => {
      const commit = merged.find((m) => m.mrId === t.mrId)?.commit;
      if (!t.convoyId || !t.convoyBead || !commit) return undefined;
      try {
        return (await reportMerge(t.convoyId, mergeReport(t, commit, refinery))) ? t.mrId : undefined;
      } catch (err) {
        log.warn('could not tell the convoy of the merge; the refinery will', { mrId: t.mrId, error: String(err) });
        return undefined;
      }
    }),
  );
  return told.filter((mrId): mrId is string => mrId !== undefined);
}

const excluded = (t: Ticket, outcome: MergeOutcome, gateRuns: number): CandidateResult => ({
  kind: 'excluded',
  mrId: t.mrId,
  outcome,
  gateRuns,
});

/**
 * What one round of a merge reads of the mirror, all side by side (every merge's critical path): the target's tip and
 * which heads the mirror holds (one `cat-file`, or what mirrorWith has just read: `read`), each head's earlier landing
 * on the target (merges only) and whether the target already holds it. The target is read as a ref by each look, so a
 * fetch landing meanwhile can only make one of them newer: each is still true of the repository.
 */
async function lookAtMirror(
  mirror: string,
  target: string,
  tickets: Ticket[],
  mode: 'merge' | 'verify',
  read?: string[],
): Promise<{ targetSha: string | undefined; earlier: (string | null)[]; problems: (MergeOutcome | undefined)[] }> {
  const targetRef = `refs/remotes/origin/${target}`;
  const [ids, earlier, onTarget] = await Promise.all([
    read ?? commitIds(mirror, [targetRef, ...tickets.map((t) => t.headSha)]),
    Promise.all(
      tickets.map((t) =>
        mode === 'merge' ? findMergedCommit(mirror, targetRef, t.mrId, t.headSha) : Promise.resolve(null),
      ),
    ),
    Promise.all(tickets.map((t) => isOnTarget(mirror, t, targetRef))),
  ]);
  return {
    targetSha: ids[0],
    earlier,
    problems: tickets.map((t, i) => headProblem(t, ids[i + 1] !== undefined, onTarget[i]!)),
  };
}

const isOnTarget = (mirror: string, t: Ticket, target: string) =>
  gitStatus(mirror, ['merge-base', '--is-ancestor', t.headSha, target]).then((r) => r.ok);

/** Why an MR's head cannot be merged at all, if it cannot: not in the repository, or nothing the target lacks. */
function headProblem(t: Ticket, hasHead: boolean, onTarget: boolean): MergeOutcome | undefined {
  if (!hasHead)
    return {
      kind: 'rejected',
      feedback: `commit ${t.headSha} of ${t.branch} is not in the repository (was the branch pushed?)`,
    };
  if (onTarget)
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
    throw ApplicationFailure.retryable('merge interrupted: the worker is shutting down', Failure.WorkerShutdown);
  throw new CancelledFailure('merge section cancelled');
}

type Built = { kind: 'built'; sha: string } | Extract<MergeOutcome, { kind: 'conflict' }>;

/**
 * Put before the commands that write a candidate's commits (merge, commit, cherry-pick): git runs no automatic
 * maintenance after them (`git maintenance run --auto`, a process of its own after each, on the mirror's object store,
 * which the candidate's tree shares). The candidate is thrown away; every import's fetch into the mirror still runs it.
 */
const NO_AUTO_MAINTENANCE = ['-c', 'maintenance.auto=false'];

/** Applies one MR on top of the candidate's HEAD; a conflict is aborted, leaving nothing half-merged. */
async function applyTicket(
  dir: Repo,
  strategy: RigConfig['mergeStrategy'],
  ticket: Ticket,
  targetSha: string,
  /** Unix seconds every commit made here carries (speculative chains: the same chain builds the same commits). */
  at?: number,
  /** HEAD of the tree when the caller knows it (one git process fewer per MR). */
  head?: string,
): Promise<Built> {
  const opts = at === undefined ? {} : { env: { GIT_AUTHOR_DATE: `@${at} +0000`, GIT_COMMITTER_DATE: `@${at} +0000` } };
  // The commands that write the candidate's commits: as the status, or throwing on failure.
  const write = (args: string[]) => gitStatus(dir, [...NO_AUTO_MAINTENANCE, ...args], opts);
  const mustWrite = (args: string[]) => git(dir, [...NO_AUTO_MAINTENANCE, ...args], opts);
  const before = head ?? (await git(dir, ['rev-parse', 'HEAD'])).trim();
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
    if (!(await write(['merge', '--no-ff', '-m', message, ticket.headSha])).ok) return conflict();
  } else if (!replay) {
    if (!(await write(['merge', '--squash', ticket.headSha])).ok) return conflict();
    await mustWrite(['commit', '--allow-empty', '-m', message]);
  } else {
    const commits = (await git(dir, ['rev-list', '--reverse', '--no-merges', `${base}..${ticket.headSha}`]))
      .split('\n')
      .filter(Boolean);
    for (const c of commits) {
      if (!(await write(['cherry-pick', '--allow-empty', '--keep-redundant-commits', c])).ok) return conflict();
    }
    const last = (await git(dir, ['log', '-1', '--format=%B'])).trim();
    await mustWrite([
      'commit',
      '--amend',
      '--allow-empty',
      '-m',
      `${last}\n\n${mergeTrailer(ticket.mrId, ticket.headSha)}`,
    ]);
  }
  return { kind: 'built', sha: await detachedHead(dir) };
}

/**
 * The commit a candidate's detached HEAD names, read from the file git just wrote in the tree's git dir (in the
 * mirror, which no gate can write): a git process fewer in every merge section. `rev-parse` when it is not a commit id.
 */
async function detachedHead(dir: Repo): Promise<string> {
  const head = readFileSync(join(dir.gitDir, 'HEAD'), 'utf8').trim();
  return /^[0-9a-f]{40}$/.test(head) ? head : (await git(dir, ['rev-parse', 'HEAD'])).trim();
}

/** A gate's launch: the candidate's tree, the mirror its `.git` points into (read-only), allow-listed env, rig limits. */
export function gateLaunch(
  deps: MergeDeps,
  rig: RigConfig,
  tree: Pick<AttemptTree, 'dir' | 'ledger'>,
  key: string,
  gt: Record<string, string>,
): GateLaunch {
  const agentDir = paths.agentDir(key, deps.gtHome);
  return {
    beadId: gt.GT_BEAD_ID!,
    cwd: tree.dir,
    ledger: tree.ledger,
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
