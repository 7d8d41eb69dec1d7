/**
 * dispatch:<rig> — who may start an agent on the rig now. A bead asks for a slot before each run (update-with-start
 * from an activity; by signal-with-start before that existed, and still for parallel legs and beyond the worker's
 * bound), and gives it back when the run ends, reporting whether its agent started. An update is answered once the
 * gate's next pass decided it: granted (the run starts, no grant signal follows) or queued (the grant signal comes
 * when the run's turn does), so a rig with room costs no round trip. The gate grants in request order while the rig
 * has capacity, is not paused by an operator, and its circuit breaker is closed. After `breakerThreshold` consecutive
 * start failures the breaker opens: dispatch stops, one escalation is raised, and every `breakerProbeInterval` one
 * waiting run goes through as a probe; a probe that starts (or an operator's `gt rig resume`) closes the breaker again.
 *
 * Capacity and breaker settings are the rig's current ones, whatever bead asks: the gate reads them from the rig's
 * refinery (the one holder of a rig's configuration) when it starts fresh, when `gt rig update` signals a change, and
 * when a request carries a snapshot it has not checked yet (so a lost signal heals with the next bead slung). A
 * bead's own snapshot never sets them, so maxPolecats cannot flip between old and new values while old beads drain.
 * Lowering maxPolecats stops no running agent: no new grant until fewer than the new value run.
 *
 * Size (a little over ~300 lines): the gate's queue, breaker and settings are one state its handlers and loop share;
 * it reads best whole.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { TownQueueActivities } from '../activities';
import {
  DispatchGateInput,
  dispatchGrantSignal,
  DispatchRelease,
  dispatchReleaseSignal,
  DispatchReport,
  dispatchReportSignal,
  type DispatchAnswer,
  DispatchRequest,
  dispatchRequestSignal,
  requestDispatchUpdate,
  dispatchStateQuery,
  gateSettingsOf,
  GateSettings,
  pauseDispatchUpdate,
  PauseRequest,
  resumeDispatchUpdate,
  ResumeRequest,
  rigChangedSignal,
  type Breaker,
  type DispatchGateState,
  type GateSlot,
} from '../domain/dispatch';
import { SA } from '../domain/search-attributes';
import { parseOrReject } from '../domain/validation';
import { parseSignal, setValidatedUpdate } from './handlers';
import { deliverLocally } from './local-delivery';

const town = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20 },
});

/** Reads the rig's current configuration (a query of its refinery): one marker event, no task of its own. */
const local = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 5 },
});

/** patched() id: settings come from the rig's current configuration, never from a request's snapshot. */
const SETTINGS_FROM_RIG = 'dispatch-gate-settings-from-rig';
/**
 * patched() id: the gate's status search attribute is written when it changes, not on every pass of its loop (it
 * stays `open` for almost every pass: 14 of 15 upserts in a recorded gate's history changed nothing).
 */
const STATUS_ON_CHANGE = 'dispatch-gate-status-on-change';
/**
 * patched() id: the grants waiting to go out are delivered by one local activity, not a signal each sent after the
 * last one's acknowledgement. Asked as a run starts, before any local activity of its first workflow task.
 */
const GRANTS_LOCALLY = 'dispatch-gate-grants-locally';
/** Distinct request snapshots checked against the rig per run of the gate: one read each, at most this many kept. */
const SNAPSHOTS_KEEP = 100;

/** How long to remember released/reported run ids, so a late duplicate signal can't take or count a slot again. */
const MEMORY = 2000;
/** While runs wait for capacity, holders whose bead workflow has closed (terminated by hand) are reaped this often. */
const REAP_INTERVAL_MS = 300_000;

