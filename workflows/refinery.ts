/**
 * refinery:<rig> — the rig's merge queue and the only writer of its target branch.
 *
 * MRs arrive by signal and wait in score order (priority, convoy age, MR age, capped retry penalty). One merge
 * section runs at a time (failure class 9): a single MR, or — with `batchSize` > 1 (the default) — the MRs waiting,
 * up to the adaptive batch limit (halved after a failed batch, doubled after a landed one: nextBatchLimit), gated as
 * one candidate and bisected down to its culprits when it fails. Each merge follows the bors rule (activities/merge.ts).
 * For rigs that merge by pull request the section only verifies the candidate and opens the PR; following the PR is
 * the merge request's business, so a PR waiting on a human never holds the queue (failure class 5).
 * Outcomes go to the merge requests by signal; a convoy bead's merge is reported to its convoy from here too, in the
 * task that learns it (the convoy starts the dependents two workflow tasks sooner than the bead's own report would).
 * A bead hands its ticket over before it starts its merge request, so an outcome can find no merge request yet: it is
 * kept (a few, across continue-as-new) and given to the ticket when the merge request announces itself.
 * The workflow also holds the rig's configuration, and continues as new with its queue when history grows; the
 * queue holds at most MAX_QUEUED_TICKETS, so that input stays far below Temporal's payload limit.
 *
 * Size (over ~300 lines): one workflow function whose handlers, merge sections and continue-as-new share the queue's
 * closure state; splitting it is a restructuring of its own, guarded by the refinery histories in test/histories.
 */
