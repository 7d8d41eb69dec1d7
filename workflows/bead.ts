/**
 * bead:<id> — the life of one unit of work:
 * dispatch a polecat run → wait for its gt_done (or its exit, or a stall) → hand the branch to the refinery as a
 * merge request → closed when merged; otherwise rework with feedback, bounded by rounds; failed when exhausted.
 *
 * Every run has its own id; gt_done, progress and escalations are accepted only from the current run, so nothing
 * addressed to an old run can change this bead (failure class 1). Each run first takes a slot from the rig's
 * dispatch gate (capacity, operator pause, circuit breaker), and gives it back when it ends.
 * What it keeps and hands on (feedback over rounds, checkpoints, messages, failure reasons) is bounded by
 * domain/caps.ts, so no input, update answer or result of it can pass Temporal's payload limit.
 *
 * A failed or cancelled bead can be retried (`gt bead retry`): a new workflow run of the same id whose input carries
 * `resume` (activities/bead-retry.ts). It goes on from the carried runs, rounds, feedback, checkpoints and messages,
 * numbering its rounds after the used ones, so no run id or merge request id repeats; without `resume` nothing
 * differs, so histories from before retries replay unchanged (no patched() needed).
 *
 * This module is the process. Its state is in workflows/bead-state.ts, its message handlers in bead-messages.ts, the
 * polecat runs of a round in bead-runs.ts, the agent-run machinery shared with the merge request in agent-run.ts.
 */
import {
  CancellationScope,
  startChild,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  metricMeter,
  ParentClosePolicy,
} from '@temporalio/workflow';
import { BeadWorkflowInput, type BeadResult } from '../domain/bead';
import { appendFeedback, CAPS, capText } from '../domain/caps';
import { escalationIdPart } from '../domain/escalation';
import { isSingleRun } from '../domain/formula';
import { convoyWorkflowId, mergeRequestWorkflowId } from '../domain/ids';
import { beadReportSignal } from '../domain/messages';
import { countTownEvent } from '../domain/metrics';
import type { MergeOutcome } from '../domain/outcomes';
import { mergeRequestStart } from '../domain/starts';
import { parseOrReject } from '../domain/validation';
import { handleBeadMessages } from './bead-messages';
import {
  DISPATCHES_LOCALLY,
  GATE_SIGNALS_WITHOUT_WAITING,
  LAUNCHES_IN_ONE_ACTIVITY,
  ASKS_IN_LAUNCH,
  CLAIMS_WITH_DISPATCH,
  GRACE_ON_HOST,
  LAUNCH_REPORTS_START,
  PolecatRuns,
  QUEUES_MERGE_REQUEST,
  RELEASES_LOCALLY,
  REPORTS_START_LOCALLY,
} from './bead-runs';
import { Bead, STATUS_ON_CHANGE, town } from './bead-state';
import { deleteLegBranches, FORMULA_CONTINUES_AS_NEW, LEG_CLEANUP, runFormula } from './formula';
import { mergeRequestWorkflow } from './merge-request';
import { enqueueLocally, mergeTicket, withdrawTicket } from './merge-request-state';
import { type PatchBaseline, patchesFrom } from './patches';

/** patched() id: a bead whose formula has more than today's single run goes through the formula engine. */
const FORMULA_ENGINE = 'bead-formula-engine';
/** patched() id: a cancelled bead ends only after its supervising activity confirms the agent was stopped. */
const CANCEL_WAITS_FOR_AGENT_STOP = 'bead-cancel-waits-for-agent-stop';
/**
 * patched() id: a cancelled bead then makes sure each live run's agent is gone on its host (a launch that ended after
 * the cancel, a supervision the server cancelled before it began, left it running unsupervised).
 */
const CANCEL_STOPS_LEFTOVER_AGENTS = 'bead-cancel-stops-leftover-agents';
/**
 * patched() id: a cancelled bead takes back, whatever its head, a ticket its run's supervision may have handed to the
 * refinery without the bead hearing of it (PolecatRuns.mayHoldTicket).
 */
