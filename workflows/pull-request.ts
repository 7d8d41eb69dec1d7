/**
 * The pull-request strategy's last phase: after the refinery opened (or found) the pull request, the merge request
 * looks at it on a durable timer until a human (or auto-merge) decides — merged, closed, or sent back for rework.
 * Nothing but this workflow waits on the PR (failure class 5); a long wait continues as new, carrying its looks.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  proxyActivities,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { TownQueueActivities } from '../activities';
import { escalationIdPart } from '../domain/escalation';
import { assessPullRequest, ForgeSettings } from '../domain/forge';
import type { MergeOutcome } from '../domain/outcomes';
import { type FollowingState, type MergeRequest, type MergeRequestInput, town } from './merge-request-state';
import { RETRY } from '../domain/failures';

/** Failed looks at a pull request in a row before a human hears about it (the MR keeps looking). */
const LOOKS_BEFORE_ESCALATION = 5;

/** The PR strategy after the refinery opened (or found) the pull request: look at it on a durable timer until it decides. */
export async function followPullRequest(
  mr: MergeRequest,
  following: FollowingState,
  followsRig: boolean,
): Promise<MergeOutcome> {
  const { input, state } = mr;
  const { bead } = input;
  const forgeOf = () => {
    const settings = mr.rig.forge ?? ForgeSettings.parse({});
    const activities = proxyActivities<TownQueueActivities>({
      startToCloseTimeout: 6 * settings.requestTimeout + 60_000,
      retry: RETRY.pullRequest,
    });
    return { forgeSettings: settings, forge: activities };
  };
  let { forgeSettings, forge } = forgeOf();
  const f = following;
  const { pr } = f;
  for (;;) {
    state.pullRequest = {
      number: pr.number,
      url: pr.url,
      looks: f.looks,
      lastVerdict: state.pullRequest?.lastVerdict,
    };
    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      return continueAsNew<(input: MergeRequestInput) => Promise<MergeOutcome>>({
        ...input,
        ...(followsRig ? { rig: mr.rig } : {}),
        following: f,
      });
    }
    if (followsRig) {
      await mr.readRig();
      ({ forgeSettings, forge } = forgeOf());
    }
    let wait = forgeSettings.pollInterval;
    try {
      const snapshot = await forge.pullRequestSnapshot({ rig: mr.rig, number: pr.number });
      f.looks++;
      f.failedLooks = 0;
      const verdict = assessPullRequest(snapshot, input.headSha);
      state.pullRequest = {
        number: pr.number,
        url: pr.url,
        looks: f.looks,
        lastVerdict: verdict.kind === 'waiting' ? verdict.reason : verdict.kind,
      };
      if (verdict.kind === 'merged')
        return { kind: 'merged', commit: verdict.commit, targetBranch: input.targetBranch, prUrl: pr.url };
      if (verdict.kind === 'closed')
        return {
          kind: 'pr_closed',
          prUrl: pr.url,
          feedback: `Pull request #${pr.number} (${pr.url}) was closed without merging.`,
        };
      if (verdict.kind === 'rework') return verdict.outcome;
      if (verdict.kind === 'ready' && forgeSettings.autoMerge) {
        f.readySince ??= Date.now();
        const remaining = f.readySince + forgeSettings.autoMergeDelay - Date.now();
        if (remaining <= 0) {
          mr.setPhase('pull_request', `auto-merging pull request #${pr.number}`);
          const merged = await forge.mergePullRequest({
            rig: mr.rig,
            number: pr.number,
            headSha: input.headSha,
            title: `${bead.title} (${bead.id})`,
          });
          if (merged.merged)
            return { kind: 'merged', commit: merged.commit, targetBranch: input.targetBranch, prUrl: pr.url };
          log.info('auto-merge declined; looking again later', { mrId: input.mrId, reason: merged.reason });
          f.readySince = undefined;
        } else {
          wait = Math.min(wait, remaining);
        }
      } else {
        f.readySince = undefined;
      }
      mr.setPhase('pull_request', `pull request #${pr.number} ${pr.url}: ${state.pullRequest.lastVerdict}`);
    } catch (err) {
      f.failedLooks++;
      log.warn('could not look at the pull request', {
        mrId: input.mrId,
        number: pr.number,
        failedLooks: f.failedLooks,
        error: String((err as Error).message ?? err),
      });
      mr.setPhase(
        'pull_request',
        `pull request #${pr.number}: GitHub did not answer (${f.failedLooks} looks in a row)`,
      );
      if (f.failedLooks >= LOOKS_BEFORE_ESCALATION && !f.escalated) {
        f.escalated = true;
        await town.raiseEscalation({
          id: `mr-${escalationIdPart(input.mrId)}-forge`,
          severity: 'medium',
          source: 'merge-request',
          reason: `${input.mrId} cannot read pull request #${pr.number} (${pr.url}): ${String((err as Error).message ?? err).slice(0, 1000)}`,
          rig: mr.rig.name,
          beadId: bead.id,
          convoyId: input.convoyId,
        });
      }
    }
    await sleep(wait);
  }
}
