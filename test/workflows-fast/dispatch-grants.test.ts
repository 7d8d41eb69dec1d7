/**
 * Fast tier, how the dispatch gate gives its grants: a run the rig has room for in the answer to its request (no grant
 * at all afterwards); queued runs' grants all that are due at once, from one local activity (no grant signal, and so no
 * acknowledgement to wait for before the next); and a grant to a bead workflow that is gone frees its slot. Real bead, merge-request and dispatch-gate workflows, stubbed activities.
 */
import { Client, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchActivities } from '../../activities/dispatch';
import { createNotifyActivities } from '../../activities/notify';
import type { BeadResult } from '../../domain/bead';
import {
  dispatchGateWorkflowId,
  dispatchStateQuery,
  gateSettingsOf,
  pauseDispatchUpdate,
  resumeDispatchUpdate,
} from '../../domain/dispatch';
import { beadWorkflowId } from '../../domain/ids';
import type { RigConfig } from '../../domain/rig';
import { dispatchGateStart } from '../../domain/starts';
import { beadActivities } from '../helpers/bead-stubs';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

describe.skipIf(skipReason)('dispatch grants (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  /** The bead stubs, with the gate's deliveries counted: how many grants each call carried. */
  const counted = (taskQueue: string, calls: number[]) => {
    const stubs = beadActivities(env, taskQueue, () => 'done', 0, { supervisionCancelled: [], escalations: [] });
    return {
      ...stubs,
      deliverDispatchGrants: (input: Parameters<typeof stubs.deliverDispatchGrants>[0]) => {
        calls.push(input.grants.length);
        return stubs.deliverDispatchGrants(input);
      },
    };
  };

  /** Runs `body` on a worker of those stubs with a plain client; what it returns, and the deliveries' sizes. */
  const withCountedGrants = async <T>(body: (plain: Client, taskQueue: string) => Promise<T>) => {
    const calls: number[] = [];
    const result = await withWorker(
      env,
      (taskQueue) => counted(taskQueue, calls),
      (taskQueue) => body(new Client({ connection: env.connection }), taskQueue),
    );
    return { ...result, calls };
  };
  /** Starts the rig's gate paused, so the runs that ask queue and their grants go out by delivery. */
  const pausedGate = async (plain: Client, taskQueue: string, rig: RigConfig) => {
    const start = dispatchGateStart({ taskQueue, input: { rig: rig.name, settings: gateSettingsOf(rig) } });
    const gate = await plain.workflow.start(start.workflowType, start.options);
    await gate.executeUpdate(pauseDispatchUpdate, { args: [{ reason: 'queue them', by: 'test' }] });
    return gate;
  };
  /** Resumes the gate once `waiting` runs wait in it: all of them are due together. */
  const resumeWhenWaiting = async (gate: WorkflowHandle, waiting: number) => {
    while ((await gate.query(dispatchStateQuery)).waiting.length < waiting)
      await new Promise((resolve) => setTimeout(resolve, 20));
    await gate.executeUpdate(resumeDispatchUpdate, { args: [{ by: 'test' }] });
  };
  /** The gate's state once it has granted `granted` slots and holds none (every run released or found gone). */
  const settled = async (gate: WorkflowHandle, granted: number) => {
    let state = await gate.query(dispatchStateQuery);
    while (state.granted < granted || state.running.length) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      state = await gate.query(dispatchStateQuery);
    }
    return state;
  };
  /** A request for the first run of bead `beadId` on `rig`, as a bead's local activity makes it. */
  const slotRequest = (rig: RigConfig, beadId: string) => ({
    rig: rig.name,
    request: {
      beadId,
      runId: `${beadId}/r1/a1`,
      workflowId: beadWorkflowId(beadId),
      maxPolecats: rig.maxPolecats,
      breakerThreshold: rig.policy.breakerThreshold,
      breakerProbeInterval: rig.policy.breakerProbeInterval,
    },
  });
  /** Starts a bead workflow of the rig for each id; their results once all have ended. */
  const beadResults = async (plain: Client, taskQueue: string, rig: RigConfig, ids: string[]) => {
    const beads = await Promise.all(
      ids.map((id) =>
        plain.workflow.start('beadWorkflow', {
          workflowId: beadWorkflowId(id),
          taskQueue,
          args: [{ bead: { id, title: id }, rig }],
        }),
      ),
    );
    return Promise.all(beads.map(async (b) => (await b.result()) as BeadResult));
  };

  it('delivers every grant that is due in one local activity, without a signal each', async () => {
    const rig = testRig({ name: 'fast-grants-at-once', maxPolecats: 3 });
    const r = await withCountedGrants(async (plain, taskQueue) => {
      // Paused, the gate queues the three runs; resumed, all three are due together.
      const gate = await pausedGate(plain, taskQueue, rig);
      const results = beadResults(plain, taskQueue, rig, ['at-once-1', 'at-once-2', 'at-once-3']);
      await resumeWhenWaiting(gate, 3);
      return { results: await results, events: (await gate.fetchHistory()).events ?? [] };
    });
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed', 'closed']);
    expect(r.calls).toEqual([3]);
    const signalled = r.events.flatMap(
      (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? [],
    );
    expect(signalled).not.toContain('dispatchGrant');
  });

  it('grants a run the rig has room for in the answer to its request: no grant signal, no delivery', async () => {
    const rig = testRig({ name: 'fast-grants-answered', maxPolecats: 2 });
    const r = await withCountedGrants(async (plain, taskQueue) => {
      const results = await beadResults(plain, taskQueue, rig, ['answered-1', 'answered-2']);
      const gate = await plain.workflow.getHandle(dispatchGateWorkflowId(rig.name)).query(dispatchStateQuery);
      const beadEvents = await Promise.all(
        ['answered-1', 'answered-2'].map(
          async (id) => (await plain.workflow.getHandle(beadWorkflowId(id)).fetchHistory()).events ?? [],
        ),
      );
      return { results, gate, beadEvents };
    });
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed']);
    expect(r.gate).toMatchObject({ granted: 2, running: [], waiting: [] });
    expect(r.calls).toEqual([]);
    for (const events of r.beadEvents)
      expect(events.flatMap((e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? [])).not.toContain(
        'dispatchGrant',
      );
  });

  it('asks by signal, and grants by signal, when its worker has no answer wait left', async () => {
    const rig = testRig({ name: 'fast-grants-no-waits', maxPolecats: 1 });
    const r = await withCountedGrants(async (plain, taskQueue) => {
      const answer = await createDispatchActivities({ client: plain, taskQueue, answerWaits: 0 }).requestDispatchSlot(
        slotRequest(rig, 'ghost'),
      );
      const gate = plain.workflow.getHandle(dispatchGateWorkflowId(rig.name));
      await settled(gate, 1);
      const events = (await gate.fetchHistory()).events ?? [];
      return { answer, events };
    });
    // Queued in the answer, and granted by the gate's delivery (to a workflow that is gone: its slot freed).
    expect(r.answer).toEqual({ granted: false, probe: false });
    expect(r.calls).toEqual([1]);
    expect(r.events.flatMap((e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? [])).toEqual([
      'dispatchRequest',
    ]);
    expect(r.events.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes)).toEqual([]);
  });

  it('asks by signal when the gate refuses the update (a gate on code from before the answer)', async () => {
    const rig = testRig({ name: 'fast-grants-old-gate', maxPolecats: 1 });
    // The stand-in below is an escalation: its webhook activity answers "not configured".
    const activities = (taskQueue: string) => ({
      ...counted(taskQueue, []),
      ...createNotifyActivities({ town: taskQueue }),
    });
    const r = await withWorker(env, activities, async (taskQueue) => {
      const plain = new Client({ connection: env.connection });
      // A workflow without the update's handler holds the gate's id, as a gate from before the answer would.
      const old = await plain.workflow.start('escalationWorkflow', {
        workflowId: dispatchGateWorkflowId(rig.name),
        taskQueue,
        args: [{ id: 'stand-in-gate', severity: 'low', reason: 'holds the gate id', source: 'rig' }],
      });
      const answer = await createDispatchActivities({ client: plain, taskQueue }).requestDispatchSlot(
        slotRequest(rig, 'b-old'),
      );
      // The stand-in heard the request by signal (this test server may show the signal a moment after it returned).
      const signalsIn = async () =>
        ((await old.fetchHistory()).events ?? []).flatMap(
          (e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? [],
        );
      let signals = await signalsIn();
      for (let i = 0; i < 50 && !signals.length; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        signals = await signalsIn();
      }
      await old.terminate('test over');
      return { answer, signals };
    });
    expect(r.answer).toEqual({ granted: false, probe: false });
    expect(r.signals).toEqual(['dispatchRequest']);
  });

  it('frees the slot of a grant whose bead workflow is gone', async () => {
    const rig = testRig({ name: 'fast-grants-ghost', maxPolecats: 1 });
    const r = await withCountedGrants(async (plain, taskQueue) => {
      // Paused, so the runs queue and their grants go out by delivery (a rig with room grants in the answer).
      const gate = await pausedGate(plain, taskQueue, rig);
      // A run of a bead workflow that does not exist is first in line for the rig's only slot.
      const answer = await createDispatchActivities({ client: plain, taskQueue }).requestDispatchSlot(
        slotRequest(rig, 'ghost'),
      );
      expect(answer).toEqual({ granted: false, probe: false });
      const results = beadResults(plain, taskQueue, rig, ['grant-1', 'grant-2']);
      await resumeWhenWaiting(gate, 3);
      await results;
      return { results: await results, state: await settled(gate, 3) };
    });
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed']);
    // The ghost's grant, then each bead's: three grants, none left running, the ghost's slot given to a bead.
    expect(r.state).toMatchObject({ granted: 3, running: [], waiting: [] });
    // One delivery each: the ghost's (gone: its slot freed), then each bead's in turn.
    expect(r.calls).toEqual([1, 1, 1]);
  });
});
