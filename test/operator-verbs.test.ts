/**
 * Issue 14 item 3, the missing verbs, through the real `gt` against a real town (dev server, git, scripted agents):
 * `gt bead cancel` mid-run stops the agent process, withdraws a queued MR and is counted by the convoy, with the
 * reason in `gt bead status`; `gt bead list` and `gt status` in text and JSON (shapes checked with zod), with paging;
 * `gt rig remove` refuses with open work, drains with `--drain`, and frees the name.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConvoyClient } from '../client/convoys';
import { BeadStatus } from '../domain/bead';
import type { RunPolicy } from '../domain/rig';
import { processExists } from './helpers/pids';
import { createRepo, type TestRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, runGt, startTestTown, type TestTown } from './helpers/town';

const exec = promisify(execFile);
const hasTmux = await exec('tmux', ['-V']).then(
  () => true,
  () => false,
);
const socket = `gt-status-${process.pid}`;

let t: TestTown;
let env: NodeJS.ProcessEnv;
let testDir: string;
let repo: TestRepo;
beforeAll(async () => {
  testDir = mkdtempSync(join(tmpdir(), 'gt-verbs-'));
  t = await startTestTown();
  env = t.cliEnv();
  repo = await createRepo();
});
afterAll(async () => {
  // Only our own tmux server (its own socket), never anyone else's.
  if (hasTmux) await exec('tmux', ['-L', socket, 'kill-server']).catch(() => undefined);
  await t?.stop();
});

const addRig = (name: string, maxPolecats = 4, policy?: Partial<RunPolicy>) =>
  t.addRig({ name, repo: repo.origin, agent: agentScript('hold'), env: { TEST_DIR: testDir }, maxPolecats, policy });
const release = (beadId: string) => writeFileSync(join(testDir, `go-${beadId}`), '');
/** The pid the bead's (latest) agent recorded with `$$`. */
const pidOf = (beadId: string): number | undefined => {
  let text = '';
  try {
    text = readFileSync(join(testDir, 'pids'), 'utf8');
  } catch {
    return undefined;
  }
  const line = text
    .trim()
    .split('\n')
    .filter((l) => l.startsWith(`${beadId} `))
    .pop();
  return line ? Number(line.split(' ')[2]) : undefined;
};
const Json = <S extends z.ZodType>(schema: S, stdout: string) => schema.parse(JSON.parse(stdout));
const oneLine = (stderr: string) => {
  expect(stderr.trim().split('\n')).toHaveLength(1);
  return stderr.trim();
};

const CancellationJson = z.object({
  bead: z.looseObject({
    beadId: z.string(),
    status: z.literal('cancelled'),
    cancellation: z.object({ reason: z.string(), by: z.string(), requestedAt: z.string() }),
  }),
  stoppedRuns: z.array(z.string()),
  mergeRequest: z.object({ mrId: z.string(), withdrawn: z.boolean(), note: z.string() }).optional(),
  convoy: z.object({ convoyId: z.string(), beadStatus: z.string() }).optional(),
});

const BeadListJson = z.object({
  beads: z.array(
    z.object({
      beadId: z.string(),
      title: z.string(),
      rig: z.string(),
      convoyId: z.string().optional(),
      status: z.union([BeadStatus, z.enum(['terminated', 'timed_out'])]),
      round: z.number().int().optional(),
      currentRunId: z.string().optional(),
      startedAt: z.iso.datetime(),
      endedAt: z.iso.datetime().optional(),
      ageMs: z.number().nonnegative(),
    }),
  ),
  nextPageToken: z.string().optional(),
});