const WITHDRAWS_UNHEARD_TICKET = 'bead-withdraws-unheard-ticket';
/** patched() id: a merge the refinery reported to the convoy (MergeOutcome.convoyTold) is not reported again. */
const LEAVES_MERGE_REPORT_TO_REFINERY = 'bead-leaves-merge-report-to-refinery';
/**
 * Every change a bead's code was patched for up to 2026-12: a bead started since records this one marker for them
 * all (workflows/patches.ts). Its list never changes; a later change gets an id of its own, and a later baseline.
 */
const BASELINE: PatchBaseline = {
  id: 'bead-baseline-2026-12',
  covers: [
    GATE_SIGNALS_WITHOUT_WAITING,
    DISPATCHES_LOCALLY,
    LAUNCHES_IN_ONE_ACTIVITY,
    FORMULA_ENGINE,
    CANCEL_WAITS_FOR_AGENT_STOP,
    LEAVES_MERGE_REPORT_TO_REFINERY,
    LEG_CLEANUP,
    FORMULA_CONTINUES_AS_NEW,
    // New with the baseline, never asked on their own by a bead that recorded it.
    REPORTS_START_LOCALLY,
    STATUS_ON_CHANGE,
  ],
};
/** The next baseline (workflows/patches.ts): everything BASELINE stands for, and the changes since. */
const BASELINE_B: PatchBaseline = {
  id: 'bead-baseline-2026-12-b',
  covers: [
    ...BASELINE.covers,
    // New with this baseline, never asked on their own by a bead that recorded it.
    CLAIMS_WITH_DISPATCH,
    LAUNCH_REPORTS_START,
    RELEASES_LOCALLY,
    GRACE_ON_HOST,
  ],
};
/** The baseline after BASELINE_B: everything it stands for, and the changes since. */
const BASELINE_C: PatchBaseline = {
  id: 'bead-baseline-2026-12-c',
  covers: [
    ...BASELINE_B.covers,
    // New with this baseline, never asked on their own by a bead that recorded it.
    QUEUES_MERGE_REQUEST,
  ],
};

/** The baseline after BASELINE_C: everything it stands for, and the changes since. */
const BASELINE_D: PatchBaseline = {
  id: 'bead-baseline-2026-12-d',
  covers: [
    ...BASELINE_C.covers,
    // New with this baseline, never asked on its own by a bead that recorded it.
    ASKS_IN_LAUNCH,
  ],
};