import {
  ActivityCancellationType,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  metricMeter,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import type { ChainLink } from '../activities/merge';
import { escalationIdPart } from '../domain/escalation';
import {
  type BeadReport,
  beadReportSignal,
  mergeReport,
  enqueueSignal,
  mergeResultSignal,
  pauseRefineryUpdate,
  refineryStateQuery,
  removeRigUpdate,
  rigConfigQuery,
  updateRigUpdate,
  withdrawSignal,
} from '../domain/messages';
import {
  afterProbe,
  type BatchVerdict,
  type CandidateResult,
  MAX_QUEUED_TICKETS,
  type MergeResult,
  MergeTicket,
  nextBatchLimit,
  nextBisectionStep,
  orderQueue,
  type RefinerySection,
  type RefineryState,
  type SectionOutcome,
  type SectionRecord,
  type SpeculativeGateResult,
  startBisection,
  WithdrawRequest,
  withoutItem,
} from '../domain/refinery';
import { RigConfig, type RigConfigInput } from '../domain/rig';
import { convoyWorkflowId, fsSafe } from '../domain/ids';
import { SA } from '../domain/search-attributes';
import { countTownEvent } from '../domain/metrics';
import { failureMessage, parseOrReject } from '../domain/validation';
import { parseSignal, setValidatedUpdate } from './handlers';
import { deliverLocally } from './local-delivery';
import { Failure, RETRY } from '../domain/failures';

export interface RefineryStats {
  merged: number;
  rejected: number;
  pullRequests: number;
  gateRuns: number;
}

export interface RefineryInput {
  rig: RigConfigInput;
  queue?: MergeTicket[];
  seen?: string[];
  stats?: Partial<RefineryStats>;
  recent?: SectionRecord[];
  /** First time each convoy's MR reached this queue: the anti-starvation bonus when the ticket does not say. */
  convoySince?: Record<string, number>;
  paused?: boolean;
  /** Continue as new after this many sections even if Temporal does not suggest it yet (tests force it with small numbers). */
  continueAsNewEvery?: number;
  /** Tickets held waiting at most (default MAX_QUEUED_TICKETS; tests use small numbers). */
  maxQueue?: number;
  /** Section failures per MR so far (infrastructure trouble, not the MR's fault): bounded before the MR is sent back. */
  sectionFailures?: Record<string, number>;
  /** The most MRs the next batch takes (nextBatchLimit); the rig's batchSize when absent. */
  batchLimit?: number;
  /** Outcomes no merge request was there to hear, oldest first: given again when their ticket comes again. */
  undelivered?: MergeResult[];
  /** Merge requests withdrawn, oldest first: a ticket of theirs that comes later (or would go back) is not queued. */
  withdrawn?: string[];
}

const SEEN_KEEP = 5000;
const RECENT_KEEP = 50;
/** patched() id: merge outcomes are signalled without holding up the next section. */
const DELIVER_WITHOUT_WAITING = 'refinery-deliver-without-waiting';
/** patched() id: a ticket that finds the queue full is left to its merge request to announce again. */
const BOUNDED_QUEUE = 'refinery-bounded-queue';
/**
 * patched() id: `gt rig update` writes the new configuration to the memo too (the start writes the first), where
 * currentRigConfig reads it without a query (activities/rig-config.ts).
 */
const CONFIG_IN_MEMO = 'refinery-config-in-memo';
/**
 * patched() id: a batching rig's batches take up to `batchLimit` MRs (halved after a failed batch, doubled after one
 * that landed whole) instead of always up to `batchSize`. Asked only by rigs with batchSize > 1.
 */
const ADAPTIVE_BATCH = 'refinery-adapts-batches';
/**
 * patched() id: a convoy bead's merge is reported to its convoy from here (MergeTicket.convoyBead), in the workflow
 * task that learns it, instead of after the merge request's and the bead's tasks. Asked only for such merges.
 */
const REPORTS_TO_CONVOY = 'refinery-reports-to-convoy';
/**
 * patched() id: an MR that conflicts behind others in its batch's candidate is tried again first after the batch,
 * instead of being sent back for a conflict that may be with MRs not on the target yet.
 */
const BATCH_CONFLICT_WAITS = 'refinery-batch-conflict-waits';
/**
 * patched() id: an outcome goes to its merge request (and a convoy bead's merge to its convoy) from a local activity,
 * not as signals. Asked as a run starts, before any local activity of its first workflow task.
 */
const DELIVERS_LOCALLY = 'refinery-delivers-locally';
const CONVOYS_KEEP = 1000;
/**
 * patched() id: a ticket that comes again after its outcome found no merge request (its bead handed the ticket over
 * before starting the merge request, which started after the merge) is given that outcome again.
 */
const REDELIVERS = 'refinery-redelivers';
/**
 * Outcomes kept for a merge request that was not there to hear them. Most belong to merge requests that are gone for
 * good (a bead cancelled mid-merge); one that has not started yet announces itself within a minute. Each is at most
 * one round's feedback (CAPS.feedback), and they ride in the continue-as-new input beside the queue.
 */
const UNDELIVERED_KEEP = 10;
/**
 * patched() id: a ticket of a merge request withdrawn earlier is dropped, not queued: one a supervision attempt handed
 * over after its cancelled bead's withdraw (an attempt the server gave up on while its worker lived on), or one a
 * failed section would put back into the queue. Asked only for such a ticket.
 */
const DROPS_WITHDRAWN = 'refinery-drops-withdrawn';
/**
 * Withdrawn merge requests remembered. A withdraw comes only from a cancellation (of the bead or its merge request),
 * and a merge request id never comes back to life (a retried bead numbers its rounds after the used ones), so
 * forgetting one only reopens the race for a ticket that comes that late.
 */
const WITHDRAWN_KEEP = 1000;
/**
 * patched() id: the outcome of a withdrawn merge request is not kept (nobody will ask for it again), and one kept
 * before its withdraw is forgotten, so those of cancelled merges never push out one a merge request yet to start asks
 * for. Asked only when there is such an outcome.
 */
const FORGETS_WITHDRAWN_OUTCOMES = 'refinery-forgets-withdrawn-outcomes';
/** A section that keeps failing on infrastructure is retried this often before its MR is sent back and escalated. */
const MAX_SECTION_FAILURES = 3;

const PauseRequest = z.object({ paused: z.boolean() });

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20 },
});

