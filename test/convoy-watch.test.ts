/**
 * Issue 17 acceptance: `gt convoy watch` in a real pseudo-terminal (a tmux pane of its own tmux server) redraws one
 * screen — tree, counts, elapsed time, merge queue — whose counts change as the test lets beads finish one by one;
 * when stdout is not a terminal the same command prints plain lines, one per change, and no escape codes.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { watchFrame } from '../client/convoy-watch';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyBeadStatus, ConvoyState } from '../domain/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, repoRoot, runGt, startTestTown, type TestTown } from './helpers/town';

const run = promisify(execFile);
const hasTmux = await run('tmux', ['-V']).then(
  () => true,
  () => false,
);
if (!hasTmux) console.warn('gt convoy watch terminal test skipped: no tmux (apt-get install tmux)');

let t: TestTown;
let convoys: ConvoyClient;
let testDir: string;
const socket = `gt-watch-${process.pid}`;
const ARTIFACTS = join(repoRoot, 'test', '.artifacts');
beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  testDir = mkdtempSync(join(tmpdir(), 'gt-watch-'));
  t = await startTestTown();
  convoys = new ConvoyClient(t.town);
  const repo = await createRepo();
  await t.addRig({ name: 'watch', repo: repo.origin, agent: agentScript('convoy-go'), env: { TEST_DIR: testDir } });
});
afterAll(async () => {
  // Only our own tmux server (its own socket), never anyone else's.
  if (hasTmux) await run('tmux', ['-L', socket, 'kill-server']).catch(() => undefined);
  await t?.stop();
});

const release = (beadId: string) => writeFileSync(join(testDir, `go-${beadId}`), '');
const running = async (convoyId: string, ids: string[]) => {
  const s = await convoys.state(convoyId);
  return ids.every((id) => s.beads.find((b) => b.id === id)?.status === 'running');
};

describe('the watch frame', () => {
  it('never outgrows the terminal: merged and waiting beads give way to running, failed and blocked ones', () => {
    const now = Date.parse('2026-11-29T12:00:00Z');
    const status = (i: number): ConvoyBeadStatus =>
      i < 250 ? 'closed' : i < 266 ? 'running' : i === 266 ? 'failed' : i === 267 ? 'blocked' : 'pending';
    const beads = Array.from({ length: 300 }, (_, i) => ({
      id: `b${i}`,
      beadId: `big-b${i}`,
      title: `Bead ${i}`,
      priority: 2,
      dependsOn: i >= 16 ? [`b${i - 16}`] : [],
      status: status(i),
    }));
    const state = {
      convoyId: 'big',
      title: 'Big',
      description: '',
      rig: 'r',
      mergeMode: 'review-and-merge',
      onFailure: 'stop-dependents',
      status: 'running',
      waitingFor: 'beads',
      beads,
      escalations: [],
      createdAt: '2026-11-29T11:58:00Z',
      launchedAt: '2026-11-29T11:58:30Z',
      continuedAsNew: 0,
    } as ConvoyState;
    const frame = watchFrame(
      state,
      new Map(),
      { merging: ['b250'], waiting: ['b251', 'b252'] },
      { rows: 30, cols: 90, color: false, now },
    );
    expect(frame.length).toBeLessThanOrEqual(30);
    expect(Math.max(...frame.map((l) => [...l].length))).toBeLessThanOrEqual(90);
    expect(frame[0]).toBe('convoy big  Big   elapsed 1m30s');
    expect(frame[2]).toMatch(/ 250\/300 merged, 16 running, 32 waiting, 1 failed, 1 blocked$/);
    expect(frame[3]).toBe('merge queue  merging b250; waiting 2: b251, b252');
    const rows = frame.slice(5, -1).join('\n');
    for (let i = 250; i < 268; i++) expect(rows).toMatch(new RegExp(`[▶✗⊘] b${i} `));
    expect(rows).toMatch(/^ +▶ b250 +running +merging now$/m);
    expect(rows).toMatch(/^ +▶ b251 +running +in merge queue \(#1\)$/m);
    expect(frame.at(-1)).toBe('… 276 more not shown (250/276 merged, 26 waiting)');
  });
});

describe('gt convoy watch', () => {
  /** What a case leaves that would hold the next one up should it fail midway: its agents waiting, the queue paused. */
  let leftover: (() => Promise<unknown>) | undefined;
  afterEach(async () => {
    await leftover?.();
    leftover = undefined;
  });

  it.skipIf(!hasTmux)(
    'on a terminal redraws one screen whose counts change as beads merge, then prints the final tree',
    async () => {
      await convoys.start({
        id: 'wt',
        title: 'Watched live',
        rig: 'watch',
        beads: [
          { id: 'a', title: 'A' },
          { id: 'b', title: 'B' },
          { id: 'c', title: 'C', dependsOn: ['a'] },
        ],
      });
      leftover = async () => {
        await runGt(['mq', 'watch', 'resume'], t.cliEnv());
        for (const id of ['wt-a', 'wt-b', 'wt-c']) release(id);
      };
      await eventually(() => running('wt', ['a', 'b']), 60_000, 'a and b running');

      await run(
        'tmux',
        [
          '-L',
          socket,
          '-f',
          '/dev/null',
          'new-session',
          '-d',
          '-s',
          'watch',
          '-x',
          '100',
          '-y',
          '30',
          `${gtBin} convoy watch wt; echo "exit=$?"; sleep 600`,
        ],
        { env: t.cliEnv() },
      );
      const screen = async () => (await run('tmux', ['-L', socket, 'capture-pane', '-p', '-t', 'watch'])).stdout;
      let shots = 0;
      /** Waits for the screen to show `what`; keeps what it saw in test/.artifacts (the screens a failure shows). */
      const showing = async (what: RegExp, timeoutMs = 60_000) => {
        const seen = await eventually(
          async () => ((s) => what.test(s) && s)(await screen()),
          timeoutMs,
          `screen showing ${what}`,
        );
        writeFileSync(join(ARTIFACTS, `convoy-watch-screen-${++shots}.txt`), seen);
        return seen;
      };

      const first = await showing(/0\/3 merged, 2 running, 1 waiting/);
      expect(first).toMatch(/^convoy wt {2}Watched live {3}elapsed \d/m);
      expect(first).toMatch(/^status running — /m);
      expect(first).toMatch(/^merge queue {2}nothing merging; waiting none$/m);
      expect(first).toMatch(/^▶ a +in_progress +r1\/a1/m);
      expect(first).toMatch(/^ {2}· c +waiting/m);

      // With the merge queue held, a finished bead shows as waiting on it, in the header and on its row.
      expect((await runGt(['mq', 'watch', 'pause'], t.cliEnv())).code).toBe(0);
      release('wt-a');
      // The run's host hands the ticket over as it publishes the branch, a moment before the bead's own task records
      // it in review: a screen between the two shows the queue ahead of the row, so the wait is for the row.
      const queued = await showing(/^▶ a +in_review +r1 +in merge queue \(#1\)$/m);
      expect(queued).toMatch(/^merge queue {2}nothing merging; waiting 1: a$/m);
      expect((await runGt(['mq', 'watch', 'resume'], t.cliEnv())).code).toBe(0);
      // c's row shows its own status once the watch has read it (until then, the convoy's word: running).
      const second = await showing(/^ {2}▶ c +(open|in_progress) /m);
      expect(second).toMatch(/1\/3 merged, 2 running/);
      expect(second).toMatch(/^✓ a +merged +[0-9a-f]{10}$/m);
      // Redrawn in place: one header, one counts line, whatever changed before.
      expect(second.match(/^convoy wt /gm)).toHaveLength(1);
      expect(second.match(/\d\/3 merged/g)).toHaveLength(1);

      release('wt-b');
      const third = await showing(/2\/3 merged, 1 running/);
      expect(third.match(/\d\/3 merged/g)).toHaveLength(1);

      release('wt-c');
      // The live screen is left for the final tree, printed like `gt convoy status`, and the exit code of a landed convoy.
      const end = await showing(/^exit=\d+$/m);
      expect(end).toMatch(/^exit=0$/m);
      expect(end).toMatch(/^status +landed/m);
      expect(end).toMatch(/^beads +3\/3 merged, 0 running/m);
      expect(end).toMatch(/^ {2}✓ c +closed +a +r1\/a1 done/m);
    },
  );

  it('when stdout is not a terminal prints one plain line per change, then the final tree', async () => {
    await convoys.start({
      id: 'wn',
      title: 'Watched by a pipe',
      rig: 'watch',
      beads: [
        { id: 'x', title: 'X' },
        { id: 'y', title: 'Y', dependsOn: ['x'] },
      ],
    });
    await eventually(() => running('wn', ['x']), 60_000, 'x running');
    // Streamed, so the test lets x finish only once the watch has printed where things stand.
    const child = spawn(gtBin, ['convoy', 'watch', 'wn'], { env: t.cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const watched = { stdout: '', stderr: '', code: -1 };
    child.stdout.on('data', (d: Buffer) => (watched.stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (watched.stderr += d.toString()));
    const exited = new Promise<void>((resolve) =>
      child.on('close', (code) => resolve(void (watched.code = code ?? -1))),
    );
    await eventually(() => watched.stderr.includes('convoy running'), 60_000, 'the first lines of gt convoy watch');
    release('wn-x');
    await eventually(() => running('wn', ['y']), 60_000, 'y running');
    // The watch polls: y finishes only once it has printed x's merge, or both may fall into one of its looks.
    await eventually(() => /\] x: closed /.test(watched.stderr), 60_000, "the watch's line for x's merge");
    release('wn-y');
    await exited;
    expect(watched.code, watched.stderr).toBe(0);
    expect(watched.stdout + watched.stderr).not.toContain('\x1b');
    const lines = watched.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^\[[\d.ms]+\] x: running {2}· 0\/2 merged, 1 running, 1 waiting$/);
    expect(lines).toContainEqual(expect.stringMatching(/^\[[\d.ms]+\] x: closed \([0-9a-f]{10}\) {2}· 1\/2 merged/));
    expect(lines).toContainEqual(
      expect.stringMatching(/^\[[\d.ms]+\] y: closed \([0-9a-f]{10}\) {2}· 2\/2 merged, 0 running$/),
    );
    expect(lines.at(-1)).toMatch(/^\[[\d.ms]+\] convoy landed: /);
    expect(watched.stdout).toMatch(/^beads +2\/2 merged, 0 running/m);
    expect(watched.stdout).toMatch(/^ {2}✓ y +closed/m);
  });
});