export async function beadWorkflow(rawInput: BeadWorkflowInput): Promise<BeadResult> {
  const input = parseOrReject(BeadWorkflowInput, rawInput, 'bead input');
  const { bead, rig, formula, continued } = input;
  const b = new Bead(input, patchesFrom(BASELINE_D, BASELINE_C, BASELINE_B, BASELINE));
  handleBeadMessages(b);
  const polecats = new PolecatRuns(b);
  const { state, firstRound } = b;
  const { policy } = rig;
  try {
    for (let round = continued?.round ?? firstRound; round < firstRound + policy.maxRounds; round++) {
      state.round = round;
      const work =
        formula && !isSingleRun(formula) && b.patches.has(FORMULA_ENGINE)
          ? await runFormula(polecats.formulaHost(), formula, round)
          : await polecats.runRound(round, continued?.round === round ? continued : undefined);
      if ('failure' in work)
        return await finish(b, polecats, { beadId: bead.id, status: 'failed', reason: work.failure });

      const mrInput = { ...b.mergeRequestOf(round), headSha: work.headSha };
      const { mrId } = mrInput;
      state.rounds.push({ round, headSha: work.headSha, mergeRequest: mrId });
      b.setStatus('in_review', `merge request ${mrId} (${work.headSha.slice(0, 10)}) is with the refinery`);
      // The ticket goes to the refinery before the merge request starts: the merge request's start and first workflow
      // task leave the path from `gt done` to the merge (docs/performance.md). The run's supervision hands it over as
      // it publishes the branch, when it can (its recorded result says so: histories from before replay as they ran);
      // else it goes from here. A rig that now asks for a review is left to the merge request, as before; so is every
      // ticket of a bead from before this change. A head the refinery already merged as this round's (its answer kept
      // for the merge request) is left to the merge request to announce: the answer is then given to it at once.
      const handed =
        polecats.handedAtExit(round, work.headSha) ??
        (!work.mergedAs &&
          b.patches.has(QUEUES_MERGE_REQUEST) &&
          (await enqueueLocally.queueMergeRequest
            .executeWithOptions({ summary: `hand ${mrId} to the refinery of ${rig.name}` }, [
              { rig, ticket: mergeTicket(mrInput) },
            ])
            .catch(async (err: unknown) => {
              // Cancelled between tries: a try that failed may still have reached the refinery, and no merge request
              // is there to take the ticket back.
              if (isCancellation(err)) {
                await withdrawTicket(rig.name, mrId, work.headSha);
                polecats.ticketSettled(round);
              }
              throw err;
            })));
      const mr = mergeRequestStart(
        handed && handed.queued ? { ...mrInput, rig: handed.rig, queued: true as const } : mrInput,
      );
      const child = await startChild<typeof mergeRequestWorkflow>(mr.workflowType, {
        ...mr.options,
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      });
      polecats.ticketSettled(round);
      // The run's slot goes back now, in the workflow task that learned of the start, not in the one that started it.
      polecats.releaseDeferred();
      const outcome: MergeOutcome = await child.result();
      state.rounds[state.rounds.length - 1]!.outcome = outcome;
      if (outcome.kind === 'merged') {
        state.mergedCommit = outcome.commit;
        return await finish(b, polecats, { beadId: bead.id, status: 'closed', commit: outcome.commit }, outcome);
      }
      if (outcome.kind === 'pr_closed') {
        // A human closed the pull request: a decision, not a defect to rework. Fail (and escalate) at once.
        return await finish(b, polecats, { beadId: bead.id, status: 'failed', reason: outcome.feedback });
      }
      state.feedback = appendFeedback(state.feedback, `[${outcome.kind}] ${outcome.feedback}`);
      log.info('merge request sent back for rework', { beadId: bead.id, mrId, kind: outcome.kind });
      // Counted only when a polecat gets it back: after the last round nobody does (the bead fails below).
      if (round < policy.maxRounds) countTownEvent(metricMeter, 'rework', { rig: rig.name, kind: outcome.kind });
    }
    const last = state.rounds[state.rounds.length - 1]?.outcome;
    const lastOutcome = last && 'feedback' in last ? `[${last.kind}] ${last.feedback.split('\n')[0]}` : 'unknown';
    return await finish(b, polecats, {
      beadId: bead.id,
      status: 'failed',
      reason: capText(`no merge after ${policy.maxRounds} rounds of rework; the last: ${lastOutcome}`, CAPS.feedback),
    });
  } catch (err) {
    if (isCancellation(err)) {
      // The cancel reached the supervising activity with the bead's; wait for it to stop the agent, so a cancelled
      // bead (and `gt bead cancel` returning) means its process is gone. Histories from before ended without waiting.
      // Parallel legs are several live runs: wait for every one (one live run: the same single wait as before).
      const live = b.runs.all;
      const stopping =
        live.length > 1
          ? Promise.all(live.flatMap((r) => (r.supervision ? [r.supervision] : []))).then(() => undefined)
          : live[0]?.supervision;
      if (stopping && b.patches.has(CANCEL_WAITS_FOR_AGENT_STOP)) {
        b.setStatus(state.status, 'cancelled: stopping its agent');
        await CancellationScope.nonCancellable(() => stopping);
      }
      if (live.length && b.patches.has(CANCEL_STOPS_LEFTOVER_AGENTS))
        await CancellationScope.nonCancellable(() => Promise.all(live.map((r) => r.stopLeftover())));
      // A supervision that handed its round's ticket to the refinery as the cancel came (its agent had exited after
      // gt done): no merge request will take the answer, and work nobody wants any more is not merged.
      for (const r of live) {
        const { published, enqueued } = r.exit ?? {};
        if (published && enqueued?.queued) {
          await withdrawTicket(rig.name, mergeRequestWorkflowId(bead.id, r.record.round), published.headSha);
          polecats.ticketSettled(r.record.round);
        }
      }
      // A supervision may also have handed it over with the bead never hearing which head (its answer lost with its
      // worker, its retry knowing nothing of the gt done), or just before the merge request's start was called off.
      const { round } = state;
      if (polecats.mayHoldTicket(round) && b.patches.has(WITHDRAWS_UNHEARD_TICKET))
        await withdrawTicket(rig.name, mergeRequestWorkflowId(bead.id, round));
      // The run in flight was stopped with the bead: its record must not stay "running" forever.
      for (const r of state.runs)
        if (r.outcome === 'running') Object.assign(r, { outcome: 'cancelled', endedAt: new Date().toISOString() });
      b.runs.retireAll();
      // An operator's recorded reason (gt bead cancel) goes to the convoy and the result; a convoy's stop has none.
      const why = state.cancellation
        ? `cancelled by ${state.cancellation.by}: ${state.cancellation.reason}`
        : 'cancelled by an operator';
      await CancellationScope.nonCancellable(() =>
        finish(b, polecats, { beadId: bead.id, status: 'cancelled', reason: why }),
      );
    }
    throw err;
  }
}

