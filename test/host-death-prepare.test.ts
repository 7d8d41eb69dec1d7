/**
 * Found by the chaos soak: a host killed while it prepared a run held its bead until the activity's ten-minute
 * start-to-close. The activities that prepare a run (launchRun) or import its branch now heartbeat while they work
 * (activities/heartbeat.ts) and are scheduled with the rig's heartbeat timeout, so a dead host costs one heartbeat
 * timeout. Checked here on both sides: the real workflow's schedule (from a real bead's history) and the heartbeats.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { whileHeartbeating } from '../activities/heartbeat';
import { createRepo } from './helpers/repo';
import { FAST_POLICY, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('a host dying while it prepares a run', () => {
  it('schedules preparing with the rig’s heartbeat timeout', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'hb-prepare', repo: repo.origin });
    const { handle } = await t.town.sling('hb-prepare', { id: 'b-hb-prepare', title: 'Prepared under heartbeat' });
    expect((await handle.result()).status).toBe('closed');
    const history = await handle.fetchHistory();
    const scheduled = (history.events ?? []).flatMap((e) => e.activityTaskScheduledEventAttributes ?? []);
    // launchRun prepares the run and starts its agent in one activity (histories from before scheduled prepareRun).
    // Its branch was published by the supervision, which heartbeats throughout; a workflow's own publishBranch has
    // the same heartbeat timeout (test/publish-at-exit.test.ts).
    const launch = scheduled.filter((a) => a.activityType?.name === 'launchRun');
    expect(launch).toHaveLength(1);
    expect(Number(launch[0]!.heartbeatTimeout!.seconds)).toBe(FAST_POLICY.heartbeatTimeout! / 1000);
  });

  it('heartbeats while the work runs, at a third of the heartbeat timeout', async () => {
    const { result, beats } = await heartbeatsOf(300, 550);
    expect(result).toBe('done');
    // One per 100 ms of work (none at its start); none after it ended.
    expect(beats.length).toBeGreaterThanOrEqual(3);
    const after = beats.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(beats.length).toBe(after);
  });

  it('sends none for work shorter than a third of the heartbeat timeout (the server counts it from the start)', async () => {
    const { result, beats } = await heartbeatsOf(3_000, 200);
    expect(result).toBe('done');
    expect(beats).toEqual([]);
  });
});

/** Runs `workMs` of work under whileHeartbeating in an activity with that heartbeat timeout; the beats it sent. */
async function heartbeatsOf(heartbeatTimeoutMs: number, workMs: number): Promise<{ result: string; beats: unknown[] }> {
  const env = new MockActivityEnvironment({ heartbeatTimeoutMs });
  const beats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => beats.push(d));
  const result = await env.run((): Promise<string> =>
    whileHeartbeating('working', () => new Promise<string>((resolve) => setTimeout(() => resolve('done'), workMs))),
  );
  return { result, beats };
}
