/**
 * Issue 3 acceptance: kill -9 the worker while its agent runs → a new worker on the same host re-attaches to the
 * live agent; exactly one agent process ever existed for the run, and the bead merges once.
 * The worker is a real `gt worker` child process with a fixed gateway port (the agent's GT_GATEWAY_URL must stay valid).
 * And one frozen (SIGSTOP) past its heartbeat timeout: the attempt the server gave up must not stop the agent its
 * retry re-attached to; one whose bead was terminated is stopped at once. And one killed between the agent's gt done
 * and its exit: the retry stops the lingering agent after the grace, and discards the quarantine opened at the gt done.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { paths } from '../host/home';
import { processExists } from './helpers/pids';
import { createRepo } from './helpers/repo';
import {
  agentScript,
  eventually,
  FAST_POLICY,
  resultOrExplain,
  supervisionReattached,
  workerProcesses,
} from './helpers/town';

const workers = workerProcesses();

/** A host of its own served by a `gt worker` child process, and its rig `<name>-rig` (heartbeat timeout 3 s). */
async function workerWithRig(name: string, agent: string, env?: Record<string, string>) {
  const host = await workers.host(name);
  const { town } = host;
  const repo = await createRepo();
  await town.addRig({
    name: `${name}-rig`,
    repo: repo.origin,
    agent: agentScript(agent),
    ...(env ? { env } : {}),
    policy: { ...FAST_POLICY, heartbeatTimeout: 3_000 },
  });
  return { host, town, repo, worker: await host.start() };
}

/**
 * A `gt worker` child process on a host of its own, and a bead `b-<name>` whose agent (wait-for-release: it calls
 * `gt done` once `release` appears in `dir`) runs under that worker's supervision, heartbeat timeout 3 s.
 */
async function heldAgent(name: string, title: string) {
  const dir = mkdtempSync(join(tmpdir(), `gt-${name}-`));
  const { host, town, repo, worker } = await workerWithRig(name, 'wait-for-release', { TEST_DIR: dir });
  const beadId = `b-${name}`;
  const { handle } = await town.sling(`${name}-rig`, { id: beadId, title });
  await eventually(() => existsSync(join(dir, 'starts')), 60_000, 'agent started');
  await eventually(
    async () => /waiting for gt done/.test((await town.beadState(beadId)).waitingFor),
    30_000,
    'run supervised',
  );
  const [runId, pid] = readFileSync(join(dir, 'starts'), 'utf8').trim().split(' ') as [string, string];
  return { dir, host, town, repo, worker, beadId, handle, runId, pid };
}

describe('a worker killed while its agent runs', () => {
  it('is replaced by a worker that re-attaches: one agent process for the run, one merge', async () => {
    const {
      dir,
      host,
      town,
      repo,
      worker: first,
      handle,
      runId,
      pid,
    } = await heldAgent('kill', 'Survive a worker crash');
    expect(runId).toBe('b-kill/r1/a1');

    first.proc.kill('SIGKILL');
    await new Promise((resolve) => first.proc.once('exit', resolve));
    // The agent is a process group of its own: the worker's death does not take it along.
    expect(processExists(Number(pid))).toBe(true);

    await host.start();
    // The supervision activity times out on the dead worker and is retried on the new one, which adopts the live agent.
    await eventually(() => supervisionReattached(handle), 60_000, 'supervision re-attached on the new worker');
    expect(processExists(Number(pid))).toBe(true);
    writeFileSync(join(dir, 'release'), '');
    const result = await handle.result();
    expect(result.status).toBe('closed');

    expect(readFileSync(join(dir, 'starts'), 'utf8').trim().split('\n')).toEqual([`b-kill/r1/a1 ${pid}`]);
    const state = await town.beadState('b-kill');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([['b-kill/r1/a1', 'done']]);
    expect((await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request'))).toHaveLength(1);
    const history = JSON.stringify((await town.beadHandle('b-kill').fetchHistory()).events);
    expect(history).toMatch(/superviseAgentRun/);
  });
});

describe("a worker killed between its agent's gt done and the agent's exit", () => {
  it('leaves the quarantine it opened at the gt done to the retry of the supervision, which discards it', async () => {
    // The agent calls gt done and lingers: the worker's gateway accepts it and opens the import's quarantine.
    const { host, town, repo, worker: first } = await workerWithRig('atdone', 'done-then-linger');
    const { handle } = await town.sling('atdone-rig', { id: 'b-atdone', title: 'Lingers past its worker' });
    const quarantines = dirname(paths.quarantine('atdone-rig', 'any', host.gtHome));
    const left = () => (existsSync(quarantines) ? readdirSync(quarantines) : []);
    await eventually(
      () => left().some((q) => q.includes('-at-done-a1')),
      60_000,
      'the quarantine opened at the gt done',
    );

    first.proc.kill('SIGKILL');
    await new Promise((resolve) => first.proc.once('exit', resolve));
    expect(left()).toEqual([expect.stringMatching(/-at-done-a1\.git$/)]);
    await host.start();
    // The retry re-attaches, stops the agent after the grace and leaves the import to the workflow.
    expect((await resultOrExplain(handle, workers.children, 90_000)).status).toBe('closed');
    expect(await repo.show('work/b-atdone.txt')).toBe('done by b-atdone/r1/a1\n');
    expect(left(), 'a quarantine left behind').toEqual([]);
  });
});

describe('a worker frozen past its heartbeat timeout while its agent runs', () => {
  // 5.5 s: past the 3 s heartbeat timeout, so the server times the supervision out and retries it on this host's
  // queue, as a database or server outage leaves heartbeats unheard; on waking the attempt hears "not found". 10 s: past
  // the worker's own timer for the attempt too (the timeout plus the SDK's 5 s buffer), which fires first on waking.
  it.each([
    ['the server gave up', 5_500],
    ['the worker timed out itself', 10_000],
  ])('keeps the agent when %s: the old attempt leaves it to the retry that re-attached', async (_, frozenMs) => {
    const { dir, town, worker, beadId, handle, runId, pid } = await heldAgent(
      `freeze${frozenMs}`,
      'Survive a frozen worker',
    );

    worker.proc.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, frozenMs));
    worker.proc.kill('SIGCONT');
    await eventually(() => supervisionReattached(handle), 60_000, 'supervision re-attached after the freeze');
    // Past the old attempt's next heartbeat, which the server answers "not found".
    await new Promise((r) => setTimeout(r, 4_000));
    expect(processExists(Number(pid)), 'the agent outlived the attempt the server gave up').toBe(true);

    writeFileSync(join(dir, 'release'), '');
    expect((await handle.result()).status).toBe('closed');
    expect(readFileSync(join(dir, 'starts'), 'utf8').trim().split('\n')).toEqual([`${runId} ${pid}`]);
    const state = await town.beadState(beadId);
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([[runId, 'done']]);
  });
});

describe('an agent whose bead is gone', () => {
  it('is stopped by its host at once: no retry of its supervision will come', async () => {
    const { handle, pid } = await heldAgent('gone', 'Terminated under its agent');
    // Terminated, not cancelled: no workflow asks the supervision to stop. Its next heartbeat is answered "not found";
    // the host asks the server, hears the bead's workflow is closed, and stops the agent — well before the heartbeat
    // timeout and the retry's backoff (23 s) it would wait for a retry of a supervision whose workflow still runs.
    await handle.terminate('the operator removed it');
    await eventually(() => !processExists(Number(pid)), 15_000, 'agent stopped by its host');
  });
});
