/**
 * Issue 5 acceptance: failed beads never unblock their dependents and a convoy with a failed bead never lands;
 * cancel and close stop running agents cleanly. Real dev server, git and scripted agents.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { beadExists as beadWorkflowExists, convoyTimeline } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let convoys: ConvoyClient;
beforeAll(async () => {
  t = await startTestTown();
  convoys = new ConvoyClient(t.town);
});
afterAll(async () => {
  await t?.stop();
});

const beadExists = (beadId: string) => beadWorkflowExists(t.client, beadId);

/** Cancellation reaches a run with its supervision heartbeat: a short heartbeat makes stopping quick. */
const FAST_STOP = { heartbeatTimeout: 2_000 };

const processAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('a failing bead', () => {
  it('with stop-dependents: its dependents never start, independent beads merge, the convoy fails with an escalation naming it', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'fail-deps',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { FAIL_BEADS: 'a' },
    });
    await convoys.start({
      id: 'fd',
      title: 'One bead fails',
      rig: 'fail-deps',
      onFailure: 'stop-dependents',
      beads: [
        { id: 'a', title: 'Fails' },
        { id: 'b', title: 'Needs a', dependsOn: ['a'] },
        { id: 'b2', title: 'Needs b', dependsOn: ['b'] },
        { id: 'c', title: 'Independent' },
        { id: 'd', title: 'Needs c', dependsOn: ['c'] },
      ],
    });
    const result = (await t.client.workflow.getHandle('convoy:fd').result()) as ConvoyResult;
    expect(result.status).toBe('failed');
    expect(result.reason).toBe('bead(s) a did not merge; never started: b, b2');
    expect(result.landedCommit).toBeUndefined();

    const state = await convoys.state('fd');
    expect(Object.fromEntries(state.beads.map((b) => [b.id, b.status]))).toEqual({
      a: 'failed',
      b: 'blocked',
      b2: 'blocked',
      c: 'closed',
      d: 'closed',
    });
    expect(state.beads.find((b) => b.id === 'b2')?.reason).toBe("depends on 'a', which failed");
    expect(await beadExists('fd-b')).toBe(false);
    expect(await beadExists('fd-b2')).toBe(false);
    expect(await repo.show('work/fd-d.txt')).toMatch(/^done by fd-d/);
    expect(await repo.show('work/fd-a.txt')).toBeNull();

    const escalation = (await t.town.listEscalations()).find((e) => e.id === 'convoy-fd.bead.a');
    expect(escalation).toMatchObject({ source: 'convoy', convoyId: 'fd', beadId: 'fd-a', status: 'open' });
    expect(escalation!.reason).toMatch(/^convoy fd: bead a \(fd-a\) failed: all 3 attempts of round 1 failed:/);
    expect(escalation!.reason).toMatch(/\nIt blocks: b, b2$/);

    // Never reported as landed, and `gt convoy status` exits 0 but says failed.
    const timeline = await convoyTimeline(t.client, 'fd');
    expect(timeline.filter((e) => e.kind === 'start').map((e) => e.beadId)).toEqual(['fd-a', 'fd-c', 'fd-d']);
    const status = await runGt(['convoy', 'status', 'fd'], t.cliEnv());
    expect(status.stdout).toMatch(/^status {3}failed — bead\(s\) a did not merge; never started: b, b2$/m);
  });

  it('with stop-all: nothing else starts after the failure', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'fail-all',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { FAIL_BEADS: 'a' },
    });
    await convoys.start({
      id: 'fa',
      title: 'Stop all',
      rig: 'fail-all',
      onFailure: 'stop-all',
      maxParallel: 1,
      beads: [
        { id: 'a', title: 'Fails' },
        { id: 'c', title: 'Independent' },
      ],
    });
    const result = (await t.client.workflow.getHandle('convoy:fa').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'failed', counts: { failed: 1, blocked: 1, closed: 0 } });
    expect((await convoys.state('fa')).beads[1]).toMatchObject({
      id: 'c',
      status: 'blocked',
      reason: "convoy stopped starting beads after 'a' failed (onFailure: stop-all)",
    });
    expect(await beadExists('fa-c')).toBe(false);
  });
});

