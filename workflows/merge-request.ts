/**
 * mr:<beadId>:<round> — one finished branch: (review) → its turn in the refinery → for the PR strategy, the pull
 * request's life → the outcome back to the bead (`merged`, or rework with feedback, or `pr_closed`).
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
 */
import {
  ActivityCancellationType,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { HostQueueActivities, TownQueueActivities } from '../activities';
import { type AgentReply, BeadSpec, EscalateRequest, ProgressRequest, ReviewVerdict } from '../domain/bead';
import type { MergeOutcome } from '../domain/outcomes';
import { CAPS, capText } from '../domain/caps';
import { escalationIdPart } from '../domain/escalation';
import { assessPullRequest, ForgeSettings } from '../domain/forge';
import { ConvoyId, refineryWorkflowId, reviewRunIdOf } from '../domain/ids';
import {
  escalateUpdate,
  mergeRequestStateQuery,
  mergeResultSignal,
  progressUpdate,
  reviewVerdictUpdate,
  withdrawSignal,
} from '../domain/messages';
import { MergeResult, type MergeRequestState } from '../domain/refinery';
import { parseSignal } from './signals';
import { RigConfig } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import { parseOrReject } from '../domain/validation';

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 50 },
});

/** Reads the rig's current configuration (a query of its refinery): one marker event, no task of its own. */
const local = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 5 },
});

/** patched() id: review and pull-request following read the rig's current configuration. */
const FOLLOWS_RIG = 'merge-request-follows-rig';

/** After a verdict, how long the reviewer may take to exit on its own before it is stopped. */
const EXIT_GRACE_MS = 15_000;
const MAX_BACKOFF_MS = 600_000;
/** Failed looks at a pull request in a row before a human hears about it (the MR keeps looking). */
const LOOKS_BEFORE_ESCALATION = 5;
/** How long a merge request waits for the refinery's answer before announcing itself again. */
const REANNOUNCE_MS = 15 * 60_000;

const FollowingState = z.object({
  pr: z.object({ number: z.number().int().positive(), url: z.string(), created: z.boolean() }),
  looks: z.number().int().min(0),
  failedLooks: z.number().int().min(0),
  escalated: z.boolean(),
  /** Workflow time the PR first looked ready for auto-merge (reset whenever it stops looking ready). */
  readySince: z.number().optional(),
});
type FollowingState = z.infer<typeof FollowingState>;

export const MergeRequestInput = z.object({
  mrId: z.string(),
  bead: BeadSpec,
  rig: RigConfig,
  round: z.number().int().min(1),
  branch: z.string(),
  headSha: z.string().regex(/^[0-9a-f]{40}$/),
  targetBranch: z.string(),
  convoyId: ConvoyId.optional(),
  /** Set when a run that was following a pull request continued as new. */
  following: FollowingState.optional(),
});
export type MergeRequestInput = z.input<typeof MergeRequestInput>;

type ReviewResult = { kind: 'approved' } | { kind: 'sent_back'; outcome: MergeOutcome };

