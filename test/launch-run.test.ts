/**
 * launchRun prepares a bead's run and starts its agent in one activity (workflows/bead-runs.ts). A retry of it — the
 * worker lost after the agent started, before its result was recorded — must adopt the live agent and leave its
 * worktree alone (preparing again would reset the worktree under it); a failed preparation must say so and keep
 * its failure's type, which decides whether the activity is retried. launchRunWhenGranted asks the dispatch gate as it
 * prepares (a stub here; test/asks-in-launch.test.ts asks the real gate): queued, it must start nothing. Real git, a
 * real process agent.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import {
  createAgentRunActivities,
  type LaunchedRun,
  type HostDeps,
  type LaunchRunInput,
  type LaunchWhenGrantedInput,
  type RunExit,
  type SuperviseInput,
} from '../activities/agent-runs';
import { EXIT_GRACE_MS } from '../domain/bead';
import { ProcessRuntime } from '../agents/process-runtime';
import { Failure } from '../domain/failures';
import { DoneRuns } from '../host/done-runs';
import { paths } from '../host/home';
import { readHandle } from '../activities/run-handles';
import { dispatchAsksAhead } from '../activities/dispatch';
import { LaunchesAhead, NotTaken } from '../activities/launch-ahead';
import { createRepo } from './helpers/repo';
import { eventually, FAST_POLICY } from './helpers/town';

const runtime = new ProcessRuntime();
const BREAKER = { breakerThreshold: 3, breakerProbeInterval: 60_000 };

/**
 * `reportStart`: the dispatch gate as launchRun tells it of a start (the worker's reporter signals the real gate);
 * `doneRuns`: the runs whose `gt done` this host's gateway accepted.
 */
async function host(
  reportStart?: (rig: string, report: { runId: string; started: boolean }) => Promise<void>,
  doneRuns?: DoneRuns,
  requestSlot: HostDeps['requestSlot'] = () => Promise.resolve({ granted: true, probe: false }),
  askedAhead?: HostDeps['askedAhead'],
  launchesAhead?: LaunchesAhead,
) {
  const gtHome = mkdtempSync(join(tmpdir(), 'gt-launch-'));
  const repo = await createRepo();
  const activities = createAgentRunActivities({
    gtHome,
    hostId: 'launch-host',
    hostQueue: 'launch@launch-host',
    gatewayUrl: 'http://127.0.0.1:9',
    gatewaySecret: Buffer.alloc(32, 7),
    gtBinDir: fileURLToPath(new URL('../bin', import.meta.url)),
    runtimes: { process: runtime },
    reportStart,
    doneRuns,
    requestSlot,
    askedAhead,
    launchesAhead,
  });
  const input = (beadId: string, targetBranch = 'main'): LaunchRunInput => ({
    rig: { name: 'launch', repo: repo.origin, agent: 'sleep 30', policy: FAST_POLICY },
    bead: { id: beadId, title: 'Launched in one activity' },
    runId: `${beadId}/r1/a1`,
    round: 1,
    attempt: 1,
    targetBranch,
    workflowId: `bead:${beadId}`,
  });
  /** One attempt of launchRun (`attempt` > 1: a retry). */
  const launch = (i: LaunchRunInput, attempt = 1) =>
    new MockActivityEnvironment({ attempt }).run<
      [LaunchRunInput],
      LaunchedRun,
      (i: LaunchRunInput) => Promise<LaunchedRun>
    >((x) => activities.launchRun(x), i);
  /** One attempt of superviseAgentRun with the heartbeat details an earlier attempt left (in `env`, when given). */
  const supervise = (
    i: SuperviseInput,
    details: unknown,
    env = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: details, heartbeatTimeoutMs: 10_000 }),
  ) =>
    env.run<[SuperviseInput], RunExit, (i: SuperviseInput) => Promise<RunExit>>(
      (x) => activities.superviseAgentRun(x),
      i,
    );
  /** One attempt of launchRunWhenGranted. */
  const launchWhenGranted = (i: LaunchWhenGrantedInput, attempt = 1) =>
    new MockActivityEnvironment({ attempt }).run<
      [LaunchWhenGrantedInput],
      LaunchedRun | { queued: true },
      (i: LaunchWhenGrantedInput) => Promise<LaunchedRun | { queued: true }>
    >((x) => activities.launchRunWhenGranted(x), i);
  return { launch, launchWhenGranted, input, supervise, gtHome };
}

/** What superviseAgentRun is given for a run launchRun prepared (the bead's workflow adds the started agent's handle). */
function supervision(i: LaunchRunInput, prepared: LaunchedRun['prepared']): SuperviseInput {
  return {
    runId: i.runId,
    beadId: i.bead.id,
    workflowId: i.workflowId,
    role: 'polecat',
    rig: i.rig,
    worktree: prepared.worktree,
    promptFile: prepared.promptFile,
    branch: prepared.branch,
    targetBranch: i.targetBranch,
  };
}

