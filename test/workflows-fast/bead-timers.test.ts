/**
 * Fast tier, the bead's timers: a run that stops reporting is stopped at its stall timeout and the bead dispatches
 * the next attempt; failed attempts are spaced by exponential backoff, capped. Real bead, merge request and dispatch
 * gate workflows on the time-skipping test server; agent runs, git and the refinery are stubs, so half an hour of
 * stall and backoff passes in well under a second of wall time.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beadWorkflowId } from '../../domain/ids';
import { beadStateQuery } from '../../domain/messages';
import type { RunPolicy } from '../../domain/rig';
import type { BeadResult } from '../../domain/bead';
import { type Agent, beadActivities, MERGED_COMMIT, type Observed } from '../helpers/bead-stubs';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const MINUTE = 60_000;
const attemptOf = (runId: string) => Number(/\/a(\d+)$/.exec(runId)![1]);

const ms = (iso: string | undefined) => Date.parse(iso!);

describe.skipIf(skipReason)('bead timers (time-skipping)', { timeout: 20_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  const runBead = (id: string, policy: Partial<RunPolicy>, agentFor: (attempt: number) => Agent) => {
    const observed: Observed = { supervisionCancelled: [], escalations: [] };
    return withWorker(
      env,
      (taskQueue) =>
        beadActivities(
          env,
          taskQueue,
          (runId) => agentFor(attemptOf(runId)),
          (policy.stallTimeout ?? 0) + MINUTE,
          observed,
        ),
      async (taskQueue) => {
        const handle = await env.client.workflow.start('beadWorkflow', {
          workflowId: beadWorkflowId(id),
          taskQueue,
          // A rig of its own: the dispatch gate (one per rig) outlives the test, bound to its task queue.
          args: [
            {
              bead: { id, title: `fast ${id}` },
              rig: testRig({ name: id, policy: { breakerThreshold: 100, ...policy } }),
            },
          ],
        });
        const result = (await handle.result()) as BeadResult;
        return { result, state: await handle.query(beadStateQuery), observed };
      },
    );
  };

  it('stops a run that reports nothing for 30 minutes (in under 2 s of wall time) and redispatches the bead', async () => {
    // Skipped time outruns real heartbeats: the heartbeat timeout must not come before the stall it is tested with.
    const policy = {
      stallTimeout: 30 * MINUTE,
      heartbeatTimeout: 120 * MINUTE,
      retryBackoff: 10 * MINUTE,
      maxAttempts: 3,
    };
    const { result, state, observed } = await runBead('fast-stall', policy, (attempt) =>
      attempt === 1 ? 'silent' : 'done',
    );

    expect(result).toMatchObject({ beadId: 'fast-stall', status: 'closed', commit: MERGED_COMMIT });
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['fast-stall/r1/a1', 'stalled'],
      ['fast-stall/r1/a2', 'done'],
    ]);
    expect(observed.supervisionCancelled).toEqual(['fast-stall/r1/a1']);
    const [stalled, redispatched] = state.runs;
    // Workflow time: the stall timeout passed in full (the silent agent's stub lets a minute more pass before the
    // server takes back its hold on time), then the first backoff.
    expect(ms(stalled!.endedAt) - ms(stalled!.startedAt)).toBeGreaterThanOrEqual(30 * MINUTE);
    expect(ms(stalled!.endedAt) - ms(stalled!.startedAt)).toBeLessThan(32 * MINUTE);
    expect(ms(redispatched!.startedAt) - ms(stalled!.endedAt)).toBeGreaterThanOrEqual(10 * MINUTE);
  });

  it('spaces failed attempts by exponential backoff capped at 10 minutes, then fails and escalates once', async () => {
    const policy = { retryBackoff: 4 * MINUTE, maxAttempts: 5 };
    const { result, state, observed } = await runBead('fast-backoff', policy, () => 'unstartable');

    expect(result.status).toBe('failed');
    expect(result.reason).toMatch(/all 5 attempts of round 1 failed/);
    expect(state.runs.map((r) => r.outcome)).toEqual(Array(5).fill('start_failed'));
    const gaps = state.runs.slice(1).map((r, i) => ms(r.startedAt) - ms(state.runs[i]!.endedAt));
    // 4, 8, then capped at 10 (MAX_BACKOFF_MS); each gap is the backoff plus a few workflow tasks' worth of time.
    const minutes = gaps.map((g) => Math.floor(g / MINUTE));
    expect(minutes).toEqual([4, 8, 10, 10]);
    expect(observed.escalations).toEqual(['bead-fast-backoff']);
  });
});
