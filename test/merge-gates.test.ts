/** Gates: a real shell process per gate, a timeout that kills the whole process group, logs on disk and tails in results. */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runGates } from '../activities/gates';

describe('gates', () => {
  it('run in order, stop at the first failure, and keep the full log on disk with only its tail in the result', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gt-gate-'));
    const results = await runGates(['echo first; echo "$GT_CANDIDATE_SHA"', 'seq 1 5000; exit 3', 'touch never'], dir, join(dir, 'logs'), 10_000, { GT_CANDIDATE_SHA: 'abc123' });
    expect(results.map((r) => [r.ok, r.exitCode])).toEqual([
      [true, 0],
      [false, 3],
    ]);
    expect(results[0]!.tail).toBe('first\nabc123\n');
    expect(results[1]!.tail.length).toBeLessThanOrEqual(2000);
    expect(results[1]!.tail.endsWith('4999\n5000\n')).toBe(true);
    expect(results[1]!.logPath).toBe(join(dir, 'logs', 'gate-2.log'));
    expect(existsSync(join(dir, 'never'))).toBe(false);
  });

  it('kill a gate that outlives its timeout, with everything it started', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gt-gate-'));
    // The gate's child would leave a file behind if the timeout only killed the shell.
    const [result] = await runGates(['(sleep 1.5; touch orphan) & sleep 30'], dir, join(dir, 'logs'), 300, {});
    expect(result).toMatchObject({ ok: false, timedOut: true });
    await new Promise((r) => setTimeout(r, 2000));
    expect(existsSync(join(dir, 'orphan'))).toBe(false);
  });
});