export async function mergeRequestWorkflow(rawInput: MergeRequestInput): Promise<MergeOutcome> {
  const input = parseOrReject(MergeRequestInput, rawInput, 'merge request input');
  const { bead } = input;
  let rig = input.rig;
  const followsRig = patched(FOLLOWS_RIG);
  /** The rig's current configuration; a removed rig, or one that cannot be read now, leaves `rig` as it is. */
  const readRig = async () => {
    try {
      const current = RigConfig.safeParse(await local.currentRigConfig({ rig: rig.name }));
      if (current.success && current.data) rig = current.data;
    } catch (err) {
      log.warn('could not read the rig configuration; keeping the one this merge request has', {
        mrId: input.mrId,
        error: String(err),
      });
    }
  };
  const state: MergeRequestState = {
    mrId: input.mrId,
    beadId: bead.id,
    round: input.round,
    rig: rig.name,
    branch: input.branch,
    headSha: input.headSha,
    targetBranch: input.targetBranch,
    phase: input.following ? 'pull_request' : rig.reviewer ? 'review' : 'queued',
    waitingFor: 'start',
    reviewRuns: [],
  };
  let shownAttributes: string | undefined;
  const setPhase = (phase: MergeRequestState['phase'], waitingFor: string, runId?: string) => {
    state.phase = phase;
    state.waitingFor = waitingFor;
    // Only on change: every upsert is a history event, and a followed PR sets its phase on every look.
    if (`${phase}|${runId}` !== shownAttributes) {
      shownAttributes = `${phase}|${runId}`;
      upsertSearchAttributes([
        { key: SA.status, value: phase },
        { key: SA.round, value: input.round },
        { key: SA.runId, value: runId ?? null },
      ]);
    }
    setCurrentDetails(`**${phase}** — ${waitingFor}`);
  };

  let result: MergeResult | undefined;
  setHandler(mergeResultSignal, (raw) => {
    const r = parseSignal(MergeResult, raw, 'merge result');
    if (r?.mrId === input.mrId && r.headSha === input.headSha) result ??= r;
  });
  setHandler(mergeRequestStateQuery, () => state);

  // --- the reviewer run: the only run that may speak to this MR ---
  interface ReviewerRun {
    runId: string;
    verdict?: z.output<typeof ReviewVerdict>;
    lastProgressAt: number;
  }
  let reviewer: ReviewerRun | undefined;
  const escalations: { runId: string; severity: 'low' | 'medium' | 'high' | 'critical'; reason: string }[] = [];
  let escalationCount = 0;
  const requireCurrentReviewer = (runId: string) => {
    if (!reviewer || reviewer.runId !== runId) {
      const now = reviewer
        ? `the current reviewer run is ${reviewer.runId}`
        : `no review is running (merge request is ${state.phase})`;
      throw ApplicationFailure.nonRetryable(
        `run ${runId} is not the current reviewer of ${input.mrId}: ${now}`,
        'StaleRun',
      );
    }
    return reviewer;
  };
  setHandler(
    reviewVerdictUpdate,
    (raw): AgentReply => {
      const verdict = ReviewVerdict.parse(raw);
      const run = requireCurrentReviewer(verdict.runId);
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
    {
      validator: (raw) => {
        const verdict = parseOrReject(ReviewVerdict, raw, 'gt_review');
        const run = requireCurrentReviewer(verdict.runId);
        if (run.verdict)
          throw ApplicationFailure.nonRetryable(
            `run ${verdict.runId} already gave its verdict (${run.verdict.verdict})`,
            'VerdictRecorded',
          );
      },
    },
  );
  setHandler(
    progressUpdate,
    (raw): AgentReply => {
      const req = ProgressRequest.parse(raw);
      requireCurrentReviewer(req.runId).lastProgressAt = Date.now();
      return { accepted: true, runId: req.runId, message: 'progress recorded' };
    },
    { validator: (raw) => void requireCurrentReviewer(parseOrReject(ProgressRequest, raw, 'gt_progress').runId) },
  );
  setHandler(
    escalateUpdate,
    (raw): AgentReply => {
      const req = EscalateRequest.parse(raw);
      requireCurrentReviewer(req.runId);
      escalations.push({ runId: req.runId, severity: req.severity, reason: req.reason });
      return {
        accepted: true,
        runId: req.runId,
        message: 'escalation raised; an operator will see it in `gt escalations`',
      };
    },
    { validator: (raw) => void requireCurrentReviewer(parseOrReject(EscalateRequest, raw, 'gt_escalate').runId) },
  );
  const raisePending = async () => {
    while (escalations.length) {
      const e = escalations.shift()!;
      await town.raiseEscalation({
        id: `run-${escalationIdPart(e.runId)}-${++escalationCount}`,
        severity: e.severity,
        reason: e.reason,
        source: 'agent',
        rig: rig.name,
        beadId: bead.id,
        convoyId: input.convoyId,
        runId: e.runId,
      });
    }
  };

  /** One reviewer attempt: a run from dispatch to verdict / exit / stall, on the host that claimed it. */
  const reviewAttempt = async (attempt: number): Promise<ReviewResult | { failure: string }> => {
    const runId = reviewRunIdOf(bead.id, input.round, attempt);
    const { hostQueue } = await town.claimHost();
    const onHost = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      startToCloseTimeout: '10m',
      // The activities heartbeat (activities/heartbeat.ts): a host that dies mid-way is noticed this soon.
      heartbeatTimeout: rig.policy.heartbeatTimeout,
      scheduleToStartTimeout: rig.policy.startTimeout,
      retry: { initialInterval: '2s', maximumInterval: '30s', maximumAttempts: 5 },
    });
    const starter = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      startToCloseTimeout: rig.policy.startTimeout,
      scheduleToStartTimeout: rig.policy.startTimeout,
      // Start-or-adopt by run id: a retry after an uncertain start adopts the reviewer instead of launching a second.
      retry: {
        initialInterval: '1s',
        maximumInterval: '10s',
        maximumAttempts: 3,
        nonRetryableErrorTypes: ['RuntimeUnavailable', 'InvalidInput', 'NoAgentCommand', 'AgentStartRefused'],
      },
    });
    const supervisor = proxyActivities<HostQueueActivities>({
      taskQueue: hostQueue,
      startToCloseTimeout: rig.policy.runTimeout,
      heartbeatTimeout: rig.policy.heartbeatTimeout,
      scheduleToStartTimeout: rig.policy.startTimeout,
      // Retries re-attach to the live process through its handle; they never relaunch it.
      retry: {
        initialInterval: '1s',
        maximumInterval: '10s',
        maximumAttempts: 5,
        nonRetryableErrorTypes: ['RuntimeUnavailable', 'InvalidInput'],
      },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    });
    const prepared = await onHost.prepareReviewRun({
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
    state.reviewRuns.push(record);
    const launch = {
      runId,
      beadId: bead.id,
      workflowId: workflowInfo().workflowId,
      role: 'reviewer' as const,
      rig,
      worktree: prepared.worktree,
      promptFile: prepared.promptFile,
      branch: input.branch,
      targetBranch: input.targetBranch,
    };
    // Current before the agent exists: a fast reviewer may give its verdict before the start activity returns.
    const run: ReviewerRun = { runId, lastProgressAt: Date.now() };
    reviewer = run;
    setPhase('review', `starting reviewer run ${runId} on ${prepared.host}`, runId);
    let handle;
    try {
      ({ handle } = await starter.startAgentRun(launch));
    } catch (err) {
      if (isCancellation(err)) throw err;
      reviewer = undefined;
      record.outcome = 'lost';
      return {
        failure: `${runId} could not be started: ${capText(String((err as Error).message ?? err), CAPS.failure)}`,
      };
    }
    setPhase('review', `waiting for the verdict of reviewer run ${runId}`, runId);

    let exit: { exitCode: number | null } | undefined;
    let lost: string | undefined;
    const scope = new CancellationScope();
    const supervision = scope
      .run(() => supervisor.superviseAgentRun({ ...launch, handle }))
      .then(
        (r) => void (exit = r),
        // Only a cancellation this workflow asked for is expected; anything else means supervision was lost.
        (err: unknown) =>
          void (lost =
            isCancellation(err) && scope.consideredCancelled
              ? undefined
              : capText(String((err as Error).message ?? err), CAPS.failure)),
      );

    let stalled = false;
    for (;;) {
      const quietFor = Date.now() - run.lastProgressAt;
      await condition(
        () => !!run.verdict || exit !== undefined || lost !== undefined || escalations.length > 0,
        Math.max(rig.policy.stallTimeout - quietFor, 1),
      );
      await raisePending();
      if (run.verdict || exit !== undefined || lost !== undefined) break;
      if (Date.now() - run.lastProgressAt >= rig.policy.stallTimeout) {
        stalled = true;
        break;
      }
    }
    if (run.verdict) await condition(() => exit !== undefined || lost !== undefined, EXIT_GRACE_MS);
    if (exit === undefined && lost === undefined) scope.cancel();
    await supervision;
    reviewer = undefined;
    await onHost
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
    record.outcome = stalled ? 'stalled' : lost !== undefined ? 'lost' : 'exited';
    const why = stalled
      ? `reported nothing for ${rig.policy.stallTimeout} ms and was stopped`
      : lost !== undefined
        ? `supervision was lost: ${lost}`
        : `exited (code ${exit?.exitCode ?? 'unknown'}) without a verdict`;
    log.warn('review attempt failed', { mrId: input.mrId, runId, why });
    return { failure: `${runId} ${why}` };
  };

  /** Review with bounded attempts; when no reviewer run gives a verdict, a human hears about it and the bead goes back. */
  const review = async (): Promise<ReviewResult> => {
    const failures: string[] = [];
    for (let attempt = 1; attempt <= rig.policy.maxAttempts; attempt++) {
      const r = await reviewAttempt(attempt);
      if (!('failure' in r)) return r;
      failures.push(r.failure);
      if (attempt < rig.policy.maxAttempts) {
        const backoff = Math.min(rig.policy.retryBackoff * 2 ** (attempt - 1), MAX_BACKOFF_MS);
        setPhase('review', `review attempt ${attempt} failed; next attempt in ${backoff} ms`);
        await sleep(backoff);
      }
    }
    const reason = capText(
      `no reviewer run of ${input.mrId} gave a verdict:\n- ${failures.join('\n- ')}`,
      CAPS.feedback,
    );
    await town.raiseEscalation({
      id: `mr-${escalationIdPart(input.mrId)}-review`,
      severity: 'high',
      source: 'merge-request',
      reason,
      rig: rig.name,
      beadId: bead.id,
      convoyId: input.convoyId,
    });
    return {
      kind: 'sent_back',
      outcome: {
        kind: 'rejected',
        feedback: `The review could not be completed (${reason}). The work goes back for another round.`,
      },
    };
  };

  /** The PR strategy after the refinery opened (or found) the pull request: look at it on a durable timer until it decides. */
  const followPullRequest = async (following: FollowingState): Promise<MergeOutcome> => {
    const forgeOf = () => {
      const settings = rig.forge ?? ForgeSettings.parse({});
      const activities = proxyActivities<TownQueueActivities>({
        startToCloseTimeout: 6 * settings.requestTimeout + 60_000,
        retry: {
          initialInterval: '2s',
          backoffCoefficient: 2,
          maximumInterval: '1m',
          maximumAttempts: 5,
          nonRetryableErrorTypes: ['InvalidInput', 'ForgeAuth', 'ForgeRejected', 'ForgeNotConfigured'],
        },
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
        return continueAsNew<typeof mergeRequestWorkflow>({ ...input, ...(followsRig ? { rig } : {}), following: f });
      }
      if (followsRig) {
        await readRig();
        ({ forgeSettings, forge } = forgeOf());
      }
      let wait = forgeSettings.pollInterval;
      try {
        const snapshot = await forge.pullRequestSnapshot({ rig, number: pr.number });
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
            setPhase('pull_request', `auto-merging pull request #${pr.number}`);
            const merged = await forge.mergePullRequest({
              rig,
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
        setPhase('pull_request', `pull request #${pr.number} ${pr.url}: ${state.pullRequest.lastVerdict}`);
      } catch (err) {
        f.failedLooks++;
        log.warn('could not look at the pull request', {
          mrId: input.mrId,
          number: pr.number,
          failedLooks: f.failedLooks,
          error: String((err as Error).message ?? err),
        });
        setPhase('pull_request', `pull request #${pr.number}: GitHub did not answer (${f.failedLooks} looks in a row)`);
        if (f.failedLooks >= LOOKS_BEFORE_ESCALATION && !f.escalated) {
          f.escalated = true;
          await town.raiseEscalation({
            id: `mr-${escalationIdPart(input.mrId)}-forge`,
            severity: 'medium',
            source: 'merge-request',
            reason: `${input.mrId} cannot read pull request #${pr.number} (${pr.url}): ${String((err as Error).message ?? err).slice(0, 1000)}`,
            rig: rig.name,
            beadId: bead.id,
            convoyId: input.convoyId,
          });
        }
      }
      await sleep(wait);
    }
  };

  const finish = (outcome: MergeOutcome): MergeOutcome => {
    state.outcome = outcome;
    setPhase('done', `outcome: ${outcome.kind}`);
    return outcome;
  };

  let following = input.following;
  if (!following) {
    if (followsRig) await readRig();
    if (rig.reviewer) {
      const reviewed = await review();
      if (reviewed.kind === 'sent_back') return finish(reviewed.outcome);
    }
    setPhase(
      'queued',
      `waiting for the refinery of ${rig.name} to take ${input.branch} @ ${input.headSha.slice(0, 10)}`,
    );
    const ticket = {
      mrId: input.mrId,
      beadId: bead.id,
      round: input.round,
      title: bead.title,
      branch: input.branch,
      headSha: input.headSha,
      targetBranch: input.targetBranch,
      priority: bead.priority,
      convoyId: input.convoyId,
      enqueuedAt: Date.now(),
      retries: input.round - 1,
    };
    await town.enqueueMergeRequest({ rig, ticket });
    try {
      // Should the refinery have been lost (terminated or reset by an operator), announce again; it ignores repeats.
      while (!(await condition(() => result !== undefined, REANNOUNCE_MS)))
        await town.enqueueMergeRequest({ rig, ticket });
    } catch (err) {
      // Cancelled (its bead was): take the ticket back so work nobody wants any more is not merged.
      if (isCancellation(err)) {
        await CancellationScope.nonCancellable(() =>
          getExternalWorkflowHandle(refineryWorkflowId(rig.name))
            .signal(withdrawSignal, { mrId: input.mrId, headSha: input.headSha })
            .catch((e: unknown) =>
              log.warn('could not withdraw from the refinery', { mrId: input.mrId, error: String(e) }),
            ),
        );
      }
      throw err;
    }
    const outcome = result!.outcome;
    if (outcome.kind !== 'pr_opened') return finish(outcome);
    following = { pr: outcome.pr, looks: 0, failedLooks: 0, escalated: false };
    setPhase(
      'pull_request',
      `pull request #${outcome.pr.number} ${outcome.pr.url} ${outcome.pr.created ? 'opened' : 'found'}`,
    );
  }
  return finish(await followPullRequest(following));
}