export async function refineryWorkflow(input: RefineryInput): Promise<void> {
  let rig = parseOrReject(RigConfig, input.rig, 'rig config');
  const deliversLocally = patched(DELIVERS_LOCALLY);
  const queue: MergeTicket[] = [...(input.queue ?? [])];
  const seen = new Set(input.seen ?? []);
  const stats: RefineryStats = { merged: 0, rejected: 0, pullRequests: 0, gateRuns: 0, ...input.stats };
  const recent: SectionRecord[] = [...(input.recent ?? [])];
  const convoySince: Record<string, number> = { ...input.convoySince };
  const sectionFailures: Record<string, number> = { ...input.sectionFailures };
  const undelivered = new Map((input.undelivered ?? []).map((r) => [`${r.mrId}@${r.headSha}`, r]));
  const withdrawn = new Set(input.withdrawn ?? []);
  /** Whether the ticket's merge request was withdrawn, so that it is to be dropped (logged once here). */
  const dropped = (t: MergeTicket, why: string) => {
    if (!withdrawn.has(t.mrId) || !patched(DROPS_WITHDRAWN)) return false;
    log.info(`ticket of a withdrawn merge request dropped (${why})`, { mrId: t.mrId, headSha: t.headSha });
    return true;
  };
  let paused = input.paused ?? false;
  const maxQueue = input.maxQueue ?? MAX_QUEUED_TICKETS;
  let batchLimit = nextBatchLimit(input.batchLimit ?? rig.batchSize, rig.batchSize, 'other');
  let section: RefinerySection | undefined;
  let sectionTickets: MergeTicket[] = [];
  let sections = 0;
  /**
   * `gt rig remove` was accepted: the loop ends the workflow instead of taking more work. Only that update sets it,
   * so histories without it run exactly the commands they ran before (no patch needed).
   */
  let removing = false;

  const state = (): RefineryState => ({
    rig: rig.name,
    paused,
    merging: sectionTickets[0],
    section,
    queue: orderQueue(queue, Date.now(), convoySince),
    ...stats,
    recent,
    batchSize: rig.batchSize,
    batchLimit,
    speculation: rig.speculation,
  });

  // Defined before the handlers: an update delivered with the workflow's first task runs as soon as its handler is set.
  let shownStatus: string | undefined;
  const setStatus = () => {
    const status = section ? 'merging' : removing ? 'removed' : paused ? 'paused' : 'idle';
    // Only on change: every upsert is a history event.
    if (status !== shownStatus) upsertSearchAttributes([{ key: SA.status, value: (shownStatus = status) }]);
    setCurrentDetails(
      section
        ? `${section.kind} section: **${section.mrIds.join(', ') || '…'}**${section.probe ? ` (probing ${section.probe})` : ''}; ${queue.length} waiting`
        : `${paused ? '**paused**' : 'idle'}; ${queue.length} waiting; ${stats.merged} merged, ${stats.rejected} sent back, ${stats.pullRequests} pull requests, ${stats.gateRuns} gate runs`,
    );
  };

  /** Outcomes signalled to merge requests and not yet recorded; continue-as-new waits for them. */
  const deliveries = new Set<Promise<void>>();
  const track = (sent: Promise<void>) => {
    const pending: Promise<void> = sent.finally(() => deliveries.delete(pending));
    deliveries.add(pending);
  };
  /** Signals a result (and a convoy report), as before outcomes went out from a local activity. */
  const signalOutcome = (result: MergeResult, convoy?: { convoyId: string; report: BeadReport }): Promise<void> => {
    const mrId = result.mrId;
    const toConvoy =
      convoy &&
      getExternalWorkflowHandle(convoyWorkflowId(convoy.convoyId))
        .signal(beadReportSignal, convoy.report)
        .catch((err: unknown) =>
          log.warn('could not report to convoy', { mrId, convoyId: convoy.convoyId, error: String(err) }),
        );
    if (toConvoy) track(toConvoy);
    return getExternalWorkflowHandle(mrId)
      .signal(mergeResultSignal, result)
      .catch((err: unknown) => unheard(result, String(err)));
  };
  /** An outcome its merge request was not there to hear: kept for the ticket coming again (a late start). */
  const unheard = (result: MergeResult, error?: string) => {
    if (withdrawn.has(result.mrId) && patched(FORGETS_WITHDRAWN_OUTCOMES)) {
      log.info('outcome of a withdrawn merge request not kept', { mrId: result.mrId });
      return;
    }
    log.warn('merge request workflow is not running; outcome kept for its ticket announced again', {
      mrId: result.mrId,
      ...(error ? { error } : {}),
    });
    undelivered.set(`${result.mrId}@${result.headSha}`, result);
    for (const key of [...undelivered.keys()].slice(0, Math.max(0, undelivered.size - UNDELIVERED_KEEP)))
      undelivered.delete(key);
  };
  /**
   * Sends an outcome (and a convoy's report) from one local activity: a marker in this history, both receivers told
   * while this workflow task is open (docs/performance.md). Signals when it keeps failing, and in a run from before
   * local delivery.
   */
  const sendOutcome = (result: MergeResult, convoy?: { convoyId: string; report: BeadReport }) => {
    if (!deliversLocally) return track(signalOutcome(result, convoy));
    const local = deliverLocally.deliverMergeOutcome.executeWithOptions(
      { summary: `tell ${result.mrId} its outcome (${result.outcome.kind})` },
      [{ result, ...(convoy ? { convoy } : {}) }],
    );
    track(
      local.then(
        (r) => {
          if (!r.mergeRequest) unheard(result);
          if (r.convoy?.reported === false)
            log.warn('could not report to convoy: it is gone', { mrId: result.mrId, convoyId: convoy?.convoyId });
        },
        (err: unknown) => {
          log.warn('could not deliver the outcome at once; signalling it', { mrId: result.mrId, error: String(err) });
          return signalOutcome(result, convoy);
        },
      ),
    );
  };
  setHandler(enqueueSignal, (raw) => {
    const ticket = parseSignal(MergeTicket, raw, 'merge ticket');
    if (!ticket) return;
    const key = `${ticket.mrId}@${ticket.headSha}`;
    const same = (t: MergeTicket) => t.mrId === ticket.mrId && t.headSha === ticket.headSha;
    // `seen` is trimmed at continue-as-new; what is waiting or merging is checked directly.
    if (seen.has(key) || queue.some(same) || sectionTickets.some(same)) {
      const answer = undelivered.get(key);
      if (answer && patched(REDELIVERS)) {
        undelivered.delete(key);
        log.info('merge request announced itself after its outcome; telling it again', { mrId: ticket.mrId });
        sendOutcome(answer);
      }
      return;
    }
    if (dropped(ticket, 'it came after the withdraw')) return;
    // Histories from before the bound took every ticket, and replay the same way.
    if (queue.length >= maxQueue && patched(BOUNDED_QUEUE)) {
      log.warn('merge queue full; the merge request will announce itself again', {
        mrId: ticket.mrId,
        waiting: queue.length,
      });
      return;
    }
    seen.add(key);
    if (ticket.convoyId && convoySince[ticket.convoyId] === undefined)
      convoySince[ticket.convoyId] = ticket.convoyStartedAt ?? Date.now();
    queue.push(ticket);
  });
  setHandler(withdrawSignal, (raw) => {
    const w = parseSignal(WithdrawRequest, raw, 'withdraw request');
    if (!w) return;
    withdrawn.delete(w.mrId);
    withdrawn.add(w.mrId);
    for (const old of [...withdrawn].slice(0, Math.max(0, withdrawn.size - WITHDRAWN_KEEP))) withdrawn.delete(old);
    const kept = [...undelivered].filter(([, r]) => r.mrId === w.mrId);
    if (kept.length && patched(FORGETS_WITHDRAWN_OUTCOMES)) for (const [key] of kept) undelivered.delete(key);
    for (let i = queue.length - 1; i >= 0; i--) {
      const t = queue[i]!;
      if (t.mrId !== w.mrId || (w.headSha !== undefined && t.headSha !== w.headSha)) continue;
      queue.splice(i, 1);
      log.info('merge request withdrawn', { mrId: t.mrId, headSha: t.headSha });
    }
  });
  setHandler(refineryStateQuery, state);
  setHandler(rigConfigQuery, () => rig);
  setHandler(
    updateRigUpdate,
    (patch) => {
      const cap = rig.batchSize;
      rig = RigConfig.parse({ ...rig, ...patch, name: rig.name });
      // A new cap is the operator's word on how much to batch: start from it.
      if (rig.batchSize !== cap) batchLimit = rig.batchSize;
      if (patched(CONFIG_IN_MEMO)) upsertMemo({ config: rig });
      return rig;
    },
    { validator: (patch) => void parseOrReject(RigConfig, { ...rig, ...patch, name: rig.name }, 'rig update') },
  );
  setValidatedUpdate(pauseRefineryUpdate, {
    schema: PauseRequest,
    what: 'pause request',
    handler: (req) => {
      paused = req.paused;
      setStatus();
      return state();
    },
  });
  setHandler(
    removeRigUpdate,
    () => {
      removing = true;
      return state();
    },
    {
      // Decided here, against the queue itself: no merge request can slip in between a client's check and the end.
      validator: () => {
        const open = [...sectionTickets, ...queue].map((t) => t.mrId);
        if (open.length)
          throw ApplicationFailure.nonRetryable(
            `rig ${rig.name} still has merge requests queued or merging: ${open.join(', ')}`,
            Failure.RigBusy,
          );
      },
    },
  );

  /** The merge section's activities, with timeouts that follow the rig's gates and heartbeat policy. */
  const merger = () =>
    proxyActivities<TownQueueActivities>({
      // Up to five compare-and-swap rounds, each running every gate to its timeout, plus git work.
      startToCloseTimeout: Math.max(2 * 3_600_000, 5 * rig.gates.length * rig.gateTimeout + 600_000),
      // Gates heartbeat every 5 s; git work between them (a large fetch) may take longer than a short run policy allows.
      heartbeatTimeout: Math.max(rig.policy.heartbeatTimeout, 30_000),
      retry: RETRY.merge,
    });
  const forge = () =>
    proxyActivities<TownQueueActivities>({
      startToCloseTimeout: '5m',
      retry: RETRY.refineryForge,
    });

  /** Tells a merge request its outcome; one that is not running (not yet, or its bead was cancelled) is kept for later. */
  const deliver = async (ticket: MergeTicket, outcome: SectionOutcome) => {
    if (outcome.kind === 'merged') {
      stats.merged++;
      countTownEvent(metricMeter, 'merges', { rig: rig.name });
    } else if (outcome.kind === 'pr_opened') stats.pullRequests++;
    else stats.rejected++;
    recent.push({
      mrId: ticket.mrId,
      beadId: ticket.beadId,
      outcome: outcome.kind,
      commit: outcome.kind === 'merged' ? outcome.commit : undefined,
      at: new Date().toISOString(),
    });
    recent.splice(0, Math.max(0, recent.length - RECENT_KEEP));
    delete sectionFailures[ticket.mrId];
    log.info('merge section outcome', { mrId: ticket.mrId, beadId: ticket.beadId, outcome: outcome.kind });
    // The dependents of a convoy bead wait for its merge, not for its workflows to end: tell the convoy now, and the
    // bead (through the outcome) that it need not. A signal that cannot reach the convoy would not from the bead
    // either (both fail only when the convoy is gone), so the bead's report is skipped even if this one fails.
    const toConvoy = outcome.kind === 'merged' && ticket.convoyBead && ticket.convoyId;
    // A run that delivers locally is newer than the convoy report: it need not ask for it (one marker fewer).
    const told = toConvoy && (deliversLocally || patched(REPORTS_TO_CONVOY));
    // The merge section that pushed it may have told the convoy already (activities/merge.ts): then only the MR here.
    const convoy =
      told && outcome.kind === 'merged' && !outcome.convoyTold
        ? {
            convoyId: toConvoy,
            // Sent by a local activity's client, the signal itself does not say it came from this workflow.
            report: mergeReport(ticket, outcome.commit, deliversLocally ? workflowInfo().workflowId : undefined),
          }
        : undefined;
    const result: MergeResult = {
      mrId: ticket.mrId,
      headSha: ticket.headSha,
      outcome: told && outcome.kind === 'merged' ? { ...outcome, convoyTold: true } : outcome,
    };
    if (deliversLocally) return sendOutcome(result, convoy);
    const delivered = signalOutcome(result, convoy);
    // The next section need not wait for the signal to be recorded (one round trip per merge on a serial queue);
    // histories from before this change waited, and replay the same way.
    if (patched(DELIVER_WITHOUT_WAITING)) track(delivered);
    else await delivered;
  };

  /**
   * The section's activity failed even after its retries (the repository unreachable, the worker pool gone).
   * Not the MR's fault: it goes back into the queue a bounded number of times, then is sent back and escalated.
   */
  const sectionFailed = async (tickets: MergeTicket[], err: unknown) => {
    const reason = failureMessage(err);
    log.error('merge section failed', { mrIds: tickets.map((t) => t.mrId), error: reason });
    for (const t of tickets) {
      const failures = (sectionFailures[t.mrId] ?? 0) + 1;
      if (failures < MAX_SECTION_FAILURES) {
        sectionFailures[t.mrId] = failures;
        if (!dropped(t, 'its section failed')) queue.push({ ...t, retries: t.retries + 1 });
        continue;
      }
      await town.raiseEscalation({
        id: `mr-${escalationIdPart(t.mrId)}-section`,
        severity: 'high',
        source: 'merge-request',
        reason: `refinery of ${rig.name} failed to merge ${t.mrId} ${failures} times: ${reason}`,
        rig: rig.name,
        beadId: t.beadId,
        convoyId: t.convoyId,
      });
      await deliver(t, {
        kind: 'rejected',
        feedback: `The refinery could not process this merge request (${failures} attempts): ${reason}`,
      });
    }
  };

  /**
   * Merges `tickets` (queue order) as few gated candidates as bisection needs; every passing probe lands at once.
   * Answers how the first candidate (all of them) fared, for the next batch's size.
   */
  const mergeSection = async (tickets: MergeTicket[]): Promise<BatchVerdict> => {
    let bisection = startBisection(tickets);
    let lastFailure: Extract<SectionOutcome, { kind: 'gates_failed' }> | undefined;
    let verdict: BatchVerdict | undefined;
    for (;;) {
      const step = nextBisectionStep(bisection);
      if (step.kind === 'done') return verdict ?? 'other';
      if (step.kind === 'culprit') {
        await deliver(step.item, lastFailure!);
        bisection = withoutItem(bisection, step.item);
        continue;
      }
      section!.probe = tickets.length > 1 ? step.items.length : undefined;
      setStatus();
      let result: CandidateResult;
      try {
        result = await merger().mergeCandidate({ rig, tickets: step.items, mode: 'merge' });
      } catch (err) {
        await sectionFailed(bisection.pending, err);
        return verdict ?? 'other';
      }
      verdict ??= result.kind === 'merged' ? 'passed' : result.kind === 'gates_failed' ? 'failed' : 'other';
      stats.gateRuns += result.gateRuns;
      if (result.kind === 'merged') {
        const commitOf = new Map(result.merged.map((m) => [m.mrId, m.commit]));
        for (const t of step.items)
          await deliver(t, {
            kind: 'merged',
            commit: commitOf.get(t.mrId) ?? result.commit,
            targetBranch: t.targetBranch,
            ...(result.convoyTold?.includes(t.mrId) ? { convoyTold: true } : {}),
          });
        bisection = afterProbe(bisection, step.items.length, true);
      } else if (result.kind === 'gates_failed') {
        lastFailure = result.outcome;
        bisection = afterProbe(bisection, step.items.length, false);
      } else if (result.kind === 'excluded') {
        const t = step.items.find((i) => i.mrId === result.mrId)!;
        bisection = withoutItem(bisection, t);
        // Behind others in the candidate, a conflict may be with them, and they are not on the target yet: its
        // polecat, sent back now, would merge in a target without them and conflict again. It goes back to the queue
        // (keeping its age and priority) and is built again on the target as this batch leaves it, where, built
        // first, a conflict is its own. (Speculative chains handle such conflicts their own way: speculativeSection.)
        if (result.outcome.kind === 'conflict' && t !== step.items[0] && patched(BATCH_CONFLICT_WAITS)) {
          if (!dropped(t, 'it conflicted behind others in a batch')) {
            log.info('conflict behind others in a batch; trying it again after them', { mrId: t.mrId });
            queue.unshift(t);
          }
        } else await deliver(t, result.outcome);
      } else {
        await sectionFailed(bisection.pending, `unexpected candidate result '${result.kind}' while merging`);
        return verdict;
      }
    }
  };

  /** PR strategy: verify the candidate (conflicts and failing gates come back before anyone reviews), open the PR, move on. */
  const pullRequestSection = async (ticket: MergeTicket) => {
    try {
      const verified = await merger().mergeCandidate({ rig, tickets: [ticket], mode: 'verify' });
      stats.gateRuns += verified.gateRuns;
      if (verified.kind === 'excluded' || verified.kind === 'gates_failed')
        return await deliver(ticket, verified.outcome);
      const opened = await forge().openPullRequest({ rig, ticket });
      if (opened.kind === 'closed') {
        return await deliver(ticket, {
          kind: 'pr_closed',
          prUrl: opened.url,
          feedback: `The pull request for ${ticket.branch} (${opened.url}) was closed without merging.`,
        });
      }
      await deliver(ticket, { kind: 'pr_opened', pr: opened.pr });
    } catch (err) {
      await sectionFailed([ticket], err);
    }
  };

  const usesPullRequest = (t: MergeTicket) => rig.merge === 'pr' && t.targetBranch === rig.branch;
  const rollOver = () =>
    workflowInfo().continueAsNewSuggested ||
    (input.continueAsNewEvery !== undefined && sections >= input.continueAsNewEvery);

  /** A speculative candidate: one MR in the window, gated on the base + every MR ahead of it. */
  interface Candidate {
    ticket: MergeTicket;
    /** Its commit's time (Unix seconds), fixed when it entered the window: rebuilding a chain makes the same commits. */
    at: number;
    /** The running gate activity; undefined when not launched (yet, or again after what it built on changed). */
    scope?: CancellationScope;
    result?: SpeculativeGateResult | { kind: 'error'; error: unknown };
  }
  const speculativeGates = () =>
    proxyActivities<TownQueueActivities>({
      startToCloseTimeout: Math.max(2 * 3_600_000, rig.gates.length * rig.gateTimeout + 600_000),
      heartbeatTimeout: Math.max(rig.policy.heartbeatTimeout, 30_000),
      // A discarded candidate holds its place in the window until its gates have really stopped (or finished).
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: RETRY.merge,
    });
  /** Gate activities launched in this run: part of every candidate's key, so a rebuild never reuses a live tree. */
  let launches = 0;
  /** After this many chains in a row went stale (the target moved under them) the window's MRs go back to the queue. */
  const MAX_STALE = 5;

  /**
   * Speculative execution (Zuul-style), for rigs with `speculation` > 1: up to that many MRs for `targetBranch` are
   * gated at once, MR k on base + MR 1..k−1 while those are still being gated. Results are taken in queue order: a
   * passing prefix lands by compare-and-swap on the base (landChain), so the target only ever moves to a tree that
   * passed, in queue order; a failing MR is sent back and everything behind it is rebuilt without it. Returns once
   * the window is empty and no more MRs are to be taken (paused, rolling over, or none waiting), with no gate running.
   */
  const speculativeSection = async (targetBranch: string) => {
    const items: Candidate[] = [];
    let base: string | undefined;
    let running = 0;
    let changes = 0;
    let stale = 0;
    const eligible = (t: MergeTicket) => t.targetBranch === targetBranch && !usesPullRequest(t);
    /** The queue's next MR, if the window may take it: MRs for another branch or PRs wait for the window to end. */
    const nextToTake = () => {
      if (items.length >= rig.speculation || rig.speculation < 2 || paused || rollOver() || !queue.length)
        return undefined;
      const next = orderQueue(queue, Date.now(), convoySince)[0]!;
      return eligible(next) ? next : undefined;
    };
    const mayTake = () => nextToTake() !== undefined;
    const show = () => {
      sectionTickets = items.map((c) => c.ticket);
      section = { ...section!, mrIds: sectionTickets.map((t) => t.mrId) };
      setStatus();
    };
    /** Stops the candidates from `from` on: what they built on has changed. Their gate runs stop in the background. */
    const discard = (from: number) => {
      for (const c of items.slice(from)) {
        c.scope?.cancel();
        c.scope = undefined;
        c.result = undefined;
      }
    };
    const launch = (i: number, on: string) => {
      const c = items[i]!;
      const chain: ChainLink[] = items.slice(0, i + 1).map((x) => ({ ticket: x.ticket, at: x.at }));
      const key = `${fsSafe(c.ticket.beadId)}-${workflowInfo().runId.slice(0, 8)}-${++launches}`;
      const scope = new CancellationScope();
      c.scope = scope;
      running++;
      scope
        .run(() => speculativeGates().gateSpeculative({ rig, base: on, chain, key }))
        .then(
          (r) => {
            stats.gateRuns += r.gateRuns;
            if (c.scope === scope) c.result = r;
          },
          (error: unknown) => {
            // A discarded candidate's gate was stopped part way: it still ran.
            if (c.scope !== scope) stats.gateRuns += rig.gates.length ? 1 : 0;
            else c.result = { kind: 'error', error };
          },
        )
        .finally(() => {
          running--;
          changes++;
        });
    };
    /** The head left the window without landing: whatever stood behind it was built on it, and is built again. */
    const dropHead = () => {
      items.shift();
      discard(0);
    };

    for (;;) {
      for (let next = nextToTake(); next; next = nextToTake()) {
        queue.splice(
          queue.findIndex((t) => t.mrId === next.mrId && t.headSha === next.headSha),
          1,
        );
        const { score: _score, ...ticket } = next;
        items.push({ ticket, at: Math.floor(Date.now() / 1000) });
      }
      show();
      if (items.length === 0) break;
      if (base === undefined) {
        let tip: string | null;
        try {
          tip = (await merger().targetTip({ rig, targetBranch })).sha;
        } catch (err) {
          await sectionFailed(
            items.splice(0).map((c) => c.ticket),
            err,
          );
          continue;
        }
        if (!tip) {
          for (const c of items.splice(0))
            await deliver(c.ticket, {
              kind: 'rejected',
              feedback: `target branch '${targetBranch}' does not exist in ${rig.repo}`,
            });
          continue;
        }
        base = tip;
      }
      for (const [i, c] of items.entries()) if (!c.scope && !c.result && running < rig.speculation) launch(i, base);

      const head = items[0]!;
      const r = head.result;
      if (!r) {
        const seen = changes;
        await condition(() => changes !== seen || mayTake());
        continue;
      }
      if (r.kind === 'passed') {
        // The longest run of passing candidates from the head lands at once: its last commit holds all of them.
        let last = 0;
        while (items[last + 1]?.result?.kind === 'passed') last++;
        const landing = items.slice(0, last + 1);
        const gated = landing[last]!.result as Extract<SpeculativeGateResult, { kind: 'passed' }>;
        let landed;
        try {
          landed = await merger().landChain({
            rig,
            base,
            chain: landing.map((c) => ({ ticket: c.ticket, at: c.at })),
            candidateSha: gated.candidateSha,
          });
        } catch (err) {
          items.splice(0, landing.length);
          discard(0);
          base = undefined;
          await sectionFailed(
            landing.map((c) => c.ticket),
            err,
          );
          continue;
        }
        if (landed.kind === 'stale') {
          log.warn('speculative chain is stale; rebuilding on the target', { reason: landed.reason });
          discard(0);
          base = undefined;
          if (++stale >= MAX_STALE) {
            stale = 0;
            await sectionFailed(
              items.splice(0).map((c) => c.ticket),
              `target ${targetBranch} kept moving: ${landed.reason}`,
            );
          }
          continue;
        }
        stale = 0;
        const commitOf = new Map(gated.commits.map((m) => [m.mrId, m.commit]));
        items.splice(0, landing.length);
        base = landed.commit;
        for (const c of landing)
          await deliver(c.ticket, {
            kind: 'merged',
            commit: commitOf.get(c.ticket.mrId) ?? landed.commit,
            targetBranch,
          });
      } else if (r.kind === 'landed') {
        // Landed by an earlier attempt whose answer was lost: the chains behind it counted it twice.
        dropHead();
        base = undefined;
        await deliver(head.ticket, { kind: 'merged', commit: r.commit, targetBranch });
      } else if (r.kind === 'gates_failed' || (r.kind === 'excluded' && r.mrId === head.ticket.mrId)) {
        // Everything ahead of it has landed: its own change fails (or cannot be merged). Sent back as today.
        dropHead();
        await deliver(head.ticket, r.outcome);
      } else if (r.kind === 'error') {
        dropHead();
        await sectionFailed([head.ticket], r.error);
      } else {
        // Stale, or an MR ahead of it that has landed reported unmergeable by this build: plan again from the target.
        log.warn('speculative candidate is stale; rebuilding on the target', {
          mrId: head.ticket.mrId,
          result: r.kind,
        });
        discard(0);
        base = undefined;
        if (++stale >= MAX_STALE) {
          stale = 0;
          await sectionFailed(
            items.splice(0).map((c) => c.ticket),
            `speculative candidates kept going stale (${r.kind})`,
          );
        }
      }
    }
    // Nothing may still gate when the section ends: the window's bound holds across sections and continue-as-new.
    await condition(() => running === 0);
  };

  for (;;) {
    setStatus();
    await condition(() => (!paused && queue.length > 0) || rollOver() || (removing && queue.length === 0));
    // A ticket that arrived after the removal was accepted is still merged first: a removed rig leaves no MR behind.
    if (rollOver() || (removing && queue.length === 0)) break;
    const ordered = orderQueue(queue, Date.now(), convoySince);
    const lead = ordered[0]!;
    // Speculative rigs take their MRs into the window themselves; only active with speculation > 1, so histories of
    // rigs without it replay the commands they always ran.
    if (rig.speculation > 1 && !usesPullRequest(lead)) {
      section = { kind: 'speculative', mrIds: [], startedAt: new Date().toISOString() };
      await speculativeSection(lead.targetBranch);
      section = undefined;
      sectionTickets = [];
      sections++;
      continue;
    }
    // Histories from before adaptive batches took up to batchSize every time, and replay the same way.
    const adaptive = !usesPullRequest(lead) && rig.batchSize > 1 && patched(ADAPTIVE_BATCH);
    const taken = usesPullRequest(lead)
      ? [lead]
      : ordered
          .filter((t) => t.targetBranch === lead.targetBranch && !usesPullRequest(t))
          .slice(0, adaptive ? batchLimit : rig.batchSize);
    const takenKeys = new Set(taken.map((t) => `${t.mrId}@${t.headSha}`));
    queue.splice(0, queue.length, ...queue.filter((t) => !takenKeys.has(`${t.mrId}@${t.headSha}`)));
    sectionTickets = taken.map(({ score: _score, ...t }) => t);
    section = {
      kind: usesPullRequest(lead) ? 'pull-request' : taken.length > 1 ? 'batch' : 'merge',
      mrIds: taken.map((t) => t.mrId),
      startedAt: new Date().toISOString(),
    };
    setStatus();
    if (section.kind === 'pull-request') await pullRequestSection(sectionTickets[0]!);
    else {
      const verdict = await mergeSection(sectionTickets);
      if (adaptive) {
        const next = nextBatchLimit(batchLimit, rig.batchSize, verdict);
        if (next !== batchLimit) log.info('batch limit changed', { from: batchLimit, to: next, after: verdict });
        batchLimit = next;
      }
    }
    section = undefined;
    sectionTickets = [];
    sections++;
  }

  await Promise.all(deliveries);
  await condition(allHandlersFinished);
  if (removing && queue.length === 0) {
    setStatus();
    log.info('rig removed', { rig: rig.name });
    return;
  }
  const queuedConvoys = new Set(queue.map((t) => t.convoyId).filter(Boolean));
  const keptConvoys = Object.entries(convoySince).filter(
    ([id], i, all) => queuedConvoys.has(id) || i >= all.length - CONVOYS_KEEP,
  );
  await continueAsNew<typeof refineryWorkflow>({
    rig,
    queue,
    seen: [...seen].slice(-SEEN_KEEP),
    stats,
    recent,
    convoySince: Object.fromEntries(keptConvoys),
    paused,
    continueAsNewEvery: input.continueAsNewEvery,
    maxQueue: input.maxQueue,
    sectionFailures,
    batchLimit,
    ...(undelivered.size ? { undelivered: [...undelivered.values()] } : {}),
    ...(withdrawn.size ? { withdrawn: [...withdrawn] } : {}),
  });
}
