/**
 * The merge request's review: reviewer runs (workflows/agent-run.ts: start, supervision, stall, exit grace, backoff)
 * until one gives its verdict. Verdicts are addressed to a reviewer run id and accepted only from the live reviewer
 * run; when no run gives one within the rig's attempts, a human hears about it and the work goes back for a round.
 */
import { ApplicationFailure, log, workflowInfo } from '@temporalio/workflow';
import type { z } from 'zod';
import { type AgentReply, ProgressRequest, ReviewVerdict } from '../domain/bead';
import { CAPS, capText } from '../domain/caps';
import { escalationIdPart } from '../domain/escalation';
import { reviewRunIdOf } from '../domain/ids';
import { progressUpdate, reviewVerdictUpdate } from '../domain/messages';
import type { MergeOutcome } from '../domain/outcomes';
import type { MergeRequestState } from '../domain/refinery';
import { setValidatedUpdate } from './handlers';
import { AgentRun, AgentRuns, hostActivities, runAttempts } from './agent-run';
import { type MergeRequest, town } from './merge-request-state';
import { Failure } from '../domain/failures';

export type ReviewResult = { kind: 'approved' } | { kind: 'sent_back'; outcome: MergeOutcome };

/** A reviewer run: its verdict, once given. */
class ReviewerRun extends AgentRun {
  verdict?: z.output<typeof ReviewVerdict>;

  override ending() {
    return this.verdict ? ('done' as const) : undefined;
  }
}

/** A failure as a reviewer run's record shows it. */
const describe = (err: unknown) => capText(String((err as Error).message ?? err), CAPS.failure);

export class Review {
  /** The reviewer runs: the only runs that may speak to this MR. */
  private readonly runs: AgentRuns<ReviewerRun>;

  constructor(private readonly mr: MergeRequest) {
    const { input, state } = mr;
    this.runs = new AgentRuns<ReviewerRun>(
      (runId, current) =>
        `run ${runId} is not the current reviewer of ${input.mrId}: ${current ? `the current reviewer run is ${current.runId}` : `no review is running (merge request is ${state.phase})`}`,
      (e) =>
        town.raiseEscalation({
          ...e,
          rig: mr.rig.name,
          beadId: input.bead.id,
          convoyId: input.convoyId,
        }),
    );
  }

  /**
   * After the merge request's cancel, mid-review: waits for the reviewer's supervision to stop its agent, then makes
   * sure no reviewer agent is left on its host (one whose start ended after the cancel, one whose supervision the
   * server cancelled before it began), and records it as cancelled. Run in a non-cancellable scope.
   */
  async stopRuns(): Promise<void> {
    const live = [...this.runs.all];
    await Promise.all(live.flatMap((r) => (r.supervision ? [r.supervision] : [])));
    await Promise.all(live.map((r) => r.stopLeftover()));
    for (const record of this.mr.state.reviewRuns) if (record.outcome === 'running') record.outcome = 'cancelled';
  }

  /** The reviewer's messages: its verdict, its progress, its escalations. Set before the workflow's first await. */
  handleMessages(): void {
    const { runs } = this;
    const { input } = this.mr;
    setValidatedUpdate(reviewVerdictUpdate, {
      schema: ReviewVerdict,
      what: 'gt_review',
      handler: (verdict): AgentReply => {
        const run = runs.require(verdict.runId);
        run.verdict = verdict;
        run.lastProgressAt = Date.now();
        const next =
          verdict.verdict === 'approve'
            ? 'the merge request goes to the refinery'
            : 'the bead goes back to a polecat with your feedback';
        return {
          accepted: true,
          runId: verdict.runId,
          message: `${input.mrId}: ${verdict.verdict === 'approve' ? 'approved' : 'changes requested'}; ${next}`,
        };
      },
      check: (verdict) => {
        const run = runs.require(verdict.runId);
        if (run.verdict)
          throw ApplicationFailure.nonRetryable(
            `run ${verdict.runId} already gave its verdict (${run.verdict.verdict})`,
            Failure.VerdictRecorded,
          );
      },
    });
    setValidatedUpdate(progressUpdate, {
      schema: ProgressRequest,
      what: 'gt_progress',
      handler: (req): AgentReply => {
        runs.require(req.runId).lastProgressAt = Date.now();
        return { accepted: true, runId: req.runId, message: 'progress recorded' };
      },
      check: (req) => void runs.require(req.runId),
    });
    runs.handleEscalations({ mrId: input.mrId });
  }

