/**
 * Issue 3, dispatch breakers: a rig's dispatch gate enforces maxPolecats, an operator's `gt rig pause|resume`, and a
 * circuit breaker that stops dispatch after consecutive start failures (escalating once), lets a probe through, and
 * closes when a probe starts. Its state survives continue-as-new. Real server, git and agent processes; agent starts
 * fail for real (the runtime reports itself unavailable while a flag file exists).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessRuntime } from '../agents/process-runtime';
import {
  dispatchGateWorkflowId,
  dispatchRequestSignal,
  dispatchStateQuery,
  pauseDispatchUpdate,
  requestDispatchUpdate,
  type DispatchGateState,
} from '../domain/dispatch';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';
import { dispatchGateStart } from '../domain/starts';

/** The process runtime, unavailable while its flag file exists (a broken image or runtime on the host). */
class BreakableRuntime extends ProcessRuntime {
  readonly flag = join(mkdtempSync(join(tmpdir(), 'gt-flag-')), 'broken');
  override available() {
    return Promise.resolve(
      existsSync(this.flag)
        ? { ok: false as const, reason: 'the runtime is broken (test flag)' }
        : { ok: true as const },
    );
  }
}

const runtime = new BreakableRuntime();
let t: TestTown;
beforeAll(async () => {
  t = await startTestTown({ runtimes: { process: runtime } });
});
afterAll(async () => {
  await t?.stop();
});

const gate = (rig: string) => t.client.workflow.getHandle(dispatchGateWorkflowId(rig)).query(dispatchStateQuery);
const testDir = () => mkdtempSync(join(tmpdir(), 'gt-disp-'));

