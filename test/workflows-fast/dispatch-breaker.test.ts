/**
 * Fast tier, the dispatch gate's circuit breaker: after `breakerThreshold` start failures in a row dispatch stops
 * and one escalation is raised; every `breakerProbeInterval` one waiting run goes through as a probe; a probe that
 * fails keeps the breaker open (and restarts the interval), one that starts closes it. Real bead, merge-request and
 * dispatch-gate workflows on the time-skipping test server with stubbed activities: two half-hour probe intervals
 * pass in a few seconds of wall time.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DispatchGateState, dispatchGateWorkflowId, dispatchStateQuery } from '../../domain/dispatch';
import { beadWorkflowId } from '../../domain/ids';
import { beadStateQuery } from '../../domain/messages';
import type { BeadResult } from '../../domain/bead';
import { type Agent, beadActivities, type Observed } from '../helpers/bead-stubs';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const MINUTE = 60_000;
const PROBE_INTERVAL = 30 * MINUTE;

describe.skipIf(skipReason)('dispatch breaker probes (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('opens after two start failures, lets one probe through per interval, and closes when a probe starts', async () => {
    const rig = testRig({
      name: 'fast-brk',
      policy: { maxAttempts: 1, maxRounds: 1, breakerThreshold: 2, breakerProbeInterval: PROBE_INTERVAL },
    });
    // The runtime is broken until the fourth bead: its run is the probe that starts.
    const agentFor = (runId: string): Agent => (runId.startsWith('brk-4/') ? 'done' : 'unstartable');
    const observed: Observed = { supervisionCancelled: [], escalations: [] };

    const r = await withWorker(
      env,
      (taskQueue) => beadActivities(env, taskQueue, agentFor, 0, observed),
      async (taskQueue) => {
        const plain = new Client({ connection: env.connection });
        const gate = plain.workflow.getHandle(dispatchGateWorkflowId(rig.name));
        /**
         * Slings a bead, lets `advance` of workflow time pass, and waits for the bead's result. Time is moved on
         * explicitly: an idle gate's only timer is the test server's default run timeout (ten years), which a
         * result() that skips time would reach in the moment between the bead's end and taking back the hold.
         */
        const sling = async (id: string, advance = 0) => {
          const handle = await plain.workflow.start('beadWorkflow', {
            workflowId: beadWorkflowId(id),
            taskQueue,
            args: [{ bead: { id, title: id }, rig }],
          });
          if (advance) await env.sleep(advance);
          const result = (await handle.result()) as BeadResult;
          return { result, state: await handle.query(beadStateQuery) };
        };
        /** The gate once it has taken in the reports signalled so far (they reach it after the bead ended). */
        const gateWhen = async (ready: (s: DispatchGateState) => boolean) => {
          for (;;) {
            const s = await gate.query(dispatchStateQuery);
            if (ready(s)) return s;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        };
        const b1 = await sling('brk-1');
        const b2 = await sling('brk-2');
        const opened = await gateWhen((s) => s.breaker.consecutiveFailures === 2);
        // Still broken: after a full interval the third bead's run goes through as a probe, fails, and the breaker stays open.
        const b3 = await sling('brk-3', PROBE_INTERVAL + MINUTE);
        const reopened = await gateWhen((s) => s.breaker.consecutiveFailures === 3 && s.running.length === 0);
        const b4 = await sling('brk-4', PROBE_INTERVAL + MINUTE);
        const closed = await gateWhen((s) => s.running.length === 0);
        // Every GtStatus the gate wrote, in order (its start set "open").
        const statuses = (await gate.fetchHistory()).events!.flatMap((e) => {
          const field = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.GtStatus;
          return field?.data ? [JSON.parse(new TextDecoder().decode(field.data)) as string] : [];
        });
        return { b1, b2, b3, b4, opened, reopened, closed, statuses };
      },
    );

    for (const b of [r.b1, r.b2, r.b3])
      expect(b.result).toMatchObject({
        status: 'failed',
        reason: expect.stringMatching(/could not be started: the runtime refused the agent/) as string,
      });
    expect(r.opened.breaker).toMatchObject({ state: 'open', consecutiveFailures: 2, trips: 1 });
    expect(r.reopened.breaker).toMatchObject({ state: 'open', consecutiveFailures: 3, trips: 1 });
    // A probe fires only when the interval since the breaker (re)opened has passed, in workflow time.
    expect(r.reopened.breaker.openedAt! - r.opened.breaker.openedAt!).toBeGreaterThanOrEqual(PROBE_INTERVAL);
    expect(r.b4.result.status).toBe('closed');
    expect(Date.parse(r.b4.state.runs[0]!.startedAt) - r.reopened.breaker.openedAt!).toBeGreaterThanOrEqual(
      PROBE_INTERVAL,
    );
    expect(r.closed.breaker).toMatchObject({ state: 'closed', consecutiveFailures: 0, trips: 1 });
    expect(r.closed.running).toEqual([]);
    // The search attribute follows the breaker, written only when it changes (the loop passes many more times).
    expect(r.statuses).toEqual(['breaker_open', 'breaker_half_open', 'breaker_open', 'breaker_half_open', 'open']);
    // One escalation for the one trip; the failed beads escalate for themselves.
    expect(observed.escalations.filter((id) => id.startsWith('rig-'))).toEqual(['rig-fast-brk-breaker-1']);
  });
});
