/**
 * A bead a convoy starts asks the dispatch gate from its first run's launch (launchRunWhenGranted), on the host that
 * started it, beside the worktree's preparation: its first workflow task runs no local activity and waits for no
 * update (docs/performance.md). The convoy's worker, which decides that task (the eager start), launches the run
 * ahead of it, and the bead's launch takes that launch (activities/launch-ahead.ts). When the gate queues the run, the
 * launch starts nothing; the grant comes by signal and the bead launches the run then, never beside the run that holds
 * the slot. Concurrency is read from the agents' own start/end marks, the path from the bead's history, which then
 * replays. Real server, real git, real agent processes.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ConvoyResult } from '../domain/convoy';
import { writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { patchIds } from './helpers/time-skipping';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

type History = temporal.api.history.v1.IHistory;

/** The agents' marks, in order: `start <run>` and `end <run>` (test/agents/run-capacity.sh). */
const marks = (dir: string) =>
  existsSync(join(dir, 'events')) ? readFileSync(join(dir, 'events'), 'utf8').trim().split('\n').filter(Boolean) : [];
const release = (dir: string, run: string) => writeFileSync(join(dir, `release-${run.replaceAll('/', '_')}`), '');

/** A history's activities in the order scheduled, each with its result (decoded) once it completed. */
function activities(history: History) {
  const events = history.events ?? [];
  return events.flatMap((e) => {
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (!scheduled) return [];
    const completed = events.find(
      (c) => c.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() === e.eventId?.toString(),
    )?.activityTaskCompletedEventAttributes;
    const payload = completed?.result?.payloads?.[0];
    return [{ type: scheduled.activityType?.name, result: payload && defaultPayloadConverter.fromPayload(payload) }];
  });
}

/** The local activities a history ran, by type (their markers). */
const localActivities = (history: History) =>
  (history.events ?? []).flatMap((e) => {
    const data = e.markerRecordedEventAttributes?.details?.['data']?.payloads?.[0]?.data;
    return data ? [(JSON.parse(Buffer.from(data).toString()) as { activity_type: string }).activity_type] : [];
  });

describe('a convoy bead asking the dispatch gate as its run launches', () => {
  it('is granted in the launch begun as the convoy started it, asked once, with no local activity in its first task', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'ask-granted', repo: repo.origin, agent: agentScript('convoy-instant') });
    const spec = writeSpec({
      id: 'askg',
      title: 'Asks in launch',
      rig: 'ask-granted',
      // The second's first run starts from its dependency's merge (`targetHas`): its launch input as its bead builds it.
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
      ],
    });
    const run = await runGt(['convoy', 'start', spec, '--wait'], t.cliEnv(), 120_000);
    expect(run.code, run.stderr).toBe(0);

    for (const bead of ['a', 'b']) {
      const history = await t.client.workflow.getHandle(`bead:askg-${bead}`).fetchHistory();
      // One patch marker, the baseline's, stands for the change too (workflows/patches.ts).
      const patches = patchIds(history).join(' ');
      expect(patches).toContain('bead-baseline-2026-12-d');
      expect(patches).not.toContain('bead-asks-in-launch');
      expect(localActivities(history)).toEqual([]);
      const ran = activities(history);
      expect(ran.map((a) => a.type)).toEqual(['launchRunWhenGranted', 'superviseAgentRun']);
      // Launched by the convoy's worker as it started the bead (`launchedAhead`), which asked the gate itself; the
      // bead's launch took it.
      expect(ran[0]!.result).toMatchObject({ started: { adopted: false }, reported: true, launchedAhead: true });
      expect(ran[0]!.result).not.toHaveProperty('askedAhead');
    }
    // Asked once per bead.
    const gateHistory = await t.client.workflow.getHandle('dispatch:ask-granted').fetchHistory();
    const updates = (gateHistory.events ?? []).flatMap(
      (e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name ?? [],
    );
    expect(updates).toEqual(['requestDispatch', 'requestDispatch']);
    // The gate granted it and was given the slot back as the agent exited: nothing holds or waits for a slot.
    await eventually(
      async () => {
        const gate = await t.town.dispatchState('ask-granted');
        return gate.granted === 2 && gate.running.length === 0 && gate.waiting.length === 0;
      },
      30_000,
      'the gate to have granted two slots and taken them back',
    );
  });

  it('starts nothing while the gate queues it, and launches once granted, never beside the holder', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-ask-queued-'));
    await t.addRig({
      name: 'ask-queued',
      repo: repo.origin,
      agent: agentScript('run-capacity'),
      maxPolecats: 1,
      env: { TEST_DIR: dir },
    });
    // A bead slung on its own holds the rig's one slot.
    const holder = await t.town.sling('ask-queued', { id: 'askq-holder', title: 'holds the slot' });
    await eventually(() => marks(dir).includes('start askq-holder/r1/a1'), 60_000, 'the holder started');

    const spec = writeSpec({
      id: 'askq',
      title: 'Queued in launch',
      rig: 'ask-queued',
      beads: [{ id: 'b', title: 'B' }],
    });
    const started = await runGt(['convoy', 'start', spec], t.cliEnv(), 60_000);
    expect(started.code, started.stderr).toBe(0);
    const bead = t.client.workflow.getHandle('bead:askq-b');
    // Its launch asked, was queued and returned without starting the agent.
    await eventually(
      async () => activities(await bead.fetchHistory()).some((a) => a.type === 'launchRunWhenGranted' && a.result),
      60_000,
      'the launch answered',
    );
    expect(activities(await bead.fetchHistory())[0]).toEqual({
      type: 'launchRunWhenGranted',
      result: { queued: true, launchedAhead: true },
    });
    expect((await t.town.dispatchState('ask-queued')).waiting.map((s) => s.runId)).toEqual(['askq-b/r1/a1']);
    expect(await t.town.beadState('askq-b')).toMatchObject({ status: 'open' });
    expect(marks(dir)).toEqual(['start askq-holder/r1/a1']);

    release(dir, 'askq-holder/r1/a1');
    expect((await holder.handle.result()).status).toBe('closed');
    await eventually(() => marks(dir).includes('start askq-b/r1/a1'), 60_000, 'the queued bead started once granted');
    release(dir, 'askq-b/r1/a1');
    const result = (await t.client.workflow.getHandle('convoy:askq').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { total: 1, closed: 1 } });

    // One agent at a time: the queued bead's started after the holder's ended.
    expect(marks(dir)).toEqual([
      'start askq-holder/r1/a1',
      'end askq-holder/r1/a1',
      'start askq-b/r1/a1',
      'end askq-b/r1/a1',
    ]);
    // Launched as any granted run once the grant came: prepared again, from its target as it was then.
    const ran = activities(await bead.fetchHistory()).map((a) => a.type);
    expect(ran).toEqual(['launchRunWhenGranted', 'launchRun', 'superviseAgentRun']);
    expect((await t.town.beadState('askq-b')).runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['askq-b/r1/a1', 'done'],
    ]);
    // The queued path replays as it ran (test/histories/bead-queued-in-launch.json keeps one for later code).
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundlePath') } },
      await bead.fetchHistory(),
    );
  });
});
