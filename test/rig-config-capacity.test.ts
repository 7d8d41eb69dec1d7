/**
 * Issue 14 item 8: work already slung follows the rig's current capacity. Six beads are slung under maxPolecats 1;
 * `gt rig update` raises it to 3 and then lowers it to 2 while they drain, and one of them retries (its second
 * attempt asks the gate again with the snapshot it was slung with, maxPolecats 1). Concurrency is read from the
 * agents' own start/end marks and the test's marks of when the gate took each value (never from timing): it reaches
 * the new value, never exceeds it, and the old snapshot never takes the gate back. A second test shows a gate that
 * missed `gt rig update`'s signal catching up with the rig when a bead slung under the new settings asks.
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../domain/ids';
import { updateRigUpdate } from '../domain/messages';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

/** What the events file holds: the agents' marks, and the test's marks of a change asked for and taken by the gate. */
type Mark =
  | { kind: 'start'; run: string }
  | { kind: 'end'; run: string }
  | { kind: 'update'; max: number }
  | { kind: 'applied'; max: number }
  | { kind: 'retried' };

const marks = (dir: string): Mark[] =>
  existsSync(join(dir, 'events'))
    ? readFileSync(join(dir, 'events'), 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line): Mark => {
          const [kind, value] = line.split(' ') as [Mark['kind'], string];
          if (kind === 'retried') return { kind };
          if (kind === 'start' || kind === 'end') return { kind, run: value };
          return { kind, max: Number(value) };
        })
    : [];

/** Every start with the agents running at that moment and the limit it had to respect (the larger one mid-change). */
function startsWithConcurrency(all: Mark[]) {
  const running = new Set<string>();
  let limit = 1;
  let changingTo: number | undefined;
  let retried = false;
  const starts: { run: string; concurrent: number; limit: number; afterRetry: boolean }[] = [];
  for (const m of all) {
    if (m.kind === 'retried') retried = true;
    else if (m.kind === 'update') changingTo = m.max;
    else if (m.kind === 'applied') [limit, changingTo] = [m.max, undefined];
    else if (m.kind === 'end') running.delete(m.run);
    else {
      running.add(m.run);
      starts.push({
        run: m.run,
        concurrent: running.size,
        limit: Math.max(limit, changingTo ?? 0),
        afterRetry: retried,
      });
    }
  }
  return starts;
}

const release = (dir: string, run: string) => writeFileSync(join(dir, `release-${run.replaceAll('/', '_')}`), '');