describe('launchRun', () => {
  it('adopts the agent on a retry and leaves its worktree as the agent made it', async () => {
    const { launch, input } = await host();
    const first = await launch(input('b-launch'));
    try {
      expect(first.started).toMatchObject({ adopted: false, host: 'launch-host' });
      // The agent's work in progress, which preparing again would throw away.
      const work = join(first.prepared.worktree, 'in-progress.txt');
      writeFileSync(work, 'half done\n');

      const retried = await launch(input('b-launch'), 2);
      expect(retried.started).toMatchObject({ adopted: true, handle: first.started.handle });
      expect(retried.prepared).toEqual(first.prepared);
      expect(existsSync(work)).toBe(true);
    } finally {
      await runtime.stop(first.started.handle, 1_000);
    }
  });

  it('tells the dispatch gate of the start when asked, and leaves it to the bead when it cannot', async () => {
    const told: unknown[] = [];
    const reached = await host((rig, report) => Promise.resolve(void told.push({ rig, ...report })));
    const asked = await reached.launch({ ...reached.input('b-told'), reportStart: true });
    await runtime.stop(asked.started.handle, 1_000);
    expect(asked.reported).toBe(true);
    expect(told).toEqual([{ rig: 'launch', runId: 'b-told/r1/a1', started: true }]);
    // Not asked (a bead from before): nothing told, nothing claimed.
    const notAsked = await reached.launch(reached.input('b-not-told'));
    await runtime.stop(notAsked.started.handle, 1_000);
    expect(notAsked.reported).toBeUndefined();
    expect(told).toHaveLength(1);

    const unreachable = await host(() => Promise.reject(new Error('gate unreachable')));
    const failed = await unreachable.launch({ ...unreachable.input('b-untold'), reportStart: true });
    await runtime.stop(failed.started.handle, 1_000);
    expect(failed.started).toMatchObject({ adopted: false });
    expect(failed.reported).toBeUndefined();
  });

  it('stops, on a retry, an agent whose gt done an earlier supervision kept in its heartbeat, once the grace passed', async () => {
    const { launch, input, supervise } = await host();
    const i = input('b-linger');
    const { prepared, started } = await launch(i);
    // The earlier attempt's worker heard the gt done a grace ago and died before the agent exited: this one knows of
    // it only from the heartbeat (its process's gateway never saw it), and stops the agent.
    const exit = await supervise(supervision(i, prepared), {
      handle: started.handle,
      doneAt: Date.now() - EXIT_GRACE_MS,
    });
    expect(exit).toMatchObject({ runId: i.runId, adopted: true });
    expect(exit.exitCode).not.toBe(0);
    expect(exit.published).toBeUndefined();
  });

  it('supervises without a heartbeat at its start, and keeps a gt done seen here in its next one', async () => {
    const doneRuns = new DoneRuns();
    const { launch, input, supervise } = await host(undefined, doneRuns);
    const i = input('b-beats');
    const launched = await launch(i);
    const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 10_000 });
    const beats: { doneAt?: number }[] = [];
    env.on('heartbeat', (details: { doneAt?: number }) => beats.push(details));
    const running = supervise(
      { ...supervision(i, launched.prepared), handle: launched.started.handle },
      undefined,
      env,
    ).catch((err: unknown) => err);
    try {
      // The handle came in the input: a beat at the start would prove nothing the start did not.
      await new Promise((r) => setTimeout(r, 300));
      expect(beats).toEqual([]);
      // Read before the add: the listener notes the time as the add runs.
      const seenAt = Date.now();
      doneRuns.add(i.runId);
      for (const deadline = Date.now() + 5_000; !beats.some((b) => b.doneAt);) {
        if (Date.now() > deadline) throw new Error(`no heartbeat kept the gt done: ${JSON.stringify(beats)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(beats.find((b) => b.doneAt)!.doneAt).toBeGreaterThanOrEqual(seenAt);
    } finally {
      env.cancel();
      await running;
      await runtime.stop(launched.started.handle, 1_000);
    }
  });

  it('asks the gate as it prepares: queued starts nothing and keeps no preparation; granted starts, a retry adopts', async () => {
    const answers = [false, true, true];
    const asked: unknown[] = [];
    const { launch, launchWhenGranted, input, gtHome } = await host(undefined, undefined, (rig, request) => {
      asked.push({ rig, runId: request.runId });
      return Promise.resolve({ granted: answers.shift()!, probe: false });
    });
    const request = (i: LaunchRunInput) => ({
      beadId: i.bead.id,
      runId: i.runId,
      workflowId: i.workflowId,
      maxPolecats: 1,
      breakerThreshold: 3,
      breakerProbeInterval: 60_000,
    });
    const queued = input('b-queued');
    expect(await launchWhenGranted({ ...queued, request: request(queued) })).toEqual({ queued: true });
    const runDir = paths.runDir(queued.runId, gtHome);
    expect(readHandle(runDir)).toBeUndefined();
    expect(existsSync(join(runDir, 'prepared.json'))).toBe(false);
    // Granted by signal later: the bead launches it as any granted run, prepared afresh.
    const later = await launch(queued);
    await runtime.stop(later.started.handle, 1_000);
    expect(later.started).toMatchObject({ adopted: false });

    const granted = input('b-granted');
    const first = await launchWhenGranted({ ...granted, request: request(granted) });
    if ('queued' in first) throw new Error('granted, yet queued');
    try {
      expect(first.started).toMatchObject({ adopted: false, host: 'launch-host' });
      // A retry asks again (the gate answers a holder granted again) and adopts the agent it started.
      const retried = await launchWhenGranted({ ...granted, request: request(granted) }, 2);
      expect(retried).toMatchObject({ started: { adopted: true, handle: first.started.handle } });
    } finally {
      await runtime.stop(first.started.handle, 1_000);
    }
    expect(asked).toEqual([
      { rig: 'launch', runId: 'b-queued/r1/a1' },
      { rig: 'launch', runId: 'b-granted/r1/a1' },
      { rig: 'launch', runId: 'b-granted/r1/a1' },
    ]);
  });

  it('takes the answer asked ahead for the same request, and asks itself for other settings or a failed one', async () => {
    const asked: string[] = [];
    const requestSlot = (_rig: string, request: { runId: string }) => {
      asked.push(request.runId);
      // The gate out of reach for the ask ahead only.
      return asked.filter((r) => r === 'b-ahead-failed/r1/a1').length === 1 && request.runId === 'b-ahead-failed/r1/a1'
        ? Promise.reject(new Error('gate unreachable'))
        : Promise.resolve({ granted: true, probe: false });
    };
    const asksAhead = dispatchAsksAhead(requestSlot);
    const { launchWhenGranted, input } = await host(undefined, undefined, requestSlot, asksAhead);
    const request = (i: LaunchRunInput, maxPolecats = 2) => ({
      beadId: i.bead.id,
      runId: i.runId,
      workflowId: i.workflowId,
      maxPolecats,
      breakerThreshold: 3,
      breakerProbeInterval: 60_000,
    });
    const launched: LaunchedRun[] = [];
    try {
      for (const [bead, aheadWith] of [
        ['b-ahead', 2],
        ['b-ahead-other', 5],
        ['b-ahead-failed', 2],
      ] as const) {
        const i = input(bead);
        asksAhead.ask('launch', request(i, aheadWith));
        const result = await launchWhenGranted({ ...i, request: request(i) });
        if ('queued' in result) throw new Error(`${bead}: queued`);
        launched.push(result);
      }
    } catch (err) {
      for (const l of launched) await runtime.stop(l.started.handle, 1_000);
      throw err;
    }
    for (const l of launched) await runtime.stop(l.started.handle, 1_000);
    expect(launched.map((l) => l.askedAhead)).toEqual([true, undefined, undefined]);
    // Asked ahead three times; asked again by the launch only for other settings and after a failure.
    expect(asked).toEqual([
      'b-ahead/r1/a1',
      'b-ahead-other/r1/a1',
      'b-ahead-other/r1/a1',
      'b-ahead-failed/r1/a1',
      'b-ahead-failed/r1/a1',
    ]);
  });

  it('takes the launch begun ahead for its input; for other settings stops it and fails; after a failed one launches itself', async () => {
    const asked: string[] = [];
    const requestSlot = (_rig: string, request: { runId: string }) => {
      asked.push(request.runId);
      // The gate out of reach for the launch begun ahead only.
      return request.runId === 'b-la-failed/r1/a1' && asked.filter((r) => r === request.runId).length === 1
        ? Promise.reject(new Error('gate unreachable'))
        : Promise.resolve({ granted: true, probe: false });
    };
    const launchesAhead = new LaunchesAhead({ holdMs: 100 });
    const { launchWhenGranted, input, gtHome } = await host(
      undefined,
      undefined,
      requestSlot,
      undefined,
      launchesAhead,
    );
    const withRequest = (i: LaunchRunInput): LaunchWhenGrantedInput => ({
      ...i,
      reportStart: false,
      request: { beadId: i.bead.id, runId: i.runId, workflowId: i.workflowId, maxPolecats: 2, ...BREAKER },
    });
    // Begun from a convoy's activity, as activities/convoy.ts does.
    const begin = (i: LaunchWhenGrantedInput) =>
      new MockActivityEnvironment().run(() => Promise.resolve(launchesAhead.begin(i)));
    const agentOf = (runId: string) => readHandle(paths.runDir(runId, gtHome));
    const stopAll = async () => {
      for (const runId of ['b-la/r1/a1', 'b-la-other/r1/a1', 'b-la-failed/r1/a1']) {
        const handle = agentOf(runId);
        if (handle) await runtime.stop(handle, 1_000);
      }
    };
    try {
      // The same input: the launch begun ahead answers; asked once, one agent.
      const same = withRequest(input('b-la'));
      expect(await begin(same)).toBe(true);
      await launchesAhead.heard(same.runId).then(
        () => expect.unreachable('heard before its bead took it'),
        (err: unknown) => expect(err).toBeInstanceOf(NotTaken),
      );
      const taken = await launchWhenGranted(same);
      if ('queued' in taken) throw new Error('granted, yet queued');
      expect(taken).toMatchObject({ started: { adopted: false }, launchedAhead: true });
      expect(taken.started.handle).toEqual(agentOf(same.runId));
      await launchesAhead.heard(same.runId); // taken: heard at once

      // Other settings (another target): what it started is stopped and the attempt fails, not retried.
      const other = withRequest(input('b-la-other'));
      expect(await begin(other)).toBe(true);
      const err = await launchWhenGranted({ ...other, targetBranch: 'elsewhere' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect(err).toMatchObject({ type: Failure.LaunchedOtherwise, nonRetryable: true });
      const stopped = agentOf(other.runId);
      expect(stopped && (await runtime.status(stopped, paths.runDir(other.runId, gtHome))).state).toBe('exited');

      // A launch begun ahead that failed: the activity launches as a retry would.
      const failed = withRequest(input('b-la-failed'));
      expect(await begin(failed)).toBe(true);
      const relaunched = await launchWhenGranted(failed);
      if ('queued' in relaunched) throw new Error('granted, yet queued');
      expect(relaunched.started.adopted).toBe(false);
      expect(relaunched.launchedAhead).toBeUndefined();
    } finally {
      await stopAll();
    }
    expect(asked).toEqual(['b-la/r1/a1', 'b-la-other/r1/a1', 'b-la-failed/r1/a1', 'b-la-failed/r1/a1']);
  });

  it('stops an agent launched ahead that no bead took once its bead has closed, and the gateway never hears it', async () => {
    const closed = new Set<string>();
    const launchesAhead = new LaunchesAhead({
      workflowRunning: (workflowId) => Promise.resolve(!closed.has(workflowId)),
      checkEveryMs: 50,
      holdMs: 100,
    });
    const { input, gtHome } = await host(undefined, undefined, undefined, undefined, launchesAhead);
    const i = input('b-la-untaken');
    const runDir = paths.runDir(i.runId, gtHome);
    await new MockActivityEnvironment().run(() =>
      Promise.resolve(
        launchesAhead.begin({
          ...i,
          request: { beadId: i.bead.id, runId: i.runId, workflowId: i.workflowId, maxPolecats: 1, ...BREAKER },
        }),
      ),
    );
    let handle: ReturnType<typeof readHandle>;
    try {
      await eventually(() => !!(handle = readHandle(runDir)), 30_000, 'the agent launched ahead started');
      // Held, then "try again": its bead has not taken it yet.
      const held = await launchesAhead.heard(i.runId).catch((e: unknown) => e);
      expect(held).toMatchObject({ later: true });
      expect((await runtime.status(handle!, runDir)).state).toBe('running');
      // Its bead closed without taking it: stopped, and refused from then on.
      closed.add(i.workflowId);
      await eventually(
        async () => (await runtime.status(handle!, runDir)).state === 'exited',
        30_000,
        'the agent nobody took stopped',
      );
    } finally {
      if (handle!) await runtime.stop(handle, 1_000);
    }
  });

  it('fails when the gate cannot be asked, and starts nothing', async () => {
    const { launchWhenGranted, input, gtHome } = await host(undefined, undefined, () =>
      Promise.reject(new Error('gate unreachable')),
    );
    const i = input('b-unasked');
    const request = { beadId: 'b-unasked', runId: i.runId, workflowId: i.workflowId, maxPolecats: 1 };
    const err = await launchWhenGranted({
      ...i,
      request: { ...request, breakerThreshold: 3, breakerProbeInterval: 60_000 },
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('gate unreachable');
    expect(readHandle(paths.runDir(i.runId, gtHome))).toBeUndefined();
  });

  it('says a failed preparation was the preparation, and keeps its type (not retried)', async () => {
    const { launch, input } = await host();
    const err = await launch(input('b-no-target', 'no-such-branch')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: Failure.TargetMissing, nonRetryable: true });
    expect((err as Error).message).toMatch(
      /^preparing the worktree failed: target branch 'no-such-branch' does not exist/,
    );
  });
});
