/**
 * mr:<beadId>:<round> — one finished branch: (review) → its turn in the refinery → for the PR strategy, the pull
 * request's life → the outcome back to the bead (`merged`, or rework with feedback, or `pr_closed`). Without a review
 * the bead hands the ticket to the refinery itself as it starts this workflow (input `queued`), which then only waits.
 *
 * The refinery answers by signal, matched on MR id *and* head sha, so a late answer about another head can never
 * be taken for this one. Reviewer verdicts are addressed to a reviewer run id and accepted only from the current
 * reviewer run. A pull request is followed here with durable timers, never in the refinery, so a PR waiting on a
 * human holds nothing but this workflow (failure class 5).
 *
 * Review and pull-request following use the rig's current configuration (read from its refinery, the one holder of
 * it, when review is decided and before every look at the pull request), not the snapshot the bead was slung with:
 * a reviewer added, removed or changed by `gt rig update`, or a new poll interval or auto-merge setting, applies to
 * merge requests already open. Histories from before 'merge-request-follows-rig' keep their snapshot.
 *
 * This module is the process; its state is in workflows/merge-request-state.ts, the review in workflows/review.ts
 * (reviewer runs over workflows/agent-run.ts, as the bead's polecats), the pull request's life in pull-request.ts.
 */
import { CancellationScope, condition, isCancellation } from '@temporalio/workflow';
import type { MergeOutcome } from '../domain/outcomes';
import { parseOrReject } from '../domain/validation';
import {
  enqueueLocally,
  MergeRequest,
  MergeRequestInput,
  mergeTicket,
  town,
  withdrawTicket,
} from './merge-request-state';
import { type PatchBaseline, patchesFrom } from './patches';
import { followPullRequest } from './pull-request';
import { Review } from './review';

export { MergeRequestInput } from './merge-request-state';

/** patched() id: review and pull-request following read the rig's current configuration. */
const FOLLOWS_RIG = 'merge-request-follows-rig';
/** patched() id: the ticket goes to the refinery from a local activity, in the workflow task that queues the MR. */
const ENQUEUES_LOCALLY = 'merge-request-enqueues-locally';
/** patched() id: without a review, the rig read and the hand-off to the refinery are one local activity. */
const QUEUES_IN_ONE_STEP = 'merge-request-queues-in-one-step';
/**
 * patched() id: a merge request cancelled mid-review ends once its reviewer's agent is stopped, and makes sure none is
 * left on the reviewer's host (a start that ended after the cancel, a supervision cancelled before it began).
 */
const CANCEL_STOPS_REVIEWER = 'merge-request-cancel-stops-reviewer';
/**
 * Every change a merge request's code was patched for up to 2026-12: one marker for them all in a merge request
 * started since (workflows/patches.ts). Its list never changes; a later change gets an id of its own.
 */
const BASELINE: PatchBaseline = {
  id: 'merge-request-baseline-2026-12',
  covers: [FOLLOWS_RIG, ENQUEUES_LOCALLY, QUEUES_IN_ONE_STEP],
};
/** How long a merge request waits for the refinery's answer before announcing itself again. */
const REANNOUNCE_MS = 15 * 60_000;
/**
 * The first such wait of a merge request whose bead handed its ticket over: an answer the refinery gave before the
 * merge request had started found nobody (a start slower than the merge), and waits in the refinery for the ticket
 * to come again. Rare (a merge takes longer than a child's start), so a short wait costs an announcement seldom.
 */
const FIRST_ANNOUNCE_MS = 30_000;

export async function mergeRequestWorkflow(rawInput: MergeRequestInput): Promise<MergeOutcome> {
  const input = parseOrReject(MergeRequestInput, rawInput, 'merge request input');
  const patches = patchesFrom(BASELINE);
  const followsRig = patches.has(FOLLOWS_RIG);
  const mr = new MergeRequest(input);
  mr.handleMessages();
  const review = new Review(mr);
  review.handleMessages();

  const finish = (outcome: MergeOutcome): MergeOutcome => {
    mr.state.outcome = outcome;
    mr.setPhase('done', `outcome: ${outcome.kind}`);
    return outcome;
  };

  let following = input.following;
  if (!following) {
    let ticket = mergeTicket(input);
    // The rig read and the hand-off in one local activity when there is no review: one workflow task's worth less
    // between `gt done` and the merge (docs/performance.md). Histories from before read, then enqueue.
    const oneStep = followsRig && patches.has(QUEUES_IN_ONE_STEP);
    // Handed over by the bead, in the workflow task that started this one: off the path between `gt done` and the
    // merge altogether (docs/performance.md). Only a bead that did says so; the input is all the branch needs.
    const queued = input.queued ?? (oneStep && (await mr.queueUnlessReviewed(ticket)));
    if (!queued) {
      if (followsRig && !oneStep) await mr.readRig();
      if (mr.rig.reviewer) {
        const reviewed = await review.run().catch(async (err: unknown) => {
          if (isCancellation(err) && patches.has(CANCEL_STOPS_REVIEWER))
            await CancellationScope.nonCancellable(() => review.stopRuns());
          throw err;
        });
        if (reviewed.kind === 'sent_back') return finish(reviewed.outcome);
      }
      ticket = mergeTicket(input);
    }
    const { rig } = mr;
    mr.setPhase(
      'queued',
      `waiting for the refinery of ${rig.name} to take ${input.branch} @ ${input.headSha.slice(0, 10)}`,
    );
    // A marker instead of an activity task and the workflow task that takes its result: one hand-off less between
    // `gt done` and the merge (docs/performance.md). Histories from before schedule the activity.
    const enqueue = () =>
      patches.has(ENQUEUES_LOCALLY)
        ? enqueueLocally.enqueueMergeRequest({ rig, ticket })
        : town.enqueueMergeRequest({ rig, ticket });
    if (!queued) await enqueue();
    try {
      // Should the refinery have been lost (terminated or reset by an operator), announce again; it ignores repeats.
      // The refinery may have answered a ticket the bead handed over before this workflow existed: it keeps such an
      // answer and gives it again to the ticket announced again, which a merge request so queued does soon.
      let wait = input.queued ? FIRST_ANNOUNCE_MS : REANNOUNCE_MS;
      while (!(await condition(() => mr.result !== undefined, wait))) {
        await enqueue();
        wait = REANNOUNCE_MS;
      }
    } catch (err) {
      // Cancelled (its bead was): take the ticket back so work nobody wants any more is not merged.
      if (isCancellation(err)) await withdrawTicket(rig.name, input.mrId, input.headSha);
      throw err;
    }
    const outcome = mr.result!.outcome;
    if (outcome.kind !== 'pr_opened') return finish(outcome);
    following = { pr: outcome.pr, looks: 0, failedLooks: 0, escalated: false };
    mr.setPhase(
      'pull_request',
      `pull request #${outcome.pr.number} ${outcome.pr.url} ${outcome.pr.created ? 'opened' : 'found'}`,
    );
  }
  return finish(await followPullRequest(mr, following, followsRig));
}
