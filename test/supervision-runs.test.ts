/**
 * Issue 3: supervision of agent runs with real processes. A crashed agent is retried under a new run id and its late
 * gt done is refused; a hung agent is stopped at the stall timeout and the bead fails with one escalation after its
 * attempts; a status probe that errors or hangs is never taken for death; a stale agent of the bead is stopped
 * before the next run starts on the host.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive, processTag, ProcessRuntime } from '../agents/process-runtime';
import type { AgentHandle, AgentStatus } from '../agents/runtime';
import { recordHandle } from '../activities/run-handles';
import { paths } from '../host/home';
import { ResourceLimits } from '../domain/rig';
import { processExists } from './helpers/pids';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

/** The real process runtime, except that its status probe throws and then hangs a few times (a sick probe, not a sick agent). */
class SickProbeRuntime extends ProcessRuntime {
  probes = 0;
  constructor(
    private readonly throwing: number,
    private readonly hanging: number,
  ) {
    super();
  }
  override status(handle: AgentHandle, runDir: string): Promise<AgentStatus> {
    if (!handle.runId.startsWith('b-sup-probe/')) return super.status(handle, runDir);
    this.probes++;
    if (this.probes <= this.throwing) return Promise.reject(new Error('EIO: the probe itself failed'));
    if (this.probes <= this.throwing + this.hanging) return new Promise<AgentStatus>(() => undefined);
    return super.status(handle, runDir);
  }
}

const sick = new SickProbeRuntime(5, 2);
let t: TestTown;
beforeAll(async () => {
  t = await startTestTown({ runtimes: { process: sick } });
});
afterAll(async () => {
  await t?.stop();
});

const testDir = () => mkdtempSync(join(tmpdir(), 'gt-sup-'));
const readEnvFile = (file: string) =>
  Object.fromEntries(
    readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

describe('supervision', () => {
  it('re-dispatches an agent that exits without gt done as attempt 2, and refuses the first run’s late gt done', async () => {
    const repo = await createRepo();
    const dir = testDir();
    await t.addRig({ name: 'sup-crash', repo: repo.origin, agent: agentScript('crash-first'), env: { TEST_DIR: dir } });
    const { handle } = await t.town.sling('sup-crash', { id: 'b-sup-crash', title: 'Crash first' });
    const result = await handle.result();
    expect(result.status).toBe('closed');
    const state = await t.town.beadState('b-sup-crash');
    expect(state.runs.map((r) => [r.runId, r.outcome, r.exitCode])).toEqual([
      ['b-sup-crash/r1/a1', 'exited', 3],
      ['b-sup-crash/r1/a2', 'done', 0],
    ]);

    // The first run's token is still validly signed: its late gt done must be refused by the bead and change nothing.
    const first = readEnvFile(join(dir, 'first-run.env'));
    expect(first.GT_RUN_ID).toBe('b-sup-crash/r1/a1');
    const res = await fetch(`${first.GT_GATEWAY_URL}/v1/done`, {
      method: 'POST',
      headers: { authorization: `Bearer ${first.GT_RUN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ summary: 'late' }),
    });
    expect([409, 410]).toContain(res.status);
    expect(await t.town.beadState('b-sup-crash')).toEqual(state);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
  });

  it('stops an agent that makes no progress at the stall timeout, re-dispatches it, and fails the bead with one escalation after max attempts', async () => {
    const repo = await createRepo();
    const dir = testDir();
    await t.addRig({
      name: 'sup-hang',
      repo: repo.origin,
      agent: agentScript('run-hang'),
      env: { TEST_DIR: dir },
      policy: { stallTimeout: 1_500, maxAttempts: 2, maxRounds: 1 },
    });
    const { handle } = await t.town.sling('sup-hang', { id: 'b-sup-hang', title: 'Hang' });
    const result = await handle.result();
    expect(result.status).toBe('failed');
    expect(result.reason).toMatch(/reported no progress for 1500 ms and was stopped/);
    const state = await t.town.beadState('b-sup-hang');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-sup-hang/r1/a1', 'stalled'],
      ['b-sup-hang/r1/a2', 'stalled'],
    ]);
    // Both hung agents were really stopped, not left behind.
    const starts = readFileSync(join(dir, 'hang-starts'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ') as [string, string]);
    expect(starts.map(([run]) => run)).toEqual(['b-sup-hang/r1/a1', 'b-sup-hang/r1/a2']);
    for (const [, pid] of starts) expect(processExists(Number(pid))).toBe(false);
    const escalations = await eventually(
      async () => (await t.town.listEscalations()).filter((e) => e.beadId === 'b-sup-hang'),
      10_000,
      'escalation',
    );
    expect(escalations.map((e) => e.id)).toEqual(['bead-b-sup-hang']);
  });

  it('never takes a status probe that errors or hangs for a dead agent', async () => {
    const repo = await createRepo();
    const dir = testDir();
    // heartbeatTimeout bounds each probe (2 s here); heartbeats go on while a probe hangs.
    await t.addRig({
      name: 'sup-probe',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: dir },
      policy: { heartbeatTimeout: 2_000 },
    });
    const { handle } = await t.town.sling('sup-probe', { id: 'b-sup-probe', title: 'Sick probe' });
    // Past all the failing and hanging probes, into healthy ones.
    await eventually(() => sick.probes > 9, 60_000, 'probes past the sick ones');
    const during = await t.town.beadState('b-sup-probe');
    expect(during.status).toBe('in_progress');
    expect(during.runs.map((r) => [r.runId, r.outcome])).toEqual([['b-sup-probe/r1/a1', 'running']]);
    writeFileSync(join(dir, 'release'), '');
    expect((await handle.result()).status).toBe('closed');
    const state = await t.town.beadState('b-sup-probe');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([['b-sup-probe/r1/a1', 'done']]);
    expect(readFileSync(join(dir, 'starts'), 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('stops a stale agent of the same bead on this host before the next run starts in its worktree', async () => {
    const repo = await createRepo();
    // A run whose supervision was lost: its agent still lives on this host.
    const staleRun = 'b-sup-stale/r1/a9';
    const runDir = paths.runDir(staleRun, t.gtHome);
    const stale = await new ProcessRuntime().startOrAdopt({
      runId: staleRun,
      beadId: 'b-sup-stale',
      role: 'polecat',
      command: 'sleep 600',
      cwd: tmpdir(),
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      runDir,
      agentDir: tmpdir(),
      allowNetwork: true,
      mounts: [],
      limits: ResourceLimits.parse({}),
    });
    recordHandle(runDir, stale.handle);
    expect(isAlive(Number(stale.handle.ref), processTag(staleRun)).state).toBe('running');

    await t.addRig({ name: 'sup-stale', repo: repo.origin });
    const { handle } = await t.town.sling('sup-stale', { id: 'b-sup-stale', title: 'After a lost run' });
    expect((await handle.result()).status).toBe('closed');
    expect(isAlive(Number(stale.handle.ref), processTag(staleRun)).state).toBe('exited');
  });
});
