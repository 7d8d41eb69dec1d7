/**
 * `gt up` is the embedded stack in the foreground: stopping it mid-run and starting it again (same GT_HOME, same
 * SQLite file) resumes the work: the running agent is re-attached (never relaunched) and the bead merges exactly once.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRepo } from './helpers/repo';
import { freePort, startChild, type Child } from './helpers/processes';
import { agentScript, eventually, gtBin, runGt } from './helpers/town';

const children: Child[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')));
});

const BeadJson = z.object({ status: z.string(), runs: z.array(z.object({ runId: z.string(), outcome: z.string() })), mergedCommit: z.string().optional() });

describe('gt up', () => {
  it('stops on Ctrl-C and resumes in-flight work on the next start; the bead merges exactly once', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gt-up-home-'));
    const testDir = mkdtempSync(join(tmpdir(), 'gt-up-test-'));
    const [port, gatewayPort] = [await freePort(), await freePort()];
    const env = { ...process.env, GT_HOME: home, TEMPORAL_ADDRESS: `127.0.0.1:${port}`, GT_TASK_QUEUE: 'gastown' };
    const up = () => {
      const child = startChild(gtBin, ['up', '--port', String(port), '--no-ui', '--gateway-port', String(gatewayPort)], env);
      children.push(child);
      return child;
    };

    const first = up();
    await first.waitFor(/Gas Town is up/);
    expect(first.output()).toMatch(new RegExp(`Temporal\\s+127\\.0\\.0\\.1:${port}`));
    expect(first.output()).toMatch(new RegExp(`Gateway\\s+http://127\\.0\\.0\\.1:${gatewayPort}`));

    const repo = await createRepo();
    // Agents get the rig's --env, never the worker's environment.
    const add = await runGt(['rig', 'add', 'upr', '--repo', repo.origin, '--agent', agentScript('wait-for-release'), '--env', `TEST_DIR=${testDir}`, '--heartbeat-timeout', '5s', '--retry-backoff', '1s'], env);
    expect(add.code, add.stderr).toBe(0);
    const sling = await runGt(['sling', 'upr', 'Survive a restart', '--id', 'b-up'], env);
    expect(sling.code, sling.stderr).toBe(0);
    await eventually(() => readFileSync(join(testDir, 'starts'), 'utf8').trim().split('\n').length === 1, 60_000, 'agent started');

    expect(await first.stop('SIGINT')).toBe(0);
    expect(first.output()).toMatch(/Gas Town stopped\./);

    const second = up();
    await second.waitFor(/Gas Town is up/);
    writeFileSync(join(testDir, 'release'), '');
    const final = await eventually(async () => {
      const r = await runGt(['bead', 'status', 'b-up', '--json'], env);
      const s = r.code === 0 ? BeadJson.parse(JSON.parse(r.stdout)) : undefined;
      return s && ['closed', 'failed'].includes(s.status) ? s : undefined;
    }, 90_000, 'bead to finish after restart');

    expect(final.status).toBe('closed');
    expect(final.runs).toEqual([expect.objectContaining({ runId: 'b-up/r1/a1', outcome: 'done' })]);
    // Exactly one agent process was ever started for the bead, and exactly one merge reached the target.
    expect(readFileSync(join(testDir, 'starts'), 'utf8').trim().split('\n')).toHaveLength(1);
    const merges = (await repo.log()).filter((c) => c.body.includes('Gt-Merge-Request: mr:b-up:1@'));
    expect(merges.map((c) => c.sha)).toEqual([final.mergedCommit]);
    expect(await second.stop('SIGINT')).toBe(0);
  });
});