export async function dispatchGateWorkflow(rawInput: DispatchGateInput): Promise<void> {
  const input = parseOrReject(DispatchGateInput, rawInput, 'dispatch gate input');
  const carried = input.carried;
  let settings = input.settings;
  let paused = carried?.paused;
  const breaker: Breaker = carried?.breaker ?? { state: 'closed', consecutiveFailures: 0, trips: 0 };
  const running: GateSlot[] = carried?.running ?? [];
  const waiting: GateSlot[] = carried?.waiting ?? [];
  const released = new Set(carried?.released ?? []);
  const reported = new Set(carried?.reported ?? []);
  let granted = carried?.granted ?? 0;
  const generation = carried?.generation ?? 1;
  /** Grants decided by handlers or the loop, delivered (by signal) from the loop. */
  const outbox: { slot: GateSlot; probe: boolean }[] = [];
  /** Requests asked by update, answered by the pass that decides them (a repeat of a run may ask twice). */
  const asks: { runId: string; answer?: DispatchAnswer }[] = [];
  /** Set once the loop has ended: a request asked after it is answered queued and carried to the next run. */
  let closing = false;
  const escalationsDue: number[] = [];
  let dirty = true;
  let lastReap = Date.now();
  const settingsFromRig = patched(SETTINGS_FROM_RIG);
  const grantsLocally = patched(GRANTS_LOCALLY);
  /** The rig's configuration is to be read before the next grant: a fresh gate's start args may be a bead's snapshot. */
  let rigReadDue = settingsFromRig && !carried;
  const checkedSnapshots = new Set<string>();

  const remember = (set: Set<string>, runId: string) => {
    set.add(runId);
    if (set.size > MEMORY) set.delete(set.values().next().value!);
  };
  const now = () => new Date().toISOString();
  const state = (): DispatchGateState => ({
    rig: input.rig,
    settings,
    paused,
    breaker,
    running,
    waiting,
    granted,
    generation,
  });
  const isKnown = (runId: string) => running.some((s) => s.runId === runId) || waiting.some((s) => s.runId === runId);

  setHandler(dispatchStateQuery, state);
  /** Takes a request into the queue: returns the slot a repeated request of a holder already has. */
  const takeRequest = (r: ReturnType<typeof DispatchRequest.parse>): GateSlot | undefined => {
    const snapshot = gateSettingsOf({ maxPolecats: r.maxPolecats, policy: r });
    if (!settingsFromRig) settings = snapshot;
    else {
      // A bead slung under other settings: the rig may have changed without the gate hearing it (a lost signal).
      const key = JSON.stringify(snapshot);
      if (key !== JSON.stringify(settings) && !checkedSnapshots.has(key)) {
        checkedSnapshots.add(key);
        if (checkedSnapshots.size > SNAPSHOTS_KEEP) checkedSnapshots.delete(checkedSnapshots.values().next().value!);
        rigReadDue = true;
      }
    }
    dirty = true;
    const holding = running.find((s) => s.runId === r.runId);
    if (!holding && !released.has(r.runId) && !isKnown(r.runId))
      waiting.push({ beadId: r.beadId, runId: r.runId, workflowId: r.workflowId, since: now() });
    return holding;
  };
  setHandler(dispatchRequestSignal, (raw) => {
    const r = parseSignal(DispatchRequest, raw, 'dispatch request');
    if (!r) return;
    const holding = takeRequest(r);
    // A repeated request of a run that already holds a slot: the grant may have been lost, send it again.
    if (holding) outbox.push({ slot: holding, probe: breaker.probeRunId === r.runId });
  });
  setValidatedUpdate(requestDispatchUpdate, {
    schema: DispatchRequest,
    what: 'dispatch request',
    handler: async (r) => {
      const holding = takeRequest(r);
      // A repeat (a retried local activity): the holder's answer again.
      if (holding) return { granted: true, probe: breaker.probeRunId === r.runId };
      if (closing || !waiting.some((s) => s.runId === r.runId)) return { granted: false, probe: false };
      const ask: (typeof asks)[number] = { runId: r.runId };
      asks.push(ask);
      await condition(() => ask.answer !== undefined);
      asks.splice(asks.indexOf(ask), 1);
      return ask.answer!;
    },
  });
  setHandler(dispatchReleaseSignal, (raw) => {
    const release = parseSignal(DispatchRelease, raw, 'dispatch release');
    if (!release) return;
    const { runId } = release;
    remember(released, runId);
    for (const list of [running, waiting]) {
      const i = list.findIndex((s) => s.runId === runId);
      if (i >= 0) list.splice(i, 1);
    }
    // A probe that ended without saying whether it started proves nothing: the breaker stays open.
    if (breaker.probeRunId === runId && breaker.state === 'half_open')
      Object.assign(breaker, { state: 'open', probeRunId: undefined });
    dirty = true;
  });
  setHandler(dispatchReportSignal, (raw) => {
    const r = parseSignal(DispatchReport, raw, 'dispatch report');
    if (!r || reported.has(r.runId)) return;
    remember(reported, r.runId);
    if (r.started) {
      if (breaker.state !== 'closed')
        log.info('dispatch breaker closed: an agent started', { rig: input.rig, runId: r.runId });
      Object.assign(breaker, { state: 'closed', consecutiveFailures: 0, probeRunId: undefined, openedAt: undefined });
    } else {
      breaker.consecutiveFailures++;
      breaker.lastFailure = `${r.runId}: ${r.reason}`;
      if (breaker.state === 'half_open') {
        Object.assign(breaker, { state: 'open', openedAt: Date.now(), probeRunId: undefined });
      } else if (breaker.state === 'closed' && breaker.consecutiveFailures >= settings.breakerThreshold) {
        Object.assign(breaker, { state: 'open', openedAt: Date.now(), trips: breaker.trips + 1 });
        escalationsDue.push(breaker.trips);
        log.warn('dispatch breaker opened', {
          rig: input.rig,
          failures: breaker.consecutiveFailures,
          last: breaker.lastFailure,
        });
      }
    }
    dirty = true;
  });
  setHandler(rigChangedSignal, () => {
    rigReadDue = true;
    dirty = true;
  });
  setValidatedUpdate(pauseDispatchUpdate, {
    schema: PauseRequest,
    what: 'pause request',
    handler: (req) => {
      paused = { reason: req.reason, by: req.by, since: now() };
      dirty = true;
      return state();
    },
  });
  setValidatedUpdate(resumeDispatchUpdate, {
    schema: ResumeRequest,
    what: 'resume request',
    handler: (req) => {
      if (paused || breaker.state !== 'closed')
        log.info('dispatch resumed by an operator', { rig: input.rig, by: req.by });
      paused = undefined;
      Object.assign(breaker, { state: 'closed', consecutiveFailures: 0, probeRunId: undefined, openedAt: undefined });
      dirty = true;
      return state();
    },
  });

  const probeDueAt = () =>
    breaker.state === 'open' && breaker.openedAt !== undefined
      ? breaker.openedAt + settings.breakerProbeInterval
      : undefined;

  /** A slot granted: in the answer to its requests asked by update and still open, else by signal from the outbox. */
  const give = (slot: GateSlot, probe: boolean) => {
    const open = asks.filter((a) => a.runId === slot.runId && !a.answer);
    for (const a of open) a.answer = { granted: true, probe };
    if (open.length) granted++;
    else outbox.push({ slot, probe });
  };
  /** Requests the last pass did not grant are answered queued: their grants go out by signal. */
  const answerQueued = () => {
    for (const a of asks) a.answer ??= { granted: false, probe: false };
  };

  /** Moves waiting runs to running as far as capacity, pause and breaker allow. */
  const grant = () => {
    if (paused) return;
    while (waiting.length && running.length < settings.maxPolecats) {
      if (breaker.state === 'closed') {
        const slot = waiting.shift()!;
        running.push(slot);
        give(slot, false);
        continue;
      }
      const due = probeDueAt();
      if (due !== undefined && Date.now() >= due) {
        const slot = waiting.shift()!;
        running.push(slot);
        Object.assign(breaker, { state: 'half_open', probeRunId: slot.runId });
        give(slot, true);
      }
      return;
    }
  };

  /** The status the gate's search attribute holds: as its start (or continue-as-new) set it, then as upserted. */
  let shownStatus = workflowInfo().typedSearchAttributes.get(SA.status);
  const describe = () => {
    const why = paused
      ? `**paused** by ${paused.by}: ${paused.reason}`
      : breaker.state !== 'closed'
        ? `**breaker ${breaker.state}** after ${breaker.consecutiveFailures} start failures`
        : 'open';
    setCurrentDetails(`${why}; ${running.length}/${settings.maxPolecats} running, ${waiting.length} waiting`);
    const status = paused ? 'paused' : breaker.state === 'closed' ? 'open' : `breaker_${breaker.state}`;
    if (patched(STATUS_ON_CHANGE) && status === shownStatus) return;
    upsertSearchAttributes([{ key: SA.status, value: status }]);
    shownStatus = status;
  };

  const continueAsNewDue = () =>
    workflowInfo().continueAsNewSuggested || workflowInfo().historyLength >= input.historyLimit;

  /** The bead workflow is gone (terminated by hand): its slot is free again. */
  const dropGrant = (runId: string, error: string) => {
    log.warn('dropping grant for a workflow that no longer exists', { runId, error });
    const i = running.findIndex((s) => s.runId === runId);
    if (i >= 0) running.splice(i, 1);
    remember(released, runId);
    dirty = true;
  };
  const deliverGrants = async () => {
    if (grantsLocally && outbox.length) {
      const batch = outbox.splice(0);
      try {
        const { gone } = await deliverLocally.deliverDispatchGrants.executeWithOptions(
          { summary: `grant ${batch.length} dispatch slot${batch.length === 1 ? '' : 's'}` },
          [{ grants: batch.map(({ slot, probe }) => ({ workflowId: slot.workflowId, runId: slot.runId, probe })) }],
        );
        granted += batch.length;
        for (const runId of gone) dropGrant(runId, 'workflow not found');
        return;
      } catch (err) {
        log.warn('could not deliver grants at once; signalling them one by one', { error: String(err) });
        outbox.unshift(...batch);
      }
    }
    while (outbox.length) {
      const { slot, probe } = outbox.shift()!;
      granted++;
      try {
        await getExternalWorkflowHandle(slot.workflowId).signal(dispatchGrantSignal, { runId: slot.runId, probe });
      } catch (err) {
        dropGrant(slot.runId, String(err));
      }
    }
  };

  /** Takes the rig's current gate settings; an unreadable or removed rig leaves the settings as they are. */
  const readRig = async () => {
    rigReadDue = false;
    try {
      const rig = await local.currentRigConfig({ rig: input.rig });
      const next = rig && GateSettings.safeParse(gateSettingsOf(rig));
      if (next?.success) {
        if (JSON.stringify(next.data) !== JSON.stringify(settings))
          log.info('dispatch settings follow the rig', { rig: input.rig, from: settings, to: next.data });
        settings = next.data;
      }
    } catch (err) {
      log.warn('could not read the rig configuration; keeping the current settings', {
        rig: input.rig,
        error: String(err),
      });
    }
  };

  while (!continueAsNewDue()) {
    dirty = false;
    if (rigReadDue) await readRig();
    grant();
    answerQueued();
    await deliverGrants();
    while (escalationsDue.length) {
      const trip = escalationsDue.shift()!;
      await town.raiseEscalation({
        id: `rig-${input.rig}-breaker-${trip}`,
        severity: 'critical',
        source: 'rig',
        rig: input.rig,
        reason: `dispatch on rig ${input.rig} is paused: ${breaker.consecutiveFailures} agent starts failed in a row (last: ${breaker.lastFailure ?? 'unknown'}). Fix the cause, then \`gt rig resume ${input.rig}\` (a probe run retries every ${settings.breakerProbeInterval} ms).`,
      });
    }
    if (waiting.length && running.length >= settings.maxPolecats && Date.now() - lastReap >= REAP_INTERVAL_MS) {
      lastReap = Date.now();
      const closed = new Set(await town.closedWorkflows({ workflowIds: running.map((s) => s.workflowId) }));
      for (const s of running.filter((r) => closed.has(r.workflowId))) {
        running.splice(running.indexOf(s), 1);
        remember(released, s.runId);
        dirty = true;
      }
    }
    describe();
    if (dirty) continue;
    const due = probeDueAt();
    const waits = [
      due !== undefined && waiting.length && !paused ? Math.max(due - Date.now(), 1) : undefined,
      waiting.length ? REAP_INTERVAL_MS : undefined,
    ].filter((v): v is number => v !== undefined);
    const woke = () => dirty || continueAsNewDue();
    if (waits.length) await condition(woke, Math.min(...waits));
    else await condition(woke);
  }

  closing = true;
  answerQueued();
  await condition(allHandlersFinished);
  await deliverGrants();
  await continueAsNew<typeof dispatchGateWorkflow>({
    rig: input.rig,
    settings,
    historyLimit: input.historyLimit,
    carried: {
      paused,
      breaker,
      running,
      waiting,
      granted,
      generation: generation + 1,
      released: [...released],
      reported: [...reported],
    },
  });
}