  /** Review with bounded attempts; when no reviewer run gives a verdict, a human hears about it and the bead goes back. */
  async run(): Promise<ReviewResult> {
    const { mr } = this;
    const { input } = mr;
    const result = await runAttempts<ReviewResult>({
      maxAttempts: mr.rig.policy.maxAttempts,
      retryBackoff: mr.rig.policy.retryBackoff,
      from: { nextRun: 1, failures: [], lastFailed: false },
      attempt: (attempt) => this.attempt(attempt),
      backingOff: (failed, backoff) =>
        mr.setPhase('review', `review attempt ${failed} failed; next attempt in ${backoff} ms`),
    });
    if (!('failures' in result)) return result;
    const reason = capText(
      `no reviewer run of ${input.mrId} gave a verdict:\n- ${result.failures.join('\n- ')}`,
      CAPS.feedback,
    );
    await town.raiseEscalation({
      id: `mr-${escalationIdPart(input.mrId)}-review`,
      severity: 'high',
      source: 'merge-request',
      reason,
      rig: mr.rig.name,
      beadId: input.bead.id,
      convoyId: input.convoyId,
    });
    return {
      kind: 'sent_back',
      outcome: {
        kind: 'rejected',
        feedback: `The review could not be completed (${reason}). The work goes back for another round.`,
      },
    };
  }

  /** One reviewer attempt: a run from dispatch to verdict / exit / stall, on the host that claimed it. */
  private async attempt(attempt: number): Promise<ReviewResult | { failure: string }> {
    const { mr } = this;
    const { input, rig } = mr;
    const { bead } = input;
    const runId = reviewRunIdOf(bead.id, input.round, attempt);
    const { hostQueue } = await town.claimHost();
    const activities = hostActivities(hostQueue, rig.policy, runId);
    const prepared = await activities.onHost.prepareReviewRun({
      rig,
      bead,
      mrId: input.mrId,
      runId,
      round: input.round,
      attempt,
      branch: input.branch,
      headSha: input.headSha,
      targetBranch: input.targetBranch,
    });
    const record: MergeRequestState['reviewRuns'][number] = { runId, outcome: 'running' };
    mr.state.reviewRuns.push(record);
    const run = new ReviewerRun(runId);
    const driven = await run.drive({
      runs: this.runs,
      activities,
      launch: {
        runId,
        beadId: bead.id,
        workflowId: workflowInfo().workflowId,
        role: 'reviewer',
        rig,
        worktree: prepared.worktree,
        promptFile: prepared.promptFile,
        branch: input.branch,
        targetBranch: input.targetBranch,
      },
      stallTimeout: rig.policy.stallTimeout,
      starting: () => mr.setPhase('review', `starting reviewer run ${runId} on ${prepared.host}`, runId),
      started: () => mr.setPhase('review', `waiting for the verdict of reviewer run ${runId}`, runId),
    });
    if ('startFailed' in driven) {
      record.outcome = 'lost';
      return { failure: `${runId} could not be started: ${describe(driven.startFailed)}` };
    }
    await activities.onHost
      .finishReviewRun({ rig, runId })
      .catch((err: unknown) => log.warn('could not remove review worktree', { runId, error: String(err) }));

    if (run.verdict?.verdict === 'approve') {
      record.outcome = 'approved';
      return { kind: 'approved' };
    }
    if (run.verdict?.verdict === 'request_changes') {
      record.outcome = 'changes_requested';
      record.feedback = run.verdict.feedback;
      return {
        kind: 'sent_back',
        outcome: {
          kind: 'changes_requested',
          feedback: `Reviewer (${runId}) requested changes:\n${run.verdict.feedback}`,
        },
      };
    }
    const { end } = driven;
    record.outcome = end === 'stalled' ? 'stalled' : end === 'lost' ? 'lost' : 'exited';
    const why =
      end === 'stalled'
        ? `reported nothing for ${rig.policy.stallTimeout} ms and was stopped`
        : end === 'lost'
          ? `supervision was lost: ${run.lost ? describe(run.lost.error) : ''}`
          : `exited (code ${run.exit?.exitCode ?? 'unknown'}) without a verdict`;
    log.warn('review attempt failed', { mrId: input.mrId, runId, why });
    return { failure: `${runId} ${why}` };
  }
}
