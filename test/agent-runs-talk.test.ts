/**
 * Talking to a live run, with real agents and the real `gt` CLI: `gt checkpoint` notes reach the next run's prompt,
 * `gt nudge` messages reach the agent's `gt inbox`, `gt logs [--follow]` shows the run's output.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, runGt, startTestTown, type CliResult, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('talking to a live run', () => {
  it('gives the next run of a bead the checkpoints an interrupted run saved', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-cp-'));
    await t.addRig({
      name: 'talk-cp',
      repo: repo.origin,
      agent: agentScript('run-checkpoint'),
      env: { TEST_DIR: dir },
    });
    const { handle } = await t.town.sling('talk-cp', {
      id: 'b-talk-cp',
      title: 'Resume from a checkpoint',
      acceptance: 'parser and printer exist',
    });
    expect((await handle.result()).status).toBe('closed');
    const state = await t.town.beadState('b-talk-cp');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-talk-cp/r1/a1', 'exited'],
      ['b-talk-cp/r1/a2', 'done'],
    ]);
    expect(state.checkpoints).toMatchObject([
      { runId: 'b-talk-cp/r1/a1', note: 'step 1 of 2 done: the parser is written' },
    ]);
    const prompt = readFileSync(join(dir, 'prompt-b-talk-cp_r1_a2.md'), 'utf8');
    expect(prompt).toContain('## Checkpoints saved by earlier runs');
    expect(prompt).toContain('- step 1 of 2 done: the parser is written (saved by b-talk-cp/r1/a1)');
    expect(prompt).toContain('## Acceptance\n\nparser and printer exist');
    expect(prompt).toContain('Run: `b-talk-cp/r1/a2` (round 1, attempt 2)');
  });

  it('delivers an operator’s `gt nudge` to the agent’s `gt inbox`, and `gt logs --follow` shows the run until it ends', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-inbox-'));
    await t.addRig({ name: 'talk-inbox', repo: repo.origin, agent: agentScript('run-inbox'), env: { TEST_DIR: dir } });
    const { handle } = await t.town.sling('talk-inbox', { id: 'b-talk-inbox', title: 'Wait for instructions' });
    await eventually(() => existsSync(join(dir, 'waiting')), 60_000, 'agent waiting for its inbox');

    const follow = new Promise<CliResult>((resolve) =>
      execFile(
        gtBin,
        ['logs', 'b-talk-inbox', '--follow'],
        { env: t.cliEnv(), timeout: 120_000 },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    const nudged = await runGt(['nudge', 'b-talk-inbox', 'use', 'tabs, not spaces', '--from', 'mayor'], t.cliEnv());
    expect(nudged).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/message #1 queued for bead b-talk-inbox/) as string,
    });
    expect((await handle.result()).status).toBe('closed');

    expect(readFileSync(join(dir, 'inbox.out'), 'utf8')).toMatch(/mayor: use tabs, not spaces/);
    // Read messages are not shown again, but `--all` lists them.
    expect(readFileSync(join(dir, 'inbox-all.out'), 'utf8')).toMatch(/mayor: use tabs, not spaces/);
    expect((await t.town.beadState('b-talk-inbox')).inbox).toMatchObject([
      { seq: 1, from: 'mayor', message: 'use tabs, not spaces' },
    ]);

    const followed = await follow;
    expect(followed.code).toBe(0);
    expect(followed.stdout).toMatch(/bead b-talk-inbox: done recorded/);
    const logs = await runGt(['logs', 'b-talk-inbox/r1/a1', '--json'], t.cliEnv());
    expect(JSON.parse(logs.stdout)).toMatchObject({
      runId: 'b-talk-inbox/r1/a1',
      host: 'test-host',
      output: expect.stringMatching(/done recorded/) as string,
    });

    const late = await runGt(['nudge', 'b-talk-inbox', 'too late'], t.cliEnv());
    expect(late.code).toBe(1);
    expect(late.stderr.trim()).toBe('gt: bead b-talk-inbox is closed: no run will read the message');
    const empty = await runGt(['nudge', 'b-talk-inbox', '   '], t.cliEnv());
    expect(empty.stderr.trim()).toBe('gt: invalid nudge: message: message must not be empty');
  });
});
