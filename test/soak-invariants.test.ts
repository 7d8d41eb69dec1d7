/** The soak's invariant checker on hand-made evidence: each invariant holds on clean evidence and catches its violation. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  checkInvariants,
  figures,
  parseGateLog,
  parseMarks,
  violations,
  type SoakEvidence,
} from '../bench/soak/invariants';
import { FAULT_KINDS, faultKindsOf, faultsProblem, prng, shuffled } from '../bench/soak/soak';

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));

const clean = (): SoakEvidence => ({
  merges: [
    { sha: 'm1', tree: 't1', mergeRequest: 'mr:soak-a:1@h1' },
    { sha: 'm2', tree: 't2', mergeRequest: 'mr:soak-b:2@h2' },
  ],
  treesHeld: ['t2', 't1'],
  gates: [
    { tree: 't1', result: 'pass' },
    { tree: 'tx', result: 'fail', why: 'flake' },
    { tree: 't2', result: 'pass' },
  ],
  runs: [
    { runId: 'soak-a/r1/a1', beadId: 'soak-a', start: 0, end: 100 },
    { runId: 'soak-a/r1/a2', beadId: 'soak-a', start: 150, end: 300 },
    { runId: 'soak-b/r1/a1', beadId: 'soak-b', start: 50, end: 200 },
  ],
  beads: [
    { beadId: 'soak-a', kind: 'crash', status: 'closed', outcomes: ['merged'], inConvoy: 'closed' },
    { beadId: 'soak-b', kind: 'good', status: 'closed', outcomes: ['gates_failed', 'merged'], inConvoy: 'closed' },
  ],
  staleReplays: [
    { runId: 'soak-a/r1/a1', message: 'checkpoint', accepted: false, answer: '409' },
    { runId: 'soak-a/r1/a1', message: 'done', accepted: false, answer: '409' },
  ],
  openWorkflows: [],
});

describe('soak invariants', () => {
  it('finds nothing wrong in clean evidence', () => {
    const inv = checkInvariants(clean());
    expect(violations(inv)).toBe(0);
    expect(figures(clean())).toMatchObject({ beads: 2, merged: 2, gateRuns: 3, flakyRejections: 1, runs: 3 });
  });

  it('catches each violation', () => {
    const e = clean();
    e.beads.push({ beadId: 'soak-c', kind: 'stall', status: 'in_progress', outcomes: [], inConvoy: 'running' });
    // Never started because its dependency failed: not lost.
    e.beads.push({ beadId: 'soak-d', kind: 'good', status: 'missing', outcomes: [], inConvoy: 'blocked' });
    e.merges.push({ sha: 'm3', tree: 't3', mergeRequest: 'mr:soak-a:2@h3' });
    e.runs.push({ runId: 'soak-b/r2/a1', beadId: 'soak-b', start: 199, end: 400 });
    e.treesHeld.push('t4');
    e.staleReplays.push({ runId: 'soak-b/r1/a1', message: 'checkpoint', accepted: true, answer: 'saved' });
    e.openWorkflows.push({ workflowId: 'mr:soak-c:1', pendingActivities: 0 });
    expect(checkInvariants(e)).toEqual({
      beadsLost: ['soak-c'],
      beadsMergedTwice: ['soak-a'],
      concurrentRuns: [{ beadId: 'soak-b', runs: ['soak-b/r1/a1', 'soak-b/r2/a1'] }],
      ungatedTargetTrees: ['t4', 't3'],
      staleMessagesAccepted: ['checkpoint of soak-b/r1/a1'],
      stuckWorkflows: ['mr:soak-c:1'],
    });
  });

  it('reads the gate log and an agent’s marks', () => {
    expect(parseGateLog('t1 pass\nt2 fail broken\nt3 fail flake\n')).toEqual([
      { tree: 't1', result: 'pass', why: undefined },
      { tree: 't2', result: 'fail', why: 'broken' },
      { tree: 't3', result: 'fail', why: 'flake' },
    ]);
    expect(parseMarks('soak-a/r2/a1', 'start 1000 42 http://127.0.0.1:1\nalive 1500\nalive 2000\nend 2100\n')).toEqual({
      runId: 'soak-a/r2/a1',
      beadId: 'soak-a',
      start: 1000,
      end: 2100,
    });
    // Killed with -9: no end mark, the last heartbeat is its end.
    expect(parseMarks('soak-a/r1/a1', 'start 10 7 unix:/x\nalive 510\n')?.end).toBe(510);
    expect(parseMarks('soak-a/r1/a1', '')).toBeUndefined();
  });
});

describe("the soak's fault schedule and options", () => {
  it('takes restart-postgres only on the prod stack, and says so in one line', () => {
    expect(faultKindsOf('prod')).toEqual([...FAULT_KINDS]);
    expect(faultKindsOf('dev')).not.toContain('restart-postgres');
    expect(faultsProblem('prod', FAULT_KINDS)).toBeUndefined();
    expect(faultsProblem('dev', ['kill-host', 'restart-postgres'])).toBe(
      'restart-postgres needs the prod stack (--stack prod), not dev',
    );
  });

  it('falls every kind once in each round of a random schedule, the same for the same seed', () => {
    const random = prng(3);
    const rounds = Array.from({ length: 4 }, () => shuffled(FAULT_KINDS, random));
    for (const round of rounds) expect([...round].sort()).toEqual([...FAULT_KINDS].sort());
    const again = prng(3);
    expect(Array.from({ length: 4 }, () => shuffled(FAULT_KINDS, again))).toEqual(rounds);
  });

  it('refuses bad options before starting anything: exit 2 and one line', async () => {
    const soak = (args: string[]) =>
      run(process.execPath, ['--import', 'tsx', 'bench/soak/run.ts', ...args], { cwd: repoRoot }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
    const wrongStack = await soak(['--stack', 'dev', '--faults', 'kill-host,restart-postgres']);
    expect(wrongStack).toEqual({
      code: 2,
      stderr: 'soak: restart-postgres needs the prod stack (--stack prod), not dev\n',
    });
    const unknown = await soak(['--stack', 'cloud']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/^soak: .*stack/);
  });
});