/** The bead's end: its status, an escalation when it failed, its report to its convoy. */
async function finish(
  b: Bead,
  polecats: PolecatRuns,
  result: BeadResult,
  merged?: Extract<MergeOutcome, { kind: 'merged' }>,
): Promise<BeadResult> {
  const { bead, rig, convoy } = b.input;
  const { retry } = b;
  await polecats.gateSignalsSent();
  b.setStatus(result.status, result.reason ?? (result.commit ? `merged as ${result.commit}` : result.status));
  await b.runs.raisePending();
  // Merged: its leg branches (a formula's legs) are of no more use. A failed or cancelled bead keeps them for a retry.
  if (result.status === 'closed' && b.input.formula?.steps.some((s) => s.kind === 'legs') && b.patches.has(LEG_CLEANUP))
    await deleteLegBranches(rig, bead.id);
  if (result.status === 'failed') {
    b.state.failureReason = result.reason;
    // Bounded retries are exhausted: escalate once and leave the decision to a human.
    await town.raiseEscalation({
      // A retried run that fails again is a new escalation (the first one may be acknowledged already).
      id: `bead-${escalationIdPart(bead.id)}${retry ? `.retry${retry}` : ''}`,
      severity: 'high',
      source: 'bead',
      reason: `bead ${bead.id} failed: ${result.reason ?? 'unknown'}`,
      rig: rig.name,
      beadId: bead.id,
      convoyId: convoy?.id,
    });
  }
  // The refinery told the convoy of the merge as it learned it (two workflow tasks earlier): nothing to add.
  if (convoy && !(merged?.convoyTold && b.patches.has(LEAVES_MERGE_REPORT_TO_REFINERY))) {
    await CancellationScope.nonCancellable(() =>
      getExternalWorkflowHandle(convoyWorkflowId(convoy.id))
        .signal(beadReportSignal, {
          beadId: bead.id,
          status: result.status as 'closed' | 'failed' | 'cancelled',
          commit: result.commit,
          reason: result.reason,
          ...(retry ? { retry } : {}),
        })
        .catch((err: unknown) =>
          log.warn('could not report to convoy', { beadId: bead.id, convoyId: convoy.id, error: String(err) }),
        ),
    );
  }
  return retry ? { ...result, retry } : result;
}
