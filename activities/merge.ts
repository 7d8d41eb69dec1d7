/**
 * The refinery's merge section, by the bors rule: build the candidate on top of the current target, run the
 * gates on exactly that tree, then move the target to exactly that commit by compare-and-swap. If the target
 * moved meanwhile, start over on the new target. A retry finds an earlier success through the merge trailer.
 */
import { existsSync } from 'node:fs';
import { activityInfo, heartbeat, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { MergeOutcome } from '../domain/bead';
import { MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { parseActivityInput } from './validation';
import { findMergedCommit, git, gitStatus, mergeTrailer, remoteBranchSha, removeWorktree, resetWorktree, syncMirror } from './git';
import { runGates } from './gates';
import { paths } from '../host/home';
import { z } from 'zod';

const MAX_CAS_ROUNDS = 5;

export const MergeCandidateInput = z.object({ rig: RigConfig, ticket: MergeTicket });
export type MergeCandidateInput = z.input<typeof MergeCandidateInput>;

export async function mergeCandidate(raw: MergeCandidateInput): Promise<MergeOutcome> {
  const { rig, ticket } = parseActivityInput(MergeCandidateInput, raw);
  const target = ticket.targetBranch;
  const mirror = await syncMirror(rig.name, rig.repo);
  const candidateDir = paths.candidate(rig.name, ticket.mrId);
  const ctx = { mrId: ticket.mrId, beadId: ticket.beadId, headSha: ticket.headSha, attempt: activityInfo().attempt };

  try {
    for (let casRound = 1; casRound <= MAX_CAS_ROUNDS; casRound++) {
      heartbeat(`building candidate (round ${casRound})`);
      const already = await findMergedCommit(mirror, target, ticket.mrId, ticket.headSha);
      if (already) {
        log.info('merge request already merged; reporting the earlier merge', { ...ctx, commit: already });
        return { kind: 'merged', commit: already, targetBranch: target };
      }
      const targetSha = await remoteBranchSha(mirror, target);
      if (!targetSha) return { kind: 'rejected', feedback: `target branch '${target}' does not exist in ${rig.repo}` };
      const hasHead = (await gitStatus(mirror, ['cat-file', '-e', `${ticket.headSha}^{commit}`])).ok;
      if (!hasHead) return { kind: 'rejected', feedback: `commit ${ticket.headSha} of ${ticket.branch} is not in the repository (was the branch pushed?)` };
      const isAncestor = (await gitStatus(mirror, ['merge-base', '--is-ancestor', ticket.headSha, targetSha])).ok;
      if (isAncestor) return { kind: 'rejected', feedback: `branch ${ticket.branch} has no changes that are not already on ${target}` };

      await resetWorktree(mirror, candidateDir, `gt-candidate/${ticket.beadId}`, targetSha);
      const built = await buildCandidate(candidateDir, rig.mergeStrategy, ticket, targetSha);
      if (built.kind === 'conflict') return built;
      const candidateSha = built.sha;

      const gateResults = await runGates(rig.gates, candidateDir, paths.gateLogs(rig.name, `${ticket.mrId}-${ticket.headSha.slice(0, 12)}`), rig.gateTimeout, {
        GT_MR_ID: ticket.mrId,
        GT_BEAD_ID: ticket.beadId,
        GT_TARGET_BRANCH: target,
        GT_CANDIDATE_SHA: candidateSha,
      });
      const failed = gateResults.find((g) => !g.ok);
      if (failed) {
        const why = failed.timedOut ? `timed out after ${rig.gateTimeout} ms` : `exited with ${failed.exitCode}`;
        return {
          kind: 'gates_failed',
          gate: failed.gate,
          logPath: failed.logPath,
          feedback: `Gate \`${failed.gate}\` ${why} on the merge of your branch into ${target}.\nLast output:\n${failed.tail}`,
        };
      }

      heartbeat('pushing');
      const push = await gitStatus(candidateDir, ['push', 'origin', `${candidateSha}:refs/heads/${target}`, `--force-with-lease=refs/heads/${target}:${targetSha}`]);
      await syncMirror(rig.name, rig.repo);
      if (!push.ok) log.warn('target moved while gating; rebuilding on the new target', { ...ctx, error: push.stderr.trim() });
      if (push.ok) {
        log.info('merged', { ...ctx, commit: candidateSha, target });
        return { kind: 'merged', commit: candidateSha, targetBranch: target };
      }
    }
    throw ApplicationFailure.retryable(`target ${target} kept moving during ${MAX_CAS_ROUNDS} merge attempts`, 'TargetKeptMoving');
  } finally {
    if (existsSync(candidateDir)) await removeWorktree(mirror, candidateDir);
  }
}

type Built = { kind: 'built'; sha: string } | Extract<MergeOutcome, { kind: 'conflict' }>;

async function buildCandidate(dir: string, strategy: RigConfig['mergeStrategy'], ticket: MergeTicket, targetSha: string): Promise<Built> {
  const g = git(dir);
  const message = `${ticket.title} (${ticket.beadId})\n\nMerge ${ticket.branch} into ${ticket.targetBranch}.\n\n${mergeTrailer(ticket.mrId, ticket.headSha)}`;
  const conflict = async (abort: string[]): Promise<Built> => {
    const paths = (await g.raw(['diff', '--name-only', '--diff-filter=U'])).split('\n').filter(Boolean);
    await g.raw(abort).catch(() => undefined);
    return {
      kind: 'conflict',
      paths,
      feedback: `Your branch conflicts with ${ticket.targetBranch} in: ${paths.join(', ') || '(unknown paths)'}.\nMerge origin/${ticket.targetBranch} into your branch, resolve the conflicts, commit, and call gt done again.`,
    };
  };
  if (strategy === 'merge') {
    const { ok } = await gitStatus(dir, ['merge', '--no-ff', '-m', message, ticket.headSha]);
    if (!ok) return conflict(['merge', '--abort']);
  } else if (strategy === 'squash') {
    const { ok } = await gitStatus(dir, ['merge', '--squash', ticket.headSha]);
    if (!ok) return conflict(['reset', '--hard', targetSha]);
    await g.raw(['commit', '-m', message]);
  } else {
    const commits = (await g.raw(['rev-list', '--reverse', '--no-merges', `${targetSha}..${ticket.headSha}`])).split('\n').filter(Boolean);
    for (const c of commits) {
      const { ok } = await gitStatus(dir, ['cherry-pick', '--allow-empty', c]);
      if (!ok) return conflict(['cherry-pick', '--abort']);
    }
    const last = (await g.raw(['log', '-1', '--format=%B'])).trim();
    await g.raw(['commit', '--amend', '-m', `${last}\n\n${mergeTrailer(ticket.mrId, ticket.headSha)}`]);
  }
  return { kind: 'built', sha: (await g.revparse(['HEAD'])).trim() };
}
