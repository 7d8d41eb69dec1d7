/**
 * A run's branch is published by its host's supervision as the agent exits after a gt done that host's gateway saw
 * accepted (host/done-runs.ts), which then hands the merge request's ticket to the refinery too, and by its workflow's
 * publishBranch otherwise; a branch the refinery merged before that import (a ticket another worker's supervision
 * handed over unheard) is taken as handed in. Real server, git, processes, gateways.
 */
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintRunToken } from '../agents/run-token';
import { EXIT_GRACE_MS } from '../domain/bead';
import { gatewaySecret, paths } from '../host/home';
import { startOtherWorker } from './helpers/other-worker';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, FAST_POLICY, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
/** Another worker, as far as the bead's host can tell: what its gateway sees accepted, the host never hears of. */
let other: Awaited<ReturnType<typeof startOtherWorker>>;
beforeAll(async () => {
  t = await startTestTown();
  other = await startOtherWorker(t.client, t.gtHome);
});
afterAll(async () => {
  await other?.close();
  await t?.stop();
});

const attributes = (events: proto.temporal.api.history.v1.IHistoryEvent[]) => ({
  scheduled: events.flatMap((e) => e.activityTaskScheduledEventAttributes ?? []),
  results: events.flatMap((e) => e.activityTaskCompletedEventAttributes?.result?.payloads ?? []),
  /** The workflow's timers, in seconds: the run's stall timer, and the exit grace's when the workflow times it. */
  timers: events.flatMap((e) =>
    e.timerStartedEventAttributes ? [Number(e.timerStartedEventAttributes.startToFireTimeout?.seconds)] : [],
  ),
});
const graceSeconds = EXIT_GRACE_MS / 1000;
const localActivitiesOf = (events: proto.temporal.api.history.v1.IHistoryEvent[]) =>
  events.flatMap((e) =>
    e.markerRecordedEventAttributes?.markerName === 'core_local_activity'
      ? [
          (
            JSON.parse(Buffer.from(e.markerRecordedEventAttributes.details!.data!.payloads![0]!.data!).toString()) as {
              activity_type: string;
            }
          ).activity_type,
        ]
      : [],
  );

