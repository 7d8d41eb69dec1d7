/**
 * Gates run through the rig's runtime like agents (here the process runtime: a real shell per gate): in order,
 * stopping at the first failure, with a timeout that kills everything the gate started, the whole log in the gate's
 * run directory and only its tail in the result, and exactly the environment they are given.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runGates, type GateLaunch } from '../activities/gates';
import { ProcessRuntime } from '../agents/process-runtime';
import { ResourceLimits } from '../domain/rig';

const runtime = new ProcessRuntime();
let seq = 0;

function gateBase(env: Record<string, string> = {}): { dir: string; base: GateLaunch; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gt-gate-'));
  const cwd = join(dir, 'tree');
  mkdirSync(cwd);
  return {
    dir,
    key: `gate-test-${process.pid}-${++seq}`,
    base: {
      beadId: 'b-gate',
      cwd,
      runDir: (runId) => join(dir, 'runs', runId),
      agentDir: join(dir, 'agent'),
      allowNetwork: false,
      mounts: [],
      limits: ResourceLimits.parse({}),
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    },
  };
}

describe('gates', () => {
  it('run in order, stop at the first failure, and keep the full log on disk with only its tail in the result', async () => {
    const { dir, base, key } = gateBase({ GT_CANDIDATE_SHA: 'abc123' });
    const results = await runGates(
      runtime,
      ['echo first; echo "$GT_CANDIDATE_SHA"', 'seq 1 5000; exit 3', 'touch never'],
      key,
      base,
      10_000,
    );
    expect(results.map((r) => [r.ok, r.exitCode])).toEqual([
      [true, 0],
      [false, 3],
    ]);
    expect(results[0]!.tail).toBe('first\nabc123\n');
    expect(results[1]!.tail.length).toBeLessThanOrEqual(2000);
    expect(results[1]!.tail.endsWith('4999\n5000\n')).toBe(true);
    expect(results[1]!.logPath).toBe(join(dir, 'runs', `${key}-g2`, 'output.log'));
    expect(readFileSync(results[1]!.logPath, 'utf8')).toMatch(/^1\n2\n/);
    expect(existsSync(join(base.cwd, 'never'))).toBe(false);
  });

  it('kill a gate that outlives its timeout, with everything it started', async () => {
    const { base, key } = gateBase();
    // The gate's child would leave a file behind if the timeout only killed the shell.
    const [result] = await runGates(runtime, ['(sleep 1.5; touch orphan) & sleep 30'], key, base, 300);
    expect(result).toMatchObject({ ok: false, timedOut: true });
    await new Promise((r) => setTimeout(r, 2000));
    expect(existsSync(join(base.cwd, 'orphan'))).toBe(false);
  });

  it('hand back a tail without terminal control sequences (it becomes feedback an operator and an agent read)', async () => {
    const { base, key } = gateBase();
    const [result] = await runGates(
      runtime,
      [`printf 'red \\033[31mtext\\033]0;title\\007 done\\n'; exit 1`],
      key,
      base,
      10_000,
    );
    expect(result!.tail).toBe('red [31mtext]0;title done\n');
    expect(readFileSync(result!.logPath, 'utf8')).toContain('\x1b[31m');
  });

  it('see only the environment they are given, none of the worker’s', async () => {
    const { base, key } = gateBase({ GT_MR_ID: 'mr-1' });
    process.env.GT_TEST_WORKER_SECRET = 'worker-secret-value';
    try {
      const [result] = await runGates(runtime, ['env'], key, base, 10_000);
      expect(result!.tail).toContain('GT_MR_ID=mr-1');
      expect(result!.tail).not.toContain('worker-secret-value');
    } finally {
      delete process.env.GT_TEST_WORKER_SECRET;
    }
  });
});
