/**
 * convoy:<id> — a group of beads with dependencies that lands together:
 * (staged → launch) → start every bead whose dependencies have merged, up to maxParallel → beads report back by
 * signal when they end (a merge is reported by the rig's refinery as it lands, ahead of the bead) → when every bead
 * has merged: landed (review-then-land: one landing merge request from `convoy/<id>` to the target first) → or, when
 * a bead fails, its dependents never start, an escalation names it, and the convoy ends `failed`.
 *
 * Beads are independent workflows (not children), so the convoy keeps only a small record per bead and can
 * continue-as-new however many beads it has; a lost report is caught by asking Temporal about running beads.
 *
 * Recovery (docs/operations.md): an operator's retry, skip or resume (`recoverConvoy` update, domain applyRecovery)
 * puts failed beads back to running (their new workflow runs are started from this loop, never from the handler) or
 * counts them done, and releases what they blocked. A convoy that ended `failed` is reopened by a client as a new run
 * of this workflow from its `convoyCheckpoint`. Reports carry the bead's retry number; only the current one counts.
 * These paths add commands only for convoys that were recovered, so histories from before them replay unchanged.
 *
 * Size (over ~300 lines): one workflow function whose start loop, report and recovery handlers and continue-as-new
 * share the convoy's closure state; splitting it is a restructuring of its own, guarded by the convoy histories.
 */
import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  executeChild,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import type { StartedBead } from '../domain/convoy';
import type { MergeOutcome } from '../domain/outcomes';
import { CAPS, capText } from '../domain/caps';
import {
  applyEdit,
  applyRecovery,
  BeadReportMessage,
  CloseRequest,
  ConvoyEdit,
  convoySizeProblem,
  ConvoyRecovery,
  ConvoyWorkflowInput,
  countBeads,
  dependencyMerges,
  describeCounts,
  isTerminalConvoy,
  landingMergeRequestId,
  planConvoy,
  type ConvoyBeadRecord,
  type ConvoyResult,
  type ConvoyStatus,
} from '../domain/convoy';
import { readyNodes, transitiveDependents } from '../domain/dag';
import { escalationIdPart } from '../domain/escalation';
import {
  beadReportSignal,
  closeConvoyUpdate,
  convoyCheckpointQuery,
  convoyStateQuery,
  editConvoyUpdate,
  launchConvoyUpdate,
  recoverConvoyUpdate,
  retryLandingUpdate,
} from '../domain/messages';
import { SA } from '../domain/search-attributes';
import { convoyLandingStart } from '../domain/starts';
import { failureMessage, parseOrReject } from '../domain/validation';
import { mergeRequestWorkflow } from './merge-request';
import { parseSignal, setValidatedUpdate } from './handlers';
import { Failure, RETRY } from '../domain/failures';

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '2m',
  retry: RETRY.convoy,
});

/**
 * Starting beads from a local activity (patched() id below): a marker in the workflow task that took the report, so
 * the dependents of a merged bead start without an activity task and another workflow task (docs/performance.md).
 */
const local = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '2m',
  retry: RETRY.convoy,
});
/** patched() id: startConvoyBeads runs as a local activity. */
const STARTS_BEADS_LOCALLY = 'convoy-starts-beads-locally';

const START_BATCH = 50;
const REASON_CHARS = 2000;