const TownStatusJson = z.object({
  at: z.iso.datetime(),
  rigs: z.array(
    z.object({
      name: z.string(),
      dispatch: z.enum(['open', 'paused', 'breaker_open', 'breaker_half_open']),
      paused: z.object({ by: z.string(), reason: z.string(), since: z.string() }).optional(),
      capacity: z.object({ running: z.number().int(), max: z.number().int(), waiting: z.number().int() }),
      mergeQueue: z.object({ depth: z.number().int(), merging: z.array(z.string()), paused: z.boolean() }),
      beadsOpen: z.number().int(),
      agents: z.array(
        z.object({
          beadId: z.string(),
          title: z.string(),
          runId: z.string(),
          host: z.string().optional(),
          startedAt: z.string(),
          ageMs: z.number().nonnegative(),
          lastProgress: z.string().optional(),
          quietMs: z.number().nonnegative(),
        }),
      ),
    }),
  ),
  escalations: z.array(
    z.object({
      id: z.string(),
      severity: z.string(),
      reason: z.string(),
      beadId: z.string().optional(),
      convoyId: z.string().optional(),
      raisedAt: z.string(),
    }),
  ),
  convoys: z.array(
    z.object({
      convoyId: z.string(),
      title: z.string(),
      rig: z.string(),
      status: z.string(),
      counts: z.record(z.string(), z.number()),
    }),
  ),
  agentsNotShown: z.number().int(),
});

describe('gt bead cancel', () => {
  it('mid-run stops the agent process, withdraws the queued MR, and the convoy counts both cancelled; the reason shows in gt bead status', async () => {
    // The default heartbeat timeout (a minute): a cancellation rides on a heartbeat's answer, and the SDK would send
    // those only every 48 s unless the worker says otherwise.
    await addRig('vc', 4, { heartbeatTimeout: 60_000 });
    const convoys = new ConvoyClient(t.town);
    await convoys.start({
      id: 'vcc',
      title: 'Cancelled in part',
      rig: 'vc',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B' },
        { id: 'c', title: 'C', dependsOn: ['a'] },
      ],
    });
    // The queue is held so b's merge request waits in it when b is cancelled.
    expect((await runGt(['mq', 'vc', 'pause'], env)).code).toBe(0);
    const pidA = await eventually(() => pidOf('vcc-a'), 60_000, 'the agent of vcc-a started');
    await eventually(() => pidOf('vcc-b'), 60_000, 'the agent of vcc-b started');
    expect(processExists(pidA)).toBe(true);
    release('vcc-b');
    await eventually(
      async () => (await t.town.mergeQueue('vc')).queue.some((q) => q.mrId === 'mr:vcc-b:1'),
      60_000,
      'the MR of vcc-b queued',
    );

    const a = await runGt(
      ['bead', 'cancel', 'vcc-a', '--reason', 'superseded by a better plan', '--by', 'tester'],
      env,
      20_000,
    );
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/^bead vcc-a cancelled by tester: superseded by a better plan$/m);
    expect(a.stdout).toMatch(/^stopped {2}vcc-a\/r1\/a1$/m);
    expect(a.stdout).toMatch(/^convoy {3}vcc records it cancelled$/m);
    // The bead ended only after its supervising activity stopped the agent: gone by the time the command returns.
    expect(processExists(pidA), `agent process ${pidA}`).toBe(false);

    const b = await runGt(['bead', 'cancel', 'vcc-b', '--reason', 'not needed', '--json'], env);
    expect(b.code, b.stderr).toBe(0);
    const bj = Json(CancellationJson, b.stdout);
    expect(bj.mergeRequest).toEqual({ mrId: 'mr:vcc-b:1', withdrawn: true, note: 'withdrawn from the merge queue' });
    expect(bj.convoy).toEqual({ convoyId: 'vcc', beadStatus: 'cancelled' });
    expect(bj.bead.cancellation).toMatchObject({ reason: 'not needed' });
    expect((await t.town.mergeQueue('vc')).queue).toEqual([]);

    const status = await runGt(['bead', 'status', 'vcc-a'], env);
    expect(status.stdout).toMatch(/^status {3}cancelled — cancelled by tester: superseded by a better plan$/m);
    expect(status.stdout).toMatch(/^cancel {3}by tester at \S+: superseded by a better plan$/m);

    const final = await eventually(
      async () => ((s) => s.status === 'failed' && s)(await convoys.state('vcc')),
      30_000,
      'convoy vcc ended',
    );
    expect(Object.fromEntries(final.beads.map((x) => [x.id, x.status]))).toEqual({
      a: 'cancelled',
      b: 'cancelled',
      c: 'blocked',
    });
    expect(final.beads.find((x) => x.id === 'a')?.reason).toBe('cancelled by tester: superseded by a better plan');
    await runGt(['mq', 'vc', 'resume'], env);

    const again = await runGt(['bead', 'cancel', 'vcc-a'], env);
    expect(again.code).toBe(1);
    expect(oneLine(again.stderr)).toBe('gt: bead vcc-a is already cancelled: nothing to cancel');
    const unknown = await runGt(['bead', 'cancel', 'no-such-bead'], env);
    expect(unknown.code).toBe(1);
    expect(oneLine(unknown.stderr)).toBe("gt: unknown bead 'no-such-bead'");
  });
});