describe('stopping a convoy', () => {
  it('`gt convoy cancel` stops running agents, starts nothing more, and ends the convoy cancelled', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-cancel-'));
    await t.addRig({
      name: 'cancel',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { TEST_DIR: testDir, HOLD_BEADS: 'a b' },
      policy: FAST_STOP,
    });
    await convoys.start({
      id: 'ca',
      title: 'Cancelled',
      rig: 'cancel',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B' },
        { id: 'c', title: 'C', dependsOn: ['a'] },
      ],
    });
    const pids = await eventually(
      () => {
        const lines = readFileSync(join(testDir, 'starts'), 'utf8').trim().split('\n');
        return lines.length === 2 ? lines.map((l) => Number(l.split(' ')[1])) : undefined;
      },
      30_000,
      'both agents running',
    );
    expect(pids.every(processAlive)).toBe(true);

    const r = await runGt(['convoy', 'cancel', 'ca'], t.cliEnv());
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('convoy ca cancelled: 0/3 merged, 0 running, 3 cancelled');
    expect(r.code).toBe(0);

    const state = await convoys.state('ca');
    expect(state).toMatchObject({ status: 'cancelled', reason: 'cancelled by an operator' });
    expect(state.beads.find((b) => b.id === 'c')).toMatchObject({
      status: 'cancelled',
      reason: 'never started: convoy cancelled',
    });
    expect(await beadExists('ca-c')).toBe(false);
    for (const b of ['ca-a', 'ca-b']) {
      expect((await t.client.workflow.getHandle(`bead:${b}`).describe()).status.name).toBe('CANCELLED');
      expect((await t.town.beadState(b)).status).toBe('cancelled');
    }
    expect((await t.client.workflow.getHandle('convoy:ca').describe()).status.name).toBe('CANCELLED');
    await eventually(() => pids.every((p) => !processAlive(p)), 10_000, 'agent processes to be gone');
    // Nothing merged, and a released agent cannot bring anything back.
    writeFileSync(join(testDir, 'release'), '');
    expect((await repo.log()).length).toBe(1);

    const again = await runGt(['convoy', 'cancel', 'ca'], t.cliEnv());
    expect(again.stderr).toBe("gt: convoy 'ca' has already ended (cancelled)\n");
    expect(again.code).toBe(1);
  });

  it('`gt convoy close` refuses while beads run, and with --force stops them and records the reason', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-close-'));
    await t.addRig({
      name: 'close',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { TEST_DIR: testDir, HOLD_BEADS: 'a' },
      policy: FAST_STOP,
    });
    await convoys.start({ id: 'cl', title: 'Closed', rig: 'close', beads: [{ id: 'a', title: 'A' }] });
    await eventually(
      async () => (await t.town.beadState('cl-a').catch(() => undefined))?.status === 'in_progress',
      30_000,
      'bead running',
    );

    const refused = await runGt(['convoy', 'close', 'cl'], t.cliEnv());
    expect(refused.stderr).toBe('gt: convoy cl has 1 bead running; close it with --force to stop them\n');
    expect(refused.code).toBe(1);
    expect((await convoys.state('cl')).status).toBe('running');

    const closed = await runGt(
      ['convoy', 'close', 'cl', '--force', '--reason', 'superseded by another plan'],
      t.cliEnv(),
    );
    expect(closed.stdout.trim()).toBe('convoy cl closed: closed by an operator: superseded by another plan');
    expect(closed.code).toBe(0);
    const result = (await t.client.workflow.getHandle('convoy:cl').result()) as ConvoyResult;
    expect(result).toMatchObject({
      status: 'closed',
      reason: 'closed by an operator: superseded by another plan',
      counts: { cancelled: 1 },
    });
    expect((await t.client.workflow.getHandle('bead:cl-a').describe()).status.name).toBe('CANCELLED');
  });

  it('notices a bead that ended without reporting (terminated by hand) and treats it as failed', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-lost-'));
    await t.addRig({
      name: 'lost',
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      env: { TEST_DIR: testDir, HOLD_BEADS: 'a' },
      policy: FAST_STOP,
    });
    await convoys.start(
      {
        id: 'lo',
        title: 'Lost report',
        rig: 'lost',
        beads: [
          { id: 'a', title: 'A' },
          { id: 'b', title: 'B', dependsOn: ['a'] },
        ],
      },
      { options: { reconcileEvery: '1s' } },
    );
    await eventually(
      async () => (await t.town.beadState('lo-a').catch(() => undefined))?.status === 'in_progress',
      30_000,
      'bead running',
    );
    // Terminated workflows run no code: the bead never reports, so only the convoy's own check can find out.
    await t.client.workflow.getHandle('bead:lo-a').terminate('test: lost bead');
    const result = (await t.client.workflow.getHandle('convoy:lo').result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'failed', counts: { failed: 1, blocked: 1 } });
    expect((await convoys.state('lo')).beads[0]).toMatchObject({
      status: 'failed',
      reason: 'the bead workflow ended terminated without reporting',
    });
    expect(await beadExists('lo-b')).toBe(false);
    writeFileSync(join(testDir, 'release'), '');
  });
});
