/** Issue 2 acceptance: a bead merges end to end; stale and repeated gt_done change nothing. Real server, git, processes. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintRunToken } from '../agents/run-token';
import {
  dispatchGateWorkflowId,
  dispatchGrantSignal,
  dispatchReleaseSignal,
  dispatchReportSignal,
  dispatchRequestSignal,
} from '../domain/dispatch';
import { mergeRequestWorkflowId, refineryWorkflowId } from '../domain/ids';
import {
  doneUpdate,
  enqueueSignal,
  mergeRequestStateQuery,
  mergeResultSignal,
  pauseRefineryUpdate,
  refineryStateQuery,
  withdrawSignal,
} from '../domain/messages';
import { gatewaySecret } from '../host/home';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('a slung bead', () => {
  it('is worked by a polecat, merged by the refinery with gates on the candidate, and closed', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'merge-ok', repo: repo.origin, gates: ['test -f work/b-merge-ok.txt'] });
    const { handle } = await t.town.sling('merge-ok', { id: 'b-merge-ok', title: 'Add a file' });
    const result = await handle.result();
    expect(result.status).toBe('closed');
    const log = await repo.log();
    expect(log[0]!.sha).toBe(result.commit);
    expect(log[0]!.body).toContain('Gt-Merge-Request: mr:b-merge-ok:1@');
    expect(await repo.show('work/b-merge-ok.txt')).toBe('done by b-merge-ok/r1/a1\n');
    const state = await t.town.beadState('b-merge-ok');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([['b-merge-ok/r1/a1', 'done']]);
    expect(state.mergedCommit).toBe(result.commit);
    // Each records one patch marker, its baseline's, for all the changes it stands for (workflows/patches.ts).
    const patchIds = async (h: { fetchHistory(): Promise<proto.temporal.api.history.v1.IHistory> }) =>
      ((await h.fetchHistory()).events ?? []).flatMap((e) => {
        const data = e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0]?.data;
        return data ? [(JSON.parse(Buffer.from(data).toString()) as { id: string }).id] : [];
      });
    expect(await patchIds(handle)).toEqual(['bead-baseline-2026-12-d']);
    // Its status is written when it changes (the run's start and gt done re-wrote it before; its start said "open" in
    // round 1 already; its branch is published as the agent exits, with no status of its own:
    // test/publish-at-exit.test.ts), and its run's start reaches the gate from a local activity, not a signal.
    const events = (await handle.fetchHistory()).events ?? [];
    const written = events.flatMap((e) => {
      const fields = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields;
      const value = (key: string) => JSON.parse(Buffer.from(fields![key]!.data!).toString()) as unknown;
      return fields?.['GtStatus'] ? [[value('GtStatus'), value('GtRunId')]] : [];
    });
    expect(written).toEqual([
      ['in_progress', 'b-merge-ok/r1/a1'],
      ['in_review', null],
      ['closed', null],
    ]);
    // Its host is claimed in the dispatch request's answer, the gate hears of the start from launchRun, and the slot
    // goes back from its host as the agent exits: one local activity, no signal.
    const signalled = events.flatMap(
      (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? [],
    );
    expect(signalled).toEqual([]);
    const localActivities = (history: proto.temporal.api.history.v1.IHistory) =>
      (history.events ?? []).flatMap((e) => {
        const data = e.markerRecordedEventAttributes?.details?.['data']?.payloads?.[0]?.data;
        return data ? [(JSON.parse(Buffer.from(data).toString()) as { activity_type: string }).activity_type] : [];
      });
    // Its run's supervision handed the merge request's ticket to the refinery as it published the branch
    // (test/publish-at-exit.test.ts), so the bead ran no local activity for it; the merge request only waits.
    expect(localActivities({ events })).toEqual(['requestDispatchSlot']);
    const mr = t.client.workflow.getHandle(mergeRequestWorkflowId('b-merge-ok', 1));
    expect(await patchIds(mr)).toEqual(['merge-request-baseline-2026-12']);
    expect(localActivities(await mr.fetchHistory())).toEqual([]);
  });

  it('rejects a gt done addressed to another run, and the rejection changes nothing', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-test-'));
    await t.addRig({
      name: 'stale-done',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: testDir },
    });
    const { handle } = await t.town.sling('stale-done', { id: 'b-stale', title: 'Wait for release' });
    await eventually(
      async () => (await t.town.beadState('b-stale')).waitingFor === 'waiting for gt done from run b-stale/r1/a1',
      30_000,
      'run started',
    );
    const before = await t.town.beadState('b-stale');

    // Directly through Temporal: the update validator rejects a run id that is not current.
    const err = await handle
      .executeUpdate(doneUpdate, { args: [{ runId: 'b-stale/r1/a2', summary: 'forged' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
    expect(String((err as WorkflowUpdateFailedError).cause?.message)).toMatch(
      /b-stale\/r1\/a2 is not the current run of bead b-stale: the current run is b-stale\/r1\/a1/,
    );

    // Through the gateway with a validly signed token of a run that is not current: 409 with the reason.
    const token = mintRunToken(gatewaySecret(t.gtHome), {
      beadId: 'b-stale',
      runId: 'b-stale/r2/a1',
      role: 'polecat',
      workflowId: 'bead:b-stale',
      exp: Date.now() + 60_000,
    });
    const res = await fetch(`${t.worker.gateway.url}/v1/done`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: string }).error).toMatch(/not the current run/);

    const after = await t.town.beadState('b-stale');
    expect(after).toEqual(before);
    expect(after.status).toBe('in_progress');

    writeFileSync(join(testDir, 'release'), '');
    expect((await handle.result()).status).toBe('closed');
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  });

  it('drops malformed signals to its workflows without failing a workflow task, and still merges once', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-test-'));
    await t.addRig({
      name: 'bad-signals',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: testDir },
    });
    const refinery = t.client.workflow.getHandle(refineryWorkflowId('bad-signals'));
    await eventually(() => refinery.query(refineryStateQuery).then(() => true), 30_000, 'refinery up');
    await refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: true }] });
    const { handle } = await t.town.sling('bad-signals', { id: 'b-bad-signals', title: 'Wait for release' });
    await eventually(
      async () =>
        (await t.town.beadState('b-bad-signals')).waitingFor === 'waiting for gt done from run b-bad-signals/r1/a1',
      30_000,
      'run started',
    );

    // Signals cannot be refused to their sender; each workflow must log and drop what does not parse.
    const gate = t.client.workflow.getHandle(dispatchGateWorkflowId('bad-signals'));
    await handle.signal(dispatchGrantSignal, null as never);
    await gate.signal(dispatchRequestSignal, { runId: 42 } as never);
    await gate.signal(dispatchReleaseSignal, null as never);
    await gate.signal(dispatchReportSignal, 'started' as never);
    await refinery.signal(enqueueSignal, { mrId: 'mr:b-bad-signals:1' } as never);
    await refinery.signal(withdrawSignal, 7 as never);
    writeFileSync(join(testDir, 'release'), '');
    const mr = t.client.workflow.getHandle(mergeRequestWorkflowId('b-bad-signals', 1));
    await eventually(() => mr.query(mergeRequestStateQuery).then(() => true), 30_000, 'merge request started');
    await mr.signal(mergeResultSignal, null as never);
    await mr.signal(mergeResultSignal, { mrId: 'mr:b-bad-signals:1', outcome: 'merged' } as never);
    await refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] });

    expect((await handle.result()).status).toBe('closed');
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
    for (const h of [handle, gate, refinery, mr]) {
      const types = (await h.fetchHistory()).events?.map((e) => e.eventType) ?? [];
      expect(types, h.workflowId).not.toContain(proto.temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED);
    }
  });

  it('treats a repeated gt done from the same run as harmless', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-test-'));
    await t.addRig({ name: 'twice', repo: repo.origin, agent: agentScript('done-twice'), env: { TEST_DIR: testDir } });
    const { handle } = await t.town.sling('twice', { id: 'b-twice', title: 'Done twice' });
    const result = await handle.result();
    expect(result.status).toBe('closed');
    expect(readFileSync(join(testDir, 'done-1.out'), 'utf8')).toMatch(/done recorded/);
    // The second call is answered with the first call's result (same update id) and exits 0.
    expect(readFileSync(join(testDir, 'done-2.out'), 'utf8')).toMatch(/done recorded/);
    const state = await t.town.beadState('b-twice');
    expect(state.runs).toHaveLength(1);
    expect(state.rounds).toHaveLength(1);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  });
});

describe('gt sling input validation', () => {
  it('fails with a clear message for an unknown rig and starts nothing', async () => {
    const r = await runGt(['sling', 'no-such-rig', 'Something'], t.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("gt: unknown rig 'no-such-rig' (see `gt rig list`, or add it with `gt rig add`)");
    const started = await t.client.workflow.count(`GtRig = 'no-such-rig'`);
    expect(started.count).toBe(0);
  });

  it('fails with a clear message for an empty title and starts nothing', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'titled', repo: repo.origin });
    const r = await runGt(['sling', 'titled', '   '], t.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('gt: invalid bead: title: title must not be empty');
    const started = await t.client.workflow.count(`GtRig = 'titled' AND GtKind = 'bead'`);
    expect(started.count).toBe(0);
  });
});