describe('a finished run’s branch', () => {
  it('is published by the host’s supervision when the agent exits after its gt done', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'pub-exit', repo: repo.origin });
    const { handle } = await t.town.sling('pub-exit', { id: 'b-pub-exit', title: 'Published at the exit' });
    const result = await handle.result();
    expect(result.status).toBe('closed');
    expect(await repo.show('work/b-pub-exit.txt')).toBe('done by b-pub-exit/r1/a1\n');
    const { scheduled, results, timers } = attributes((await handle.fetchHistory()).events ?? []);
    expect(scheduled.map((a) => a.activityType?.name)).toEqual(['launchRun', 'superviseAgentRun']);
    // Its gt done came through the gateway of the worker supervising it: that host times the exit grace, the
    // workflow only the stall.
    expect(timers).toEqual([FAST_POLICY.stallTimeout! / 1000]);
    const exits = results
      .map(
        (p) =>
          JSON.parse(Buffer.from(p.data!).toString()) as {
            exitCode: number;
            published?: { commitsAhead: number; headSha: string };
            slotReleased?: boolean;
            enqueued?: { rig: { name: string }; queued: boolean };
          },
      )
      .filter((r) => r.published);
    expect(exits).toHaveLength(1);
    expect(exits[0]).toMatchObject({ exitCode: 0, published: { commitsAhead: 1, uncommittedChanges: false } });
    // The host gave the run's dispatch slot back as the agent exited: the gate heard it, and the bead gave nothing back.
    expect(exits[0]!.slotReleased).toBe(true);
    const localActivities = localActivitiesOf((await handle.fetchHistory()).events ?? []);
    // Its dispatch request only: the supervision handed the merge request's ticket, stamped with the head it had just
    // published, to the refinery (the rig read as its refinery holds it), and the bead did not hand it over again.
    expect(localActivities).toEqual(['requestDispatchSlot']);
    expect(exits[0]!.enqueued).toMatchObject({ rig: { name: 'pub-exit' }, queued: true });
    const supervised = JSON.parse(Buffer.from(scheduled[1]!.input!.payloads![0]!.data!).toString()) as {
      enqueue?: unknown;
    };
    expect(supervised.enqueue).toMatchObject({
      ticket: { mrId: 'mr:b-pub-exit:1', beadId: 'b-pub-exit', round: 1, retries: 0 },
    });
    expect(supervised.enqueue).not.toHaveProperty('ticket.headSha');
    const refinery = (await t.client.workflow.getHandle('refinery:pub-exit').fetchHistory()).events ?? [];
    const tickets = refinery.flatMap((e) =>
      e.workflowExecutionSignaledEventAttributes?.signalName === 'enqueue'
        ? [
            JSON.parse(
              Buffer.from(e.workflowExecutionSignaledEventAttributes.input!.payloads![0]!.data!).toString(),
            ) as {
              mrId: string;
              headSha: string;
            },
          ]
        : [],
    );
    expect(tickets.map((x) => [x.mrId, x.headSha])).toEqual([['mr:b-pub-exit:1', exits[0]!.published!.headSha]]);
    const gate = (await t.client.workflow.getHandle('dispatch:pub-exit').fetchHistory()).events ?? [];
    const releases = gate.flatMap((e) =>
      e.workflowExecutionSignaledEventAttributes?.signalName === 'dispatchRelease'
        ? [
            JSON.parse(
              Buffer.from(e.workflowExecutionSignaledEventAttributes.input!.payloads![0]!.data!).toString(),
            ) as unknown,
          ]
        : [],
    );
    expect(releases).toEqual([{ runId: 'b-pub-exit/r1/a1' }]);
    // The branch the supervision published is the one the refinery merged.
    const [merge] = await repo.log();
    expect(merge!.body).toContain(`Gt-Merge-Request: mr:b-pub-exit:1@${exits[0]!.published!.headSha}`);
  });

  it('is published by the workflow when the gt done went through another worker’s gateway', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'pub-elsewhere',
      repo: repo.origin,
      agent: agentScript('done-elsewhere'),
      env: { OTHER_GATEWAY_URL: other.url },
    });
    const { handle } = await t.town.sling('pub-elsewhere', { id: 'b-pub-else', title: 'Published by the workflow' });
    expect((await handle.result()).status).toBe('closed');
    expect(await repo.show('work/b-pub-else.txt')).toBe('done by b-pub-else/r1/a1\n');
    // The other gateway saw it accepted; the bead's host did not, so its workflow published the branch, heartbeating
    // on the rig's heartbeat timeout (a host dying mid-way is noticed that soon: test/host-death-prepare.test.ts).
    expect(other.seen.take('b-pub-else/r1/a1')).toBe(true);
    const events = (await handle.fetchHistory()).events ?? [];
    const { scheduled, timers } = attributes(events);
    expect(scheduled.map((a) => a.activityType?.name)).toEqual(['launchRun', 'superviseAgentRun', 'publishBranch']);
    // So the bead handed its merge request's ticket to the refinery itself.
    expect(localActivitiesOf(events)).toEqual(['requestDispatchSlot', 'queueMergeRequest']);
    expect(Number(scheduled[2]!.heartbeatTimeout!.seconds)).toBe(FAST_POLICY.heartbeatTimeout! / 1000);
    // Nor did its supervision know of the gt done to time the grace: the workflow did.
    expect(timers).toEqual([FAST_POLICY.stallTimeout! / 1000, graceSeconds]);
  });

  it('is taken as handed in when another worker’s supervision handed it over unheard and it merged first', async () => {
    // The chaos soak's race across two processes: a supervision attempt the server gave up on, on another worker of
    // the host, saw the gt done, imported the branch and handed the round's ticket over, and its answer was dropped.
    // The refinery merged it before the bead's own import, which finds nothing ahead of the target.
    const repo = await createRepo();
    const hold = join(mkdtempSync(join(tmpdir(), 'gt-pub-merged-')), 'exit');
    const rig = await t.addRig({
      name: 'pub-merged',
      repo: repo.origin,
      agent: agentScript('done-elsewhere'),
      env: { OTHER_GATEWAY_URL: other.url, HOLD_UNTIL: hold },
    });
    const id = 'b-pub-merged';
    const title = 'Merged before its own import';
    const { handle } = await t.town.sling('pub-merged', { id, title });
    await eventually(() => other.seen.take(`${id}/r1/a1`), 30_000, 'the gt done accepted by the other gateway');
    const { headSha, mrId } = await other.handOverUnheard(t.taskQueue, rig, id, title);
    const trailer = `Gt-Merge-Request: ${mrId}@${headSha}`;
    await eventually(async () => (await repo.log())[0]!.body.includes(trailer), 30_000, 'the unheard ticket merged');
    writeFileSync(hold, '');

    expect(await handle.result()).toMatchObject({ status: 'closed', commit: (await repo.log())[0]!.sha });
    // Merged once: no second attempt of the round, no second merge.
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request:'))).toHaveLength(1);
    const events = (await handle.fetchHistory()).events ?? [];
    const { scheduled, results } = attributes(events);
    expect(scheduled.map((a) => a.activityType?.name)).toEqual(['launchRun', 'superviseAgentRun', 'publishBranch']);
    const published = JSON.parse(Buffer.from(results.at(-1)!.data!).toString()) as object;
    expect(published).toMatchObject({ headSha, commitsAhead: 0, mergedAs: (await repo.log())[0]!.sha });
    // The merge request announced the ticket and was given the refinery's kept answer; the bead handed nothing over.
    expect(localActivitiesOf(events)).toEqual(['requestDispatchSlot']);
  });

  it('keeps the workflow timing the grace when an agent claims its host does', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'pub-forged',
      repo: repo.origin,
      agent: agentScript('done-elsewhere-forged'),
      env: { OTHER_GATEWAY_URL: other.url },
    });
    const { handle } = await t.town.sling('pub-forged', {
      id: 'b-pub-forged',
      title: 'Claims the host times the grace',
    });
    expect((await handle.result()).status).toBe('closed');
    const events = (await handle.fetchHistory()).events ?? [];
    // The gateway took only the run id and summary from the agent's body: the update carries no exitGraceOnHost.
    const done = events.find((e) => e.workflowExecutionUpdateAcceptedEventAttributes)!;
    const args = done.workflowExecutionUpdateAcceptedEventAttributes!.acceptedRequest!.input!.args!.payloads!;
    expect(JSON.parse(Buffer.from(args[0]!.data!).toString())).toEqual({
      runId: 'b-pub-forged/r1/a1',
      summary: 'forged',
    });
    expect(attributes(events).timers).toEqual([FAST_POLICY.stallTimeout! / 1000, graceSeconds]);
  });

  it('is published once its host stopped an agent that did not exit within the grace after its gt done', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'pub-linger', repo: repo.origin, agent: agentScript('done-then-linger') });
    const { handle } = await t.town.sling('pub-linger', { id: 'b-pub-linger', title: 'Lingers after gt done' });
    // The import's quarantine was opened as the gateway accepted the gt done, while the agent still runs (it lingers
    // for the whole grace, longer than this waits).
    const quarantines = dirname(paths.quarantine('pub-linger', 'b-pub-linger/r1/a1', t.gtHome));
    const opened = () =>
      existsSync(quarantines) ? readdirSync(quarantines).filter((q) => existsSync(join(quarantines, q, 'HEAD'))) : [];
    await eventually(() => opened().length > 0, EXIT_GRACE_MS - 5_000, 'the quarantine opened');
    expect(opened()).toEqual([expect.stringMatching(/-at-done-/)]);
    expect((await handle.describe()).status.name).toBe('RUNNING');
    expect((await handle.result()).status).toBe('closed');
    // Taken over by the import at the exit, which discarded it.
    expect(opened()).toEqual([]);
    expect(await repo.show('work/b-pub-linger.txt')).toBe('done by b-pub-linger/r1/a1\n');
    const events = (await handle.fetchHistory()).events ?? [];
    const { scheduled, results, timers } = attributes(events);
    // No timer of the workflow's for the grace, and no cancel of the supervision: the host stopped the agent and
    // published its branch as it exited.
    expect(timers).toEqual([FAST_POLICY.stallTimeout! / 1000]);
    expect(scheduled.map((a) => a.activityType?.name)).toEqual(['launchRun', 'superviseAgentRun']);
    expect(events.some((e) => e.activityTaskCancelRequestedEventAttributes)).toBe(false);
    const exit = results
      .map((p) => JSON.parse(Buffer.from(p.data!).toString()) as { exitCode: number | null; published?: object })
      .find((r) => r.published);
    expect(exit).toMatchObject({ published: { commitsAhead: 1 } });
    expect(exit!.exitCode).not.toBe(0);
    // Stopped after the grace, not before: from the accepted gt done to the supervision's end.
    const at = (e: proto.temporal.api.history.v1.IHistoryEvent) => Number(e.eventTime!.seconds) * 1000;
    const done = events.find((e) => e.workflowExecutionUpdateAcceptedEventAttributes)!;
    const supervised = events.filter((e) => e.activityTaskCompletedEventAttributes).at(-1)!;
    expect(at(supervised) - at(done)).toBeGreaterThanOrEqual(EXIT_GRACE_MS - 1000);
  });

  it('is never published for a gt done that was not accepted', async () => {
    // A validly signed token of a run the (closed) bead never had: refused, so the gateway marks nothing.
    const runId = 'b-pub-else/r9/a1';
    const token = mintRunToken(gatewaySecret(t.gtHome), {
      beadId: 'b-pub-else',
      runId,
      role: 'polecat',
      workflowId: 'bead:b-pub-else',
      exp: Date.now() + 60_000,
    });
    const res = await fetch(`${other.url}/v1/done`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(other.seen.take(runId)).toBe(false);
  });
});