export async function convoyWorkflow(rawInput: ConvoyWorkflowInput): Promise<ConvoyResult> {
  const input = parseOrReject(ConvoyWorkflowInput, rawInput, 'convoy input');
  const options = input.options;
  const now = () => new Date().toISOString();
  const checkpoint =
    'checkpoint' in input
      ? input.checkpoint
      : planConvoy(input.spec as typeof input.spec & { id: string }, input.staged, now());
  const state = checkpoint.state;
  let details = checkpoint.details;
  let capacity = checkpoint.capacity;
  const byBeadId = new Map<string, ConvoyBeadRecord>();
  const byId = new Map<string, ConvoyBeadRecord>();
  const index = () => {
    byBeadId.clear();
    byId.clear();
    for (const b of state.beads) {
      byBeadId.set(b.beadId, b);
      byId.set(b.id, b);
    }
  };
  index();

  /** Bumped by every report and edit: what the main loop waits on. */
  let changes = 0;
  let launchRequested = false;
  let closeRequest: { reason: string; force: boolean } | undefined;
  let landingRetryRequested = false;
  let landingFailed = false;
  let landingInFlight = false;

  const setStatus = (status: ConvoyStatus, waitingFor: string) => {
    if (state.status !== status) upsertSearchAttributes([{ key: SA.status, value: status }]);
    state.status = status;
    state.waitingFor = waitingFor;
    describe();
  };
  const describe = () =>
    setCurrentDetails(`**${state.status}** — ${describeCounts(countBeads(state.beads))}\n\n${state.waitingFor}`);

  const settle = (
    record: ConvoyBeadRecord,
    status: 'closed' | 'failed' | 'cancelled',
    fields: { commit?: string; reason?: string },
  ) => {
    record.status = status;
    record.endedAt = now();
    if (fields.commit) record.commit = fields.commit;
    // Each of up to MAX_CONVOY_BEADS records carries its reason into every continue-as-new: short ones only.
    if (fields.reason) record.reason = capText(fields.reason, CAPS.beadReason);
    changes++;
  };

  // --- messages ---

  setHandler(convoyStateQuery, () => state);
  setHandler(convoyCheckpointQuery, () => ({ checkpoint: { state, details, capacity }, options }));

  /**
   * Reports of beads this run's history has not marked running yet. With the local start, a bead can be started by a
   * workflow task that then does not complete (a continue-as-new refused because this very report arrived meanwhile,
   * a worker lost mid-task): the retried task marks it running and starts it again, finding it `existing`, only after
   * its report came in. Used only for such a bead (startBeads), so a stray report never counts.
   */
  const early = new Map<string, z.output<typeof BeadReportMessage>>();

  const takeReport = (record: ConvoyBeadRecord, report: z.output<typeof BeadReportMessage>) => {
    // After a retry only the new run speaks: a late report of an earlier run is stale.
    if ((report.retry ?? 0) !== (record.retries ?? 0)) return;
    settle(record, report.status, report);
    log.info('bead reported', { beadId: report.beadId, status: report.status });
  };

  setHandler(beadReportSignal, (raw) => {
    const report = parseSignal(BeadReportMessage, raw, 'bead report');
    if (!report) return;
    const record = byBeadId.get(report.beadId);
    if (record?.status === 'pending') early.set(report.beadId, report);
    // Terminal states never change, and only a bead this convoy started can report: duplicates and strays are ignored.
    if (!record || record.status !== 'running') return;
    takeReport(record, report);
  });

  setValidatedUpdate(editConvoyUpdate, {
    schema: ConvoyEdit,
    what: 'convoy edit',
    handler: (edit) => {
      const result = applyEdit(state, details, edit);
      if (!result.ok) throw ApplicationFailure.nonRetryable(result.error, Failure.InvalidEdit);
      state.beads = result.beads;
      details = result.details;
      index();
      changes++;
      describe();
      return state;
    },
    check: (edit) => {
      if (closeRequest)
        throw ApplicationFailure.nonRetryable(`convoy ${state.convoyId} is closing`, Failure.InvalidEdit);
      const result = applyEdit(state, details, edit);
      if (!result.ok) throw ApplicationFailure.nonRetryable(result.error, Failure.InvalidEdit);
      // Here and not in applyEdit: validators do not run on replay, so edits accepted before this check still replay.
      const size = convoySizeProblem({ state: { ...state, beads: result.beads }, details: result.details });
      if (size) throw ApplicationFailure.nonRetryable(size, Failure.InvalidEdit);
    },
  });

  setHandler(
    launchConvoyUpdate,
    async () => {
      launchRequested = true;
      await condition(() => state.status !== 'staged');
      return state;
    },
    {
      validator: () => {
        if (state.status !== 'staged' || launchRequested || closeRequest)
          throw ApplicationFailure.nonRetryable(
            `convoy ${state.convoyId} is not staged (it is ${closeRequest ? 'closing' : state.status})`,
            Failure.NotStaged,
          );
      },
    },
  );

  setValidatedUpdate(closeConvoyUpdate, {
    schema: CloseRequest,
    what: 'close request',
    handler: async (req) => {
      closeRequest ??= { reason: req.reason || 'closed by an operator', force: req.force };
      await condition(() => isTerminalConvoy(state.status));
      return state;
    },
    check: (req) => {
      if (isTerminalConvoy(state.status))
        throw ApplicationFailure.nonRetryable(
          `convoy ${state.convoyId} has already ended (${state.status})`,
          Failure.ConvoyEnded,
        );
      const running = countBeads(state.beads).running;
      if (!req.force && (running > 0 || landingInFlight)) {
        const what =
          running > 0 ? `${running} bead${running === 1 ? '' : 's'} running` : 'its landing merge request in flight';
        throw ApplicationFailure.nonRetryable(
          `convoy ${state.convoyId} has ${what}; close it with --force to stop ${running > 0 ? 'them' : 'it'}`,
          Failure.ConvoyBusy,
        );
      }
    },
  });

  setHandler(
    retryLandingUpdate,
    () => {
      landingRetryRequested = true;
      landingFailed = false;
      return state;
    },
    {
      validator: () => {
        if (!landingFailed || closeRequest)
          throw ApplicationFailure.nonRetryable(
            `convoy ${state.convoyId} has no failed landing to retry (it is ${state.status})`,
            Failure.NothingToRetry,
          );
      },
    },
  );

  setValidatedUpdate(recoverConvoyUpdate, {
    schema: ConvoyRecovery,
    what: 'convoy recovery',
    handler: (recovery) => {
      const result = applyRecovery(state, recovery, now());
      if (!result.ok) throw ApplicationFailure.nonRetryable(result.error, Failure.InvalidRecovery);
      state.beads = result.beads;
      state.stopAllLifted = result.stopAllLifted;
      index();
      changes++;
      describe();
      return state;
    },
    check: (recovery) => {
      if (closeRequest)
        throw ApplicationFailure.nonRetryable(`convoy ${state.convoyId} is closing`, Failure.ConvoyClosing);
      const result = applyRecovery(state, recovery, now());
      if (!result.ok) throw ApplicationFailure.nonRetryable(result.error, Failure.InvalidRecovery);
    },
  });

  // --- steps ---

  const raiseEscalation = async (id: string, reason: string, beadId?: string) => {
    if (state.escalations.includes(id)) return;
    await town.raiseEscalation({
      id,
      severity: 'high',
      source: 'convoy',
      reason,
      rig: state.rig,
      convoyId: state.convoyId,
      beadId,
    });
    state.escalations.push(id);
  };

  /**
   * A failed (or externally cancelled) bead never unblocks its dependents: they become `blocked`, and with
   * `stop-all` so does everything not yet started. Idempotent, so it can run on every turn of the loop.
   */
  const applyFailurePolicy = async () => {
    const broken = state.beads.filter((b) => b.status === 'failed' || b.status === 'cancelled');
    if (broken.length === 0) return;
    for (const failed of broken) {
      const dependents = transitiveDependents(state.beads, failed.id)
        .map((id) => byId.get(id)!)
        .filter((b) => b.status === 'pending');
      for (const d of dependents) {
        d.status = 'blocked';
        d.reason = `depends on '${failed.id}', which ${failed.status === 'failed' ? 'failed' : 'was cancelled'}`;
      }
      if (state.onFailure === 'stop-all' && !state.stopAllLifted?.includes(failed.id)) {
        for (const b of state.beads) {
          if (b.status !== 'pending') continue;
          b.status = 'blocked';
          b.reason = `convoy stopped starting beads after '${failed.id}' ${failed.status} (onFailure: stop-all)`;
        }
      }
      const blocked = state.beads
        .filter((b) => b.status === 'blocked' && b.reason?.includes(`'${failed.id}'`))
        .map((b) => b.id);
      await raiseEscalation(
        // A bead that fails again after a retry raises a new escalation (the first may be acknowledged already).
        `convoy-${escalationIdPart(state.convoyId)}.bead.${escalationIdPart(failed.id)}${failed.retries ? `.retry${failed.retries}` : ''}`,
        `convoy ${state.convoyId}: bead ${failed.id} (${failed.beadId}) ${failed.status}: ${failed.reason ?? 'no reason given'}` +
          (blocked.length ? `\nIt blocks: ${blocked.join(', ')}` : ''),
        failed.beadId,
      );
    }
  };

  const limit = () => Math.min(state.maxParallel ?? Number.MAX_SAFE_INTEGER, capacity ?? Number.MAX_SAFE_INTEGER);
  const merged = (id: string) => byId.get(id)?.status === 'closed';
  const nextBeads = (): ConvoyBeadRecord[] => {
    const slots = limit() - countBeads(state.beads).running;
    if (slots <= 0) return [];
    const order = new Map(state.beads.map((b, i) => [b.id, i] as const));
    return readyNodes(state.beads, (b) => b.status === 'pending', merged)
      .sort((a, b) => a.priority - b.priority || order.get(a.id)! - order.get(b.id)!)
      .slice(0, slots);
  };

  const beadTarget = () => state.convoyBranch ?? state.targetBranch!;

  /** Marks the beads running *before* starting them, so their reports (which may come first) are accepted. */
  const startBeads = async (beads: ConvoyBeadRecord[]) => {
    for (let i = 0; i < beads.length; i += START_BATCH) {
      const batch = beads.slice(i, i + START_BATCH);
      for (const b of batch) {
        b.status = 'running';
        b.startedAt = now();
      }
      let results: StartedBead[];
      const locally = patched(STARTS_BEADS_LOCALLY);
      try {
        // Not cancellable: a start that is under way completes, so a cancel afterwards knows every bead to stop.
        const answer = await CancellationScope.nonCancellable(() =>
          (locally ? local : town).startConvoyBeads({
            convoyId: state.convoyId,
            rig: state.rig,
            targetBranch: beadTarget(),
            beads: batch.map((b) => ({
              id: b.beadId,
              title: b.title,
              priority: b.priority,
              ...(details[b.id] ?? { description: '', acceptance: '' }),
              after: dependencyMerges(b, (id) => byId.get(id)?.commit),
            })),
          }),
        );
        capacity = answer.capacity;
        results = answer.results;
      } catch (err) {
        const reason = `could not start: ${failureMessage(err)}`;
        results = batch.map((b) => ({ beadId: b.beadId, outcome: 'error', error: reason }));
      }
      for (const r of results) {
        const record = byBeadId.get(r.beadId)!;
        delete details[record.id];
        if (r.outcome === 'error' && record.status === 'running') settle(record, 'failed', { reason: r.error });
        const report = early.get(r.beadId);
        early.delete(r.beadId);
        if (locally && report && r.outcome === 'existing' && record.status === 'running') takeReport(record, report);
      }
    }
  };

  /**
   * Starts the new workflow runs of retried beads (already counted running, so their reports are accepted). Only
   * from the loop, so a start never races a reconcile of the same bead.
   */
  const restartBeads = async (beads: ConvoyBeadRecord[]) => {
    for (let i = 0; i < beads.length; i += START_BATCH) {
      const batch = beads.slice(i, i + START_BATCH);
      let results: StartedBead[];
      try {
        results = await CancellationScope.nonCancellable(() =>
          town.restartConvoyBeads({
            convoyId: state.convoyId,
            beads: batch.map((b) => ({ beadId: b.beadId, retry: b.retries!, ...b.restart! })),
          }),
        );
      } catch (err) {
        const reason = `could not start the retry: ${failureMessage(err)}`;
        results = batch.map((b) => ({ beadId: b.beadId, outcome: 'error', error: reason }));
      }
      for (const r of results) {
        const record = byBeadId.get(r.beadId)!;
        delete record.restart;
        if (r.outcome === 'error' && record.status === 'running') settle(record, 'failed', { reason: r.error });
      }
    }
  };

  /** Asks Temporal about running beads directly: catches a report that was never sent. */
  const reconcile = async () => {
    const running = state.beads.filter((b) => b.status === 'running').map((b) => b.beadId);
    if (running.length === 0) return;
    const reports = await town.inspectConvoyBeads({ convoyId: state.convoyId, beadIds: running });
    for (const r of reports) {
      const record = byBeadId.get(r.beadId);
      if (record?.status === 'running') {
        log.warn('bead ended without a report reaching the convoy; using its recorded outcome', {
          beadId: r.beadId,
          status: r.status,
        });
        settle(record, r.status, r);
      }
    }
  };

  /** Stops everything still running (beads, and the landing in flight) and records why. */
  const stopAll = async (why: string) => {
    for (const b of state.beads) {
      if (b.status === 'pending' || b.status === 'blocked') {
        b.status = 'cancelled';
        b.reason = `never started: ${why}`;
      }
      // A retry accepted but not started yet: its bead's workflow is the earlier, closed run; nothing to stop.
      if (b.restart) {
        delete b.restart;
        settle(b, 'cancelled', { reason: `retry never started: ${why}` });
      }
    }
    const running = state.beads.filter((b) => b.status === 'running');
    if (running.length === 0) return;
    setStatus(state.status, `stopping ${running.length} running bead(s): ${why}`);
    await town.cancelConvoyBeads({ convoyId: state.convoyId, beadIds: running.map((b) => b.beadId) });
    const confirmed = await condition(() => countBeads(state.beads).running === 0, options.stopGrace);
    if (!confirmed) await reconcile();
    for (const b of state.beads) {
      if (b.status === 'running')
        settle(b, 'cancelled', {
          reason: `${why} (the bead did not confirm its cancellation within ${options.stopGrace} ms)`,
        });
    }
  };

  const finish = (status: ConvoyStatus, reason?: string): ConvoyResult => {
    state.reason = reason;
    state.endedAt = now();
    setStatus(status, reason ?? status);
    return {
      convoyId: state.convoyId,
      status,
      reason,
      landedCommit: state.landedCommit,
      counts: countBeads(state.beads),
    };
  };

  const close = async (): Promise<ConvoyResult> => {
    const reason = closeRequest!.reason;
    await stopAll(`convoy closed: ${reason}`);
    return finish('closed', `closed by an operator: ${reason}`);
  };

  const shouldContinueAsNew = () =>
    workflowInfo().continueAsNewSuggested ||
    (options.continueAsNewAfterEvents !== undefined &&
      workflowInfo().historyLength >= options.continueAsNewAfterEvents);

  /** review-then-land: one merge request from the convoy branch to the target, gated on the whole. */
  const land = async (): Promise<ConvoyResult> => {
    for (;;) {
      if (closeRequest) return close();
      const round = (state.landing?.round ?? 0) + 1;
      const mrId = landingMergeRequestId(state.convoyId, round);
      state.landing = { round, mrId };
      setStatus('landing', `reading ${state.convoyBranch}`);
      const head = await town.convoyBranchHead({ convoyId: state.convoyId, rig: state.rig });
      state.landing.headSha = head.headSha;
      setStatus(
        'landing',
        `landing merge request ${mrId} (${state.convoyBranch} @ ${head.headSha.slice(0, 10)} → ${state.targetBranch}) is with the refinery`,
      );

      const landingStart = convoyLandingStart(
        {
          mrId,
          bead: {
            id: state.convoyId,
            title: `Land convoy ${state.convoyId}: ${state.title}`.slice(0, 200),
            description: state.description,
            acceptance: '',
            priority: 2,
          },
          rig: head.rig,
          round,
          branch: state.convoyBranch!,
          headSha: head.headSha,
          targetBranch: state.targetBranch!,
          convoyId: state.convoyId,
        },
        state.title,
      );
      let outcome: MergeOutcome | undefined;
      let failure: unknown;
      const scope = new CancellationScope();
      landingInFlight = true;
      const landing = scope
        .run(() =>
          executeChild<typeof mergeRequestWorkflow>(landingStart.workflowType, {
            ...landingStart.options,
            parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
          }),
        )
        .then(
          (o) => void (outcome = o),
          (err: unknown) => void (failure = err),
        );
      await condition(() => outcome !== undefined || failure !== undefined || !!closeRequest?.force);
      if (outcome === undefined && failure === undefined) {
        scope.cancel();
        await landing;
        landingInFlight = false;
        return close();
      }
      landingInFlight = false;
      if (failure !== undefined && isCancellation(failure)) throw failure as Error;
      const result: MergeOutcome = outcome ?? {
        kind: 'rejected',
        feedback: `the landing merge request failed: ${failureMessage(failure)}`,
      };
      state.landing.outcome = result;
      if (result.kind === 'merged') {
        state.landedCommit = result.commit;
        return finish('landed', `landed on ${state.targetBranch} as ${result.commit}`);
      }
      const feedback = 'feedback' in result ? result.feedback : '';
      landingFailed = true;
      await raiseEscalation(
        `convoy-${escalationIdPart(state.convoyId)}.landing.${round}`,
        `convoy ${state.convoyId}: landing merge request ${mrId} was not merged (${result.kind}): ${feedback}`.slice(
          0,
          4000,
        ) +
          `\nFix ${state.convoyBranch} and run \`gt convoy land ${state.convoyId}\`, or end it with \`gt convoy close ${state.convoyId}\`.`,
      );
      setStatus(
        'landing',
        `an operator: the landing was not merged (${result.kind}); \`gt convoy land ${state.convoyId}\` retries it, \`gt convoy close ${state.convoyId}\` ends the convoy`,
      );
      await condition(() => landingRetryRequested || !!closeRequest);
      if (closeRequest) return close();
      landingRetryRequested = false;
    }
  };

  const run = async (): Promise<ConvoyResult> => {
    if (state.status === 'staged') {
      describe();
      await condition(() => launchRequested || !!closeRequest);
      if (closeRequest) return close();
    }
    if (!state.launchedAt) {
      setStatus(
        state.status,
        'preparing: reading the rig' +
          (state.mergeMode === 'review-then-land' ? ' and creating the convoy branch' : ''),
      );
      try {
        const prepared = await town.prepareConvoy({
          convoyId: state.convoyId,
          rig: state.rig,
          mergeMode: state.mergeMode,
        });
        state.targetBranch = prepared.targetBranch;
        state.convoyBranch = prepared.convoyBranch;
        capacity = prepared.capacity;
      } catch (err) {
        if (isCancellation(err)) throw err;
        return finish('failed', `could not launch: ${failureMessage(err)}`);
      }
      state.launchedAt = now();
      setStatus('running', 'starting beads');
    }
    if (state.status === 'landing') return land();

    for (;;) {
      await applyFailurePolicy();
      if (closeRequest) return close();
      const restarts = state.beads.filter((b) => b.restart);
      if (restarts.length) {
        setStatus('running', `retrying ${restarts.map((b) => b.id).join(', ')}`.slice(0, 500));
        await restartBeads(restarts);
        continue;
      }
      const ready = nextBeads();
      if (ready.length) {
        setStatus('running', `starting ${ready.map((b) => b.id).join(', ')}`.slice(0, 500));
        await startBeads(ready);
        continue;
      }
      const counts = countBeads(state.beads);
      if (counts.running === 0) break;
      if (shouldContinueAsNew()) {
        await condition(allHandlersFinished);
        state.continuedAsNew++;
        return continueAsNew<typeof convoyWorkflow>({ checkpoint: { state, details, capacity }, options });
      }
      setStatus('running', `waiting for ${counts.running} running bead(s) to merge`);
      const seen = changes;
      const woke = await condition(
        () => changes !== seen || !!closeRequest || shouldContinueAsNew(),
        options.reconcileEvery,
      );
      if (!woke) await reconcile();
    }

    const counts = countBeads(state.beads);
    if (counts.closed === counts.total) {
      if (state.mergeMode === 'review-then-land') return land();
      const last = [...state.beads]
        .filter((b) => b.endedAt && b.commit)
        .sort((a, b) => a.endedAt!.localeCompare(b.endedAt!))
        .pop();
      state.landedCommit = last?.commit;
      const skipped = state.beads.filter((b) => b.skipped).map((b) => b.id);
      return finish(
        'landed',
        `every bead merged into ${state.targetBranch}${skipped.length ? ` (skipped: ${skipped.join(', ')})` : ''}`.slice(
          0,
          REASON_CHARS,
        ),
      );
    }
    const failed = state.beads.filter((b) => b.status === 'failed' || b.status === 'cancelled').map((b) => b.id);
    const blocked = state.beads.filter((b) => b.status === 'blocked').map((b) => b.id);
    return finish(
      'failed',
      `bead(s) ${failed.join(', ')} did not merge${blocked.length ? `; never started: ${blocked.join(', ')}` : ''}`.slice(
        0,
        REASON_CHARS,
      ),
    );
  };

  try {
    const result = await run();
    await condition(allHandlersFinished);
    return result;
  } catch (err) {
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(async () => {
        await stopAll('convoy cancelled');
        finish('cancelled', 'cancelled by an operator');
      });
    }
    throw err;
  }
}
