/**
 * Fast tier, how the dispatch gate delivers its grants: all that are due at once, from one local activity (no grant
 * signal, and so no acknowledgement to wait for before the next), and a grant to a bead workflow that is gone frees
 * its slot for the next run. Real bead, merge-request and dispatch-gate workflows, stubbed activities.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchActivities } from '../../activities/dispatch';
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
      const start = dispatchGateStart({ taskQueue, input: { rig: rig.name, settings: gateSettingsOf(rig) } });
      const gate = await plain.workflow.start(start.workflowType, start.options);
      await gate.executeUpdate(pauseDispatchUpdate, { args: [{ reason: 'queue them', by: 'test' }] });
      const results = beadResults(plain, taskQueue, rig, ['at-once-1', 'at-once-2', 'at-once-3']);
      while ((await gate.query(dispatchStateQuery)).waiting.length < 3)
        await new Promise((resolve) => setTimeout(resolve, 20));
      await gate.executeUpdate(resumeDispatchUpdate, { args: [{ by: 'test' }] });
      return { results: await results, events: (await gate.fetchHistory()).events ?? [] };
    });
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed', 'closed']);
    expect(r.calls).toEqual([3]);
    const signalled = r.events.flatMap(
      (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? [],
    );
    expect(signalled).not.toContain('dispatchGrant');
  });

  it('frees the slot of a grant whose bead workflow is gone', async () => {
    const rig = testRig({ name: 'fast-grants-ghost', maxPolecats: 1 });
    const r = await withCountedGrants(async (plain, taskQueue) => {
      const gate = plain.workflow.getHandle(dispatchGateWorkflowId(rig.name));
      // A run of a bead workflow that does not exist takes the rig's only slot first.
      await createDispatchActivities({ client: plain, taskQueue }).requestDispatchSlot({
        rig: rig.name,
        request: {
          beadId: 'ghost',
          runId: 'ghost/r1/a1',
          workflowId: beadWorkflowId('ghost'),
          maxPolecats: rig.maxPolecats,
          breakerThreshold: rig.policy.breakerThreshold,
          breakerProbeInterval: rig.policy.breakerProbeInterval,
        },
      });
      const results = await beadResults(plain, taskQueue, rig, ['grant-1', 'grant-2']);
      let state = await gate.query(dispatchStateQuery);
      while (state.running.length || state.granted < 3) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        state = await gate.query(dispatchStateQuery);
      }
      return { results, state };
    });
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed']);
    // The ghost's grant, then each bead's: three grants, none left running, the ghost's slot given to a bead.
    expect(r.state).toMatchObject({ granted: 3, running: [], waiting: [] });
    // One delivery each: the ghost's (gone: its slot freed), then each bead's in turn.
    expect(r.calls).toEqual([1, 1, 1]);
  });
});