describe('rig configuration for work already slung', () => {
  it('follows maxPolecats raised and lowered by `gt rig update` while old beads drain, never the old value', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-capacity-'));
    const mark = (line: string) => appendFileSync(join(dir, 'events'), `${line}\n`);
    await t.addRig({
      name: 'cap',
      repo: repo.origin,
      agent: agentScript('run-capacity'),
      maxPolecats: 1,
      env: { TEST_DIR: dir },
    });
    const beads = ['cap-1', 'cap-2', 'cap-3', 'cap-4', 'cap-5', 'cap-6'];
    const handles = [];
    for (const id of beads) handles.push((await t.town.sling('cap', { id, title: `capacity ${id}` })).handle);
    const gate = () => t.town.dispatchState('cap');
    await eventually(async () => (await gate()).waiting.length === 5, 60_000, 'one bead granted, five waiting');
    await eventually(() => marks(dir).some((m) => m.kind === 'start'), 60_000, 'the first agent started');

    mark('update 3');
    const raised = await runGt(['rig', 'update', 'cap', '--max-polecats', '3'], t.cliEnv());
    expect(raised.code, raised.stderr).toBe(0);
    await eventually(async () => (await gate()).settings.maxPolecats === 3, 30_000, 'the gate took maxPolecats 3');
    mark('applied 3');
    // The beads slung under maxPolecats 1 now run three at a time.
    await eventually(() => startsWithConcurrency(marks(dir)).some((s) => s.concurrent === 3), 60_000, '3 agents');

    mark('update 2');
    const lowered = await runGt(['rig', 'update', 'cap', '--max-polecats', '2'], t.cliEnv());
    expect(lowered.code, lowered.stderr).toBe(0);
    await eventually(async () => (await gate()).settings.maxPolecats === 2, 30_000, 'the gate took maxPolecats 2');
    mark('applied 2');

    // The first agent to have started crashes: its second attempt asks again with the snapshot it was slung with
    // (maxPolecats 1). Which bead the gate granted first is the order its requests reached the gate, not sling order.
    const crashed = marks(dir).flatMap((m) => (m.kind === 'start' ? [m.run] : []))[0]!;
    const crashedBead = crashed.split('/')[0];
    writeFileSync(join(dir, `crash-${crashedBead}`), '');
    release(dir, crashed);
    await eventually(
      async () => (await gate()).waiting.some((s) => s.runId === `${crashedBead}/r1/a2`),
      60_000,
      `${crashedBead} asking again`,
    );
    const afterRetry = await gate();
    expect(afterRetry.settings.maxPolecats).toBe(2);
    mark('retried');

    // Drain: whenever the rig is as full as the gate should make it (two agents, or all that are left), release the
    // oldest running agent; so every start shows how many agents the gate lets run beside it.
    const TOTAL_RUNS = 7; // six beads, one of them twice
    const released = new Set([crashed]);
    for (;;) {
      const ended = marks(dir).filter((m) => m.kind === 'end').length;
      if (ended === TOTAL_RUNS) break;
      const next = await eventually(
        () => {
          const all = marks(dir);
          const started = all.flatMap((m) => (m.kind === 'start' ? [m.run] : []));
          const running = started.filter((r) => !all.some((m) => m.kind === 'end' && m.run === r));
          if (running.length < Math.min(2, TOTAL_RUNS - ended)) return undefined;
          return started.find((r) => !released.has(r));
        },
        90_000,
        'the rig to run two agents (or all that are left)',
      );
      released.add(next);
      release(dir, next);
      await eventually(() => marks(dir).some((m) => m.kind === 'end' && m.run === next), 60_000, `${next} ended`);
    }
    for (const h of handles) expect((await h.result()).status).toBe('closed');

    const starts = startsWithConcurrency(marks(dir));
    expect(starts).toHaveLength(7);
    for (const s of starts)
      expect(s.concurrent, `${s.run} started with ${s.concurrent} running`).toBeLessThanOrEqual(s.limit);
    // After the retry asked with maxPolecats 1, agents still ran two at a time: the old value never came back.
    const afterRetryStarts = starts.filter((s) => s.afterRetry);
    expect(afterRetryStarts.map((s) => s.concurrent)).toContain(2);
    expect(Math.max(...afterRetryStarts.map((s) => s.concurrent))).toBe(2);
  });

  it('catches up with a rig update it missed when a bead slung under the new settings asks for a slot', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-capacity-missed-'));
    await t.addRig({
      name: 'cap-missed',
      repo: repo.origin,
      agent: agentScript('run-capacity'),
      maxPolecats: 1,
      env: { TEST_DIR: dir },
    });
    const first = await t.town.sling('cap-missed', { id: 'capm-1', title: 'first' });
    const second = await t.town.sling('cap-missed', { id: 'capm-2', title: 'second' });
    await eventually(
      async () => (await t.town.dispatchState('cap-missed')).waiting.length === 1,
      60_000,
      'one waiting',
    );
    // The refinery changes, but the gate is not told (what a client that died before signalling leaves behind).
    await t.client.workflow
      .getHandle(refineryWorkflowId('cap-missed'))
      .executeUpdate(updateRigUpdate, { args: [{ maxPolecats: 2 }] });
    expect((await t.town.dispatchState('cap-missed')).settings.maxPolecats).toBe(1);
    const third = await t.town.sling('cap-missed', { id: 'capm-3', title: 'third' });
    // The new bead's request carries maxPolecats 2: the gate reads the rig and lets the waiting bead through while
    // capm-1 (never released yet) still runs.
    await eventually(
      () => marks(dir).filter((m) => m.kind === 'start').length === 2,
      60_000,
      'a second agent beside the first',
    );
    expect(marks(dir).filter((m) => m.kind === 'end')).toHaveLength(0);
    expect((await t.town.dispatchState('cap-missed')).settings.maxPolecats).toBe(2);
    for (const run of ['capm-1/r1/a1', 'capm-2/r1/a1', 'capm-3/r1/a1']) release(dir, run);
    for (const b of [first, second, third]) expect((await b.handle.result()).status).toBe('closed');
  });
});
