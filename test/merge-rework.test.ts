/**
 * Issue 4 acceptance, rework: real beads, real polecat processes, real gates. A conflict and a failing gate both go
 * back to a new polecat run with feedback in its prompt, and the bead then merges; nothing is left half-merged and
 * the target never holds a tree whose gates failed.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { paths } from '../host/home';
import { createRepo } from './helpers/repo';
import {
  gateRecords,
  git,
  pauseRefinery,
  recordingGate,
  recordTargetMoves,
  targetTreesHeld,
  waitForQueue,
} from './helpers/refinery';
import { agentScript, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('rework from the refinery', () => {
  it('two beads editing the same line: one merges, the other gets the conflict as feedback, rewrites the file, and merges', async () => {
    const repo = await createRepo({ 'shared.txt': 'base\n' });
    await t.addRig({ name: 'clash', repo: repo.origin, agent: agentScript('refinery-conflict') });
    // Hold the queue so both polecats branch from the same target and both MRs are waiting.
    await pauseRefinery(t, 'clash', true);
    const a = await t.town.sling('clash', { id: 'clash-a', title: 'Write shared.txt (a)' });
    const b = await t.town.sling('clash', { id: 'clash-b', title: 'Write shared.txt (b)' });
    await waitForQueue(t, 'clash', 2);
    await pauseRefinery(t, 'clash', false);
    const [ra, rb] = await Promise.all([a.handle.result(), b.handle.result()]);
    expect([ra.status, rb.status]).toEqual(['closed', 'closed']);

    const states = await Promise.all(['clash-a', 'clash-b'].map((id) => t.town.beadState(id)));
    const [first, second] = states[0]!.rounds.length === 1 ? states : [states[1]!, states[0]!];
    expect(first!.rounds).toHaveLength(1);
    expect(second!.rounds).toHaveLength(2);
    expect(second!.rounds[0]!.outcome).toMatchObject({ kind: 'conflict', paths: ['shared.txt'] });
    // The next polecat run of the sent-back bead read the conflict in its prompt.
    const prompt = readFileSync(join(paths.agentDir(`${second!.beadId}/r2/a1`, t.gtHome), 'prompt.md'), 'utf8');
    expect(prompt).toContain('conflicts with main in: shared.txt');
    expect(await repo.show('shared.txt')).toBe(`${first!.beadId}\n${second!.beadId}\n`);
    // Nothing half-merged: no candidate tree is left on disk, and what the mirror still lists of them is stale, gone
    // at its next prune (a candidate's creation prunes once the mirror lists 32 entries, not after each section).
    const candidates = dirname(paths.candidate('clash', 'any', t.gtHome));
    expect(existsSync(candidates) ? readdirSync(candidates) : []).toEqual([]);
    const mirror = paths.mirror('clash', t.gtHome);
    await git(mirror, ['worktree', 'prune']);
    expect(await git(mirror, ['worktree', 'list', '--porcelain'])).not.toContain('candidates');
    expect(await git(mirror, ['for-each-ref', '--format=%(refname)', 'refs/heads/gt-candidate/'])).toBe('');
  });

  it('a failing gate sends the bead back with the log tail; the fixed round merges; the target never held the failing tree', async () => {
    const repo = await createRepo();
    await recordTargetMoves(repo.origin);
    const dir = mkdtempSync(join(tmpdir(), 'gt-gates-'));
    await t.addRig({
      name: 'gated',
      repo: repo.origin,
      agent: agentScript('refinery-fix-gate'),
      gates: [recordingGate(dir)],
    });
    const { handle } = await t.town.sling('gated', { id: 'gated-1', title: 'Work that breaks the gate at first' });
    const result = await handle.result();
    expect(result.status).toBe('closed');

    const state = await t.town.beadState('gated-1');
    expect(state.rounds).toHaveLength(2);
    const failed = state.rounds[0]!.outcome;
    expect(failed).toMatchObject({ kind: 'gates_failed' });
    expect(failed?.kind === 'gates_failed' && failed.feedback).toMatch(
      /exited with 1 on the merge of your branch into main\.\nLast output:\n[\s\S]*gate saw tree [0-9a-f]+: fail/,
    );
    expect(failed?.kind === 'gates_failed' && readFileSync(failed.logPath!, 'utf8')).toMatch(/: fail/);
    expect(readFileSync(join(paths.agentDir('gated-1/r2/a1', t.gtHome), 'prompt.md'), 'utf8')).toContain(
      '[gates_failed]',
    );

    const runs = gateRecords(dir);
    expect(runs.map((r) => r.result)).toEqual(['fail', 'pass']);
    // Every tree the target ever held passed its gates; the failing tree never became the target.
    expect(await targetTreesHeld(repo.origin)).toEqual([runs[1]!.tree]);
    expect(await repo.show('work/BROKEN')).toBeNull();
    expect(await repo.show('work/gated-1.txt')).toBe('gated-1\n');
  });
});