describe('dispatch gate', () => {
  it('holds beads while a rig is paused (`gt rig pause`) and dispatches them on `gt rig resume`', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'disp-pause', repo: repo.origin });
    const paused = await runGt(['rig', 'pause', 'disp-pause', '--reason', 'maintenance window'], t.cliEnv());
    expect(paused).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/dispatch on rig disp-pause paused/) as string,
    });
    const { handle } = await t.town.sling('disp-pause', { id: 'b-disp-pause', title: 'Wait for resume' });
    const waiting = await eventually(
      async () => ((await gate('disp-pause')).waiting.length === 1 ? gate('disp-pause') : undefined),
      20_000,
      'bead waiting',
    );
    expect(waiting.paused).toMatchObject({ reason: 'maintenance window' });
    expect(waiting.running).toEqual([]);
    const shown = await runGt(['rig', 'dispatch', 'disp-pause', '--json'], t.cliEnv());
    expect((JSON.parse(shown.stdout) as DispatchGateState).waiting.map((s) => s.runId)).toEqual(['b-disp-pause/r1/a1']);
    const state = await t.town.beadState('b-disp-pause');
    expect(state).toMatchObject({ status: 'open', runs: [] });
    expect(state.waitingFor).toMatch(/waiting for a dispatch slot on rig disp-pause/);

    expect((await runGt(['rig', 'resume', 'disp-pause'], t.cliEnv())).code).toBe(0);
    expect((await handle.result()).status).toBe('closed');
    expect((await gate('disp-pause')).running).toEqual([]);
  });

  it('never runs more polecats on a rig than maxPolecats', async () => {
    const repo = await createRepo();
    const dir = testDir();
    await t.addRig({
      name: 'disp-cap',
      repo: repo.origin,
      agent: agentScript('run-serial'),
      env: { TEST_DIR: dir },
      maxPolecats: 1,
    });
    const first = await t.town.sling('disp-cap', { id: 'b-cap-1', title: 'First' });
    await eventually(() => existsSync(join(dir, 'events')), 30_000, 'first started');
    const second = await t.town.sling('disp-cap', { id: 'b-cap-2', title: 'Second' });
    const g = await eventually(
      async () => ((await gate('disp-cap')).waiting.length === 1 ? gate('disp-cap') : undefined),
      20_000,
      'second waiting',
    );
    expect(g.running.map((s) => s.runId)).toEqual(['b-cap-1/r1/a1']);
    expect(g.waiting.map((s) => s.runId)).toEqual(['b-cap-2/r1/a1']);
    writeFileSync(join(dir, 'release-b-cap-2'), '');
    writeFileSync(join(dir, 'release-b-cap-1'), '');
    expect((await first.handle.result()).status).toBe('closed');
    expect((await second.handle.result()).status).toBe('closed');
    expect(readFileSync(join(dir, 'events'), 'utf8').trim().split('\n')).toEqual([
      'start b-cap-1',
      'end b-cap-1',
      'start b-cap-2',
      'end b-cap-2',
    ]);
  });

  it('opens the breaker after consecutive start failures, escalates once, probes, and closes when a probe starts', async () => {
    const repo = await createRepo();
    writeFileSync(runtime.flag, '');
    await t.addRig({
      name: 'disp-brk',
      repo: repo.origin,
      policy: { maxAttempts: 1, maxRounds: 1, breakerThreshold: 2, breakerProbeInterval: 1_000 },
    });
    for (const id of ['b-brk-1', 'b-brk-2']) {
      const { handle } = await t.town.sling('disp-brk', { id, title: 'Broken runtime' });
      const r = await handle.result();
      expect(r).toMatchObject({
        status: 'failed',
        reason: expect.stringMatching(
          /could not be started: runtime 'process' is unavailable on host test-host: the runtime is broken/,
        ) as string,
      });
      expect((await t.town.beadState(id)).runs.map((run) => run.outcome)).toEqual(['start_failed']);
    }
    const open = await eventually(
      async () => ((await gate('disp-brk')).breaker.state === 'open' ? gate('disp-brk') : undefined),
      10_000,
      'breaker open',
    );
    expect(open.breaker).toMatchObject({ consecutiveFailures: 2, trips: 1 });

    // Still broken: the next bead goes through only as a probe, fails, and the breaker stays open (no new escalation).
    const probe1 = await t.town.sling('disp-brk', { id: 'b-brk-3', title: 'Probe while broken' });
    expect((await probe1.handle.result()).status).toBe('failed');
    expect((await gate('disp-brk')).breaker).toMatchObject({ state: 'open', trips: 1, consecutiveFailures: 3 });

    // Fixed: the next probe starts, the breaker closes, the bead merges.
    rmSync(runtime.flag);
    const probe2 = await t.town.sling('disp-brk', { id: 'b-brk-4', title: 'Probe after the fix' });
    expect((await probe2.handle.result()).status).toBe('closed');
    expect((await gate('disp-brk')).breaker).toMatchObject({ state: 'closed', consecutiveFailures: 0, trips: 1 });

    const escalations = (await t.town.listEscalations()).filter((e) => e.rig === 'disp-brk' && e.source === 'rig');
    expect(escalations.map((e) => [e.id, e.severity])).toEqual([['rig-disp-brk-breaker-1', 'critical']]);
    expect(escalations[0]!.reason).toMatch(/2 agent starts failed in a row .*gt rig resume disp-brk/);
  });

  it('carries pause, breaker and waiting runs across continue-as-new', async () => {
    const rig = 'disp-can';
    const start = dispatchGateStart({
      taskQueue: t.taskQueue,
      input: { rig, settings: { maxPolecats: 2, breakerThreshold: 3, breakerProbeInterval: 60_000 }, historyLimit: 20 },
    });
    const handle = await t.client.workflow.start(start.workflowType, start.options);
    await handle.executeUpdate(pauseDispatchUpdate, { args: [{ reason: 'frozen', by: 'test' }] });
    const request = (i: number) => ({
      beadId: `b-can-${i}`,
      runId: `b-can-${i}/r1/a1`,
      workflowId: `bead:b-can-${i}`,
      maxPolecats: 2,
      breakerThreshold: 3,
      breakerProbeInterval: 60_000,
    });
    // Asked by signal (beads from before the answer), then by update, all at once, while the gate continues as new
    // (every 20 events): each update is answered queued, and every run is carried.
    for (let i = 1; i <= 7; i++) await handle.signal(dispatchRequestSignal, request(i));
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, k) => handle.executeUpdate(requestDispatchUpdate, { args: [request(k + 8)] })),
    );
    expect(answers).toEqual(Array.from({ length: 8 }, () => ({ granted: false, probe: false })));
    const carried = await eventually(
      async () => {
        const s = await handle.query(dispatchStateQuery);
        return s.generation >= 2 && s.waiting.length === 15 ? s : undefined;
      },
      30_000,
      'continued as new with every waiting run',
    );
    expect(carried.paused).toMatchObject({ reason: 'frozen', by: 'test' });
    expect(carried.waiting.slice(0, 7).map((s) => s.runId)).toEqual(
      Array.from({ length: 7 }, (_, i) => `b-can-${i + 1}/r1/a1`),
    );
    expect(carried.waiting.map((s) => s.runId).sort()).toEqual(
      Array.from({ length: 15 }, (_, i) => `b-can-${i + 1}/r1/a1`).sort(),
    );
    await handle.terminate('test over');
  });
});