describe('gt bead list and gt status', () => {
  it('list the running beads and agents in text and JSON, page by --page-token, and show a paused rig', async () => {
    await addRig('vl');
    await t.town.sling('vl', { id: 'vl-one', title: 'First listed' });
    await t.town.sling('vl', { id: 'vl-two', title: 'Second listed' });
    await eventually(() => pidOf('vl-one') && pidOf('vl-two'), 60_000, 'both agents started');
    await eventually(async () => (await t.town.beadState('vl-two')).runs[0]?.lastProgress, 30_000, 'progress reported');

    const list = await runGt(['bead', 'list', '--rig', 'vl', '--json'], env);
    expect(list.code, list.stderr).toBe(0);
    const lj = Json(BeadListJson, list.stdout);
    expect(lj.beads.map((b) => b.beadId).sort()).toEqual(['vl-one', 'vl-two']);
    expect(lj.beads.find((b) => b.beadId === 'vl-one')).toMatchObject({
      title: 'First listed',
      rig: 'vl',
      status: 'in_progress',
      round: 1,
      currentRunId: 'vl-one/r1/a1',
    });
    expect(lj.nextPageToken).toBeUndefined();

    const first = Json(
      BeadListJson,
      (await runGt(['bead', 'list', '--rig', 'vl', '--limit', '1', '--json'], env)).stdout,
    );
    expect(first.beads).toHaveLength(1);
    expect(first.nextPageToken).toBeTruthy();
    const second = Json(
      BeadListJson,
      (
        await runGt(
          ['bead', 'list', '--rig', 'vl', '--limit', '1', '--page-token', first.nextPageToken!, '--json'],
          env,
        )
      ).stdout,
    );
    expect([...first.beads, ...second.beads].map((b) => b.beadId).sort()).toEqual(['vl-one', 'vl-two']);
    const all = Json(
      BeadListJson,
      (await runGt(['bead', 'list', '--rig', 'vl', '--limit', '1', '--all', '--json'], env)).stdout,
    );
    expect(all.beads).toHaveLength(2);
    expect(
      Json(BeadListJson, (await runGt(['bead', 'list', '--rig', 'vl', '--status', 'closed', '--json'], env)).stdout)
        .beads,
    ).toEqual([]);

    const text = await runGt(['bead', 'list', '--rig', 'vl', '--limit', '1'], env);
    expect(text.stdout).toMatch(/^BEAD +STATUS +RIG +CONVOY +ROUND +RUN +AGE +TITLE$/m);
    expect(text.stdout).toMatch(/^vl-(one|two) +in_progress +vl +1 +r1\/a1 +\S+ +(First|Second) listed$/m);
    expect(text.stdout).toMatch(/^more beads: `gt bead list --page-token \S+` \(same filters\), or --all$/m);
    const bad = await runGt(['bead', 'list', '--status', 'sleeping'], env);
    expect(bad.code).toBe(1);
    expect(oneLine(bad.stderr)).toMatch(/^gt: invalid bead list options: /);

    expect((await runGt(['rig', 'pause', 'vl', '--reason', 'maintenance'], env)).code).toBe(0);
    const status = await runGt(['status', '--json'], env);
    expect(status.code, status.stderr).toBe(0);
    const sj = Json(TownStatusJson, status.stdout);
    const vl = sj.rigs.find((r) => r.name === 'vl')!;
    expect(vl).toMatchObject({
      dispatch: 'paused',
      paused: { reason: 'maintenance' },
      capacity: { running: 2, max: 4, waiting: 0 },
      mergeQueue: { depth: 0 },
      beadsOpen: 2,
    });
    expect(vl.agents.map((a) => a.runId).sort()).toEqual(['vl-one/r1/a1', 'vl-two/r1/a1']);
    expect(vl.agents.find((a) => a.beadId === 'vl-two')).toMatchObject({
      lastProgress: 'holding vl-two',
      host: 'test-host',
    });

    const statusText = await runGt(['status'], env);
    expect(statusText.stdout).toMatch(
      /^town at \S+: \d+ rig\(s\), \d+ agent\(s\) running, \d+ open escalation\(s\), \d+ convoy\(s\) in flight$/m,
    );
    expect(statusText.stdout).toMatch(
      /^rig vl {2}PAUSED by \S+: maintenance; 2\/4 slots, 0 waiting; 2 bead\(s\) open; merge queue 0 waiting$/m,
    );
    expect(statusText.stdout).toMatch(
      /^ {2}▶ vl-two\/r1\/a1 {2}\S+ on test-host {2}last progress \S+ ago: holding vl-two$/m,
    );

    // Not a terminal: --watch prints the picture (plain lines, no escape codes) and keeps watching until stopped.
    const watch = spawn(gtBin, ['status', '--watch', '--interval', '500ms'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    watch.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await eventually(() => /^rig vl /m.test(out), 30_000, 'gt status --watch printed the town');
      release('vl-one');
      await eventually(
        () => (out.match(/^town at /gm) ?? []).length >= 2,
        60_000,
        'a second picture after vl-one finished',
      );
      expect(watch.exitCode).toBeNull();
      expect(out.includes('\x1b[')).toBe(false);
    } finally {
      watch.kill('SIGTERM');
    }
    expect((await runGt(['rig', 'resume', 'vl'], env)).code).toBe(0);
    release('vl-two');
  });
});

describe('gt status --watch on a terminal', () => {
  it.skipIf(!hasTmux)(
    'redraws one picture in place as the town changes, and Ctrl-C leaves the screen as it was',
    async () => {
      await addRig('vw');
      await exec(
        'tmux',
        [
          '-L',
          socket,
          '-f',
          '/dev/null',
          'new-session',
          '-d',
          '-s',
          'status',
          '-x',
          '160',
          '-y',
          '40',
          `${gtBin} status --watch --interval 300ms; echo "exit=$?"; sleep 600`,
        ],
        { env },
      );
      const screen = async () => (await exec('tmux', ['-L', socket, 'capture-pane', '-p', '-t', 'status'])).stdout;
      const showing = (what: RegExp) =>
        eventually(async () => ((s) => what.test(s) && s)(await screen()), 60_000, `screen showing ${what}`);
      await showing(/^rig vw {2}dispatch open; 0\/4 slots/m);
      expect((await runGt(['rig', 'pause', 'vw', '--reason', 'watched'], env)).code).toBe(0);
      const paused = await showing(/^rig vw {2}PAUSED by \S+: watched;/m);
      // In place: one picture on the screen, not one after another.
      expect(paused.match(/^town at /gm)).toHaveLength(1);
      expect(paused.match(/^rig vw /gm)).toHaveLength(1);
      await exec('tmux', ['-L', socket, 'send-keys', '-t', 'status', 'C-c']);
      const end = await showing(/^exit=\d+$/m);
      expect(end).toMatch(/^exit=130$/m);
      expect(end).not.toMatch(/^rig vw /m);
      expect((await runGt(['rig', 'resume', 'vw'], env)).code).toBe(0);
    },
  );
});

describe('gt rig remove', () => {
  it('refuses with open work in one line, drains with --drain (progress, then removed), and the name can be added again', async () => {
    await addRig('vr');
    await t.town.sling('vr', { id: 'vr-held', title: 'Held while the rig is removed' });
    await eventually(() => pidOf('vr-held'), 60_000, 'the agent of vr-held started');

    const refused = await runGt(['rig', 'remove', 'vr'], env);
    expect(refused.code).toBe(1);
    expect(oneLine(refused.stderr)).toMatch(
      /^gt: rig vr has open work: 1 bead\(s\) in flight \(vr-held in_progress\).*; let it finish, cancel it .* or `gt rig remove vr --drain`$/,
    );

    const drain = spawn(gtBin, ['rig', 'remove', 'vr', '--drain'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    drain.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    drain.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => drain.on('exit', r));
    await eventually(() => /draining rig vr: 1 bead\(s\) in flight/.test(stderr), 30_000, 'drain progress');
    expect((await t.town.dispatchState('vr')).paused?.reason).toMatch(/draining for removal/);
    release('vr-held');
    expect(await exited, stderr).toBe(0);
    expect(stdout).toMatch(/^rig vr removed after draining for \S+$/m);
    expect((await repo.log()).map((c) => c.subject)).toContain('work for vr-held');

    const list = await runGt(['rig', 'list', '--json'], env);
    expect((JSON.parse(list.stdout) as { name: string }[]).map((r) => r.name)).not.toContain('vr');
    const sling = await runGt(['sling', 'vr', 'Too late'], env);
    expect(sling.code).toBe(1);
    expect(oneLine(sling.stderr)).toBe("gt: unknown rig 'vr': it was removed (add it again with `gt rig add`)");

    // The name is free again, with a fresh (unpaused) dispatch gate: a bead slung there runs and merges.
    await addRig('vr');
    const { handle } = await t.town.sling('vr', { id: 'vr-again', title: 'On the re-added rig' });
    release('vr-again');
    expect((await handle.result()).status).toBe('closed');
    const idle = await runGt(['rig', 'remove', 'vr', '--json'], env);
    expect(idle.code, idle.stderr).toBe(0);
    expect(JSON.parse(idle.stdout)).toMatchObject({ rig: 'vr', removed: true, drained: false });
  });

  it('--drain finishes what runs, then names the beads that would need a new agent run instead of waiting forever', async () => {
    await addRig('vs', 1);
    await t.town.sling('vs', { id: 'vs-running', title: 'Holds the only slot' });
    await eventually(() => pidOf('vs-running'), 60_000, 'the agent of vs-running started');
    await t.town.sling('vs', { id: 'vs-waiting', title: 'Waits for a slot' });
    await eventually(
      async () => (await t.town.dispatchState('vs')).waiting.length === 1,
      30_000,
      'vs-waiting queued for a slot',
    );

    const drain = spawn(gtBin, ['rig', 'remove', 'vs', '--drain'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    drain.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => drain.on('exit', r));
    await eventually(() => /draining rig vs: 2 bead\(s\) in flight/.test(stderr), 30_000, 'drain progress');
    release('vs-running');
    expect(await exited).toBe(1);
    expect(stderr.trim().split('\n').pop()).toBe(
      'gt: rig vs is drained of running work, but vs-waiting wait(s) for a new agent run, which cannot start while dispatch is paused: cancel them (`gt bead cancel`, `gt convoy cancel`) and run this again, or `gt rig resume vs`',
    );
    expect((await t.town.beadState('vs-running')).status).toBe('closed');
    // The rig stays (paused); cancelling what waits lets the removal through.
    expect((await runGt(['bead', 'cancel', 'vs-waiting'], env)).code).toBe(0);
    const removed = await runGt(['rig', 'remove', 'vs', '--drain'], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toMatch(/^rig vs removed after draining/m);
  });
});
