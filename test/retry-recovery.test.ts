/**
 * Recovery beyond the acceptance convoy: applyRecovery's rules (pure), a cancelled standalone bead retried `--fresh`,
 * `gt convoy resume` after `onFailure: stop-all` then `gt convoy retry`, and `gt escalation ack --skip | --close`.
 * Real dev server, real git, real scripted agents for the integration parts.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConvoyClient } from '../client/convoys';
import { applyRecovery, planConvoy, type ConvoyRecovery, type ConvoyResult, type ConvoyState } from '../domain/convoy';
import { runsOf } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, runGt, startTestTown, type TestTown } from './helpers/town';

describe('applyRecovery', () => {
  const NOW = '2026-01-01T00:00:00.000Z';
  /** a → b → c, and x on its own; `statuses` set by hand. */
  const convoy = (statuses: Record<string, ConvoyState['beads'][number]['status']>, onFailure = 'stop-dependents') => {
    const { state } = planConvoy(
      {
        id: 'cv',
        title: 't',
        description: '',
        rig: 'r',
        mergeMode: 'review-and-merge',
        onFailure: onFailure as 'stop-dependents',
        beads: [
          { id: 'a', title: 'a', description: '', acceptance: '', priority: 2, dependsOn: [] },
          { id: 'b', title: 'b', description: '', acceptance: '', priority: 2, dependsOn: ['a'] },
          { id: 'c', title: 'c', description: '', acceptance: '', priority: 2, dependsOn: ['b'] },
          { id: 'x', title: 'x', description: '', acceptance: '', priority: 2, dependsOn: [] },
        ],
      },
      false,
      NOW,
    );
    for (const b of state.beads) b.status = statuses[b.id] ?? 'pending';
    state.status = 'failed';
    return state;
  };
  const retry = (ids: string[] = []): ConvoyRecovery => ({ op: 'retry', ids, fresh: false, note: '', by: 'op' });
  const statuses = (r: ReturnType<typeof applyRecovery>) =>
    r.ok ? Object.fromEntries(r.beads.map((b) => [b.id, b.status])) : r.error;

  it('a retried bead runs again and releases the beads it blocked, transitively', () => {
    const state = convoy({ a: 'failed', b: 'blocked', c: 'blocked', x: 'closed' });
    const r = applyRecovery(state, retry(), NOW);
    expect(statuses(r)).toEqual({ a: 'running', b: 'pending', c: 'pending', x: 'closed' });
    expect(r.ok && r.beads[0]).toMatchObject({ retries: 1, restart: { fresh: false, note: '', by: 'op' } });
    // The original is untouched (the update's validator runs it too).
    expect(state.beads[0]!.status).toBe('failed');
  });

  it('a bead still blocked by another failure stays blocked', () => {
    const state = convoy({ a: 'failed', b: 'failed', c: 'blocked', x: 'closed' });
    expect(statuses(applyRecovery(state, retry(['a']), NOW))).toEqual({
      a: 'running',
      b: 'failed',
      c: 'blocked',
      x: 'closed',
    });
  });

  it('skip counts the bead done with a record of who and why', () => {
    const r = applyRecovery(
      convoy({ a: 'failed', b: 'blocked', c: 'blocked', x: 'closed' }),
      { op: 'skip', ids: ['cv-a'], reason: 'done by hand', by: 'op' },
      NOW,
    );
    expect(statuses(r)).toEqual({ a: 'closed', b: 'pending', c: 'pending', x: 'closed' });
    expect(r.ok && r.beads[0]).toMatchObject({ skipped: { by: 'op', reason: 'done by hand' } });
  });

  it('resume lifts stop-all but not the failed bead’s own dependents', () => {
    const state = convoy({ a: 'failed', b: 'blocked', c: 'blocked', x: 'blocked' }, 'stop-all');
    state.beads[3]!.reason = "convoy stopped starting beads after 'a' failed (onFailure: stop-all)";
    const r = applyRecovery(state, { op: 'resume', by: 'op' }, NOW);
    expect(statuses(r)).toEqual({ a: 'failed', b: 'blocked', c: 'blocked', x: 'pending' });
    expect(r.ok && r.stopAllLifted).toEqual(['a']);
  });

  it('refuses what it cannot do, saying why', () => {
    const state = convoy({ a: 'closed', b: 'running', c: 'pending', x: 'closed' });
    expect(statuses(applyRecovery(state, retry(), NOW))).toBe('convoy cv has no failed bead to retry');
    expect(statuses(applyRecovery(state, retry(['a']), NOW))).toBe(
      'bead a of convoy cv is merged: only a failed or cancelled bead can be retried',
    );
    expect(statuses(applyRecovery(state, retry(['b']), NOW))).toMatch(/^bead b of convoy cv is running/);
    expect(statuses(applyRecovery(state, retry(['zz']), NOW))).toBe("bead 'zz' is not in convoy cv");
    expect(statuses(applyRecovery(state, { op: 'resume', by: 'op' }, NOW))).toMatch(/nothing to resume$/);
    expect(statuses(applyRecovery({ ...state, status: 'closed' }, retry(), NOW))).toBe(
      'convoy cv was closed: it cannot be reopened',
    );
  });
});

describe('recovery against a real town', () => {
  let t: TestTown;
  let convoys: ConvoyClient;
  beforeAll(async () => {
    t = await startTestTown();
    convoys = new ConvoyClient(t.town);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('a cancelled standalone bead retried --fresh starts over in a new round and merges', async () => {
    const testDir = mkdtempSync(join(tmpdir(), 'gt-retry-'));
    const repo = await createRepo();
    await t.addRig({
      name: 'retry-solo',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: testDir },
    });
    await t.town.sling('retry-solo', { id: 'solo-1', title: 'Cancelled, then retried' });
    await eventually(
      async () => (await t.town.beadState('solo-1')).waitingFor.startsWith('waiting for gt done'),
      60_000,
      'the run to start',
    );
    expect((await runGt(['bead', 'cancel', 'solo-1', '--reason', 'wrong approach'], t.cliEnv())).code).toBe(0);
    writeFileSync(join(testDir, 'release'), '');

    const r = await runGt(['bead', 'retry', 'solo-1', '--fresh', '--note', 'try again', '--by', 'ops'], t.cliEnv());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bead solo-1 retried by ops \(retry 1, after it cancelled; fresh: nothing carried\)$/m);
    expect(r.stdout).toMatch(/^note {5}try again$/m);
    const result = await t.town.beadResult('solo-1');
    expect(result).toMatchObject({ status: 'closed', retry: 1 });
    const s = await t.town.beadState('solo-1');
    // Fresh: the cancelled run is not carried; the round is numbered after the used one.
    expect(s.runs.map((x) => x.runId)).toEqual(['solo-1/r2/a1']);
    expect(s.retries).toMatchObject([{ retry: 1, by: 'ops', fresh: true, after: 'cancelled' }]);
    expect(await repo.show('work/solo-1.txt')).toBe('done by solo-1/r2/a1\n');
    const status = await runGt(['bead', 'status', 'solo-1'], t.cliEnv());
    expect(status.stdout).toMatch(/^retried {2}1×; last by ops at \S+ after it cancelled \(fresh\): try again$/m);
    expect((await runsOf(t.client, 'bead:solo-1')).length).toBe(2);
  });

  it('gt convoy resume releases what stop-all held back; gt convoy retry then lands the convoy', async () => {
    const testDir = mkdtempSync(join(tmpdir(), 'gt-retry-'));
    const repo = await createRepo();
    await t.addRig({
      name: 'retry-stop-all',
      repo: repo.origin,
      agent: agentScript('fail-until-retried'),
      env: { TEST_DIR: testDir, FLAKY_BEADS: 'c', FAIL_TIMES: '2' },
      policy: { maxAttempts: 2 },
    });
    await convoys.start({
      id: 'rsa',
      title: 'Stop all, then resume',
      rig: 'retry-stop-all',
      onFailure: 'stop-all',
      maxParallel: 1,
      beads: [
        { id: 'c', title: 'Flaky' },
        { id: 'x', title: 'Independent' },
        { id: 'y', title: 'After c', dependsOn: ['c'] },
      ],
    });
    expect(((await t.client.workflow.getHandle('convoy:rsa').result()) as ConvoyResult).status).toBe('failed');
    expect((await convoys.state('rsa')).beads.map((b) => b.status)).toEqual(['failed', 'blocked', 'blocked']);

    const resumed = await runGt(['convoy', 'resume', 'rsa'], t.cliEnv());
    expect(resumed.stderr).toBe('');
    expect(resumed.stdout).toMatch(/^convoy rsa: resumed \(it had ended failed: reopened\)/);
    // x runs and merges; y still waits for c; the convoy ends failed again.
    const second = (await t.client.workflow.getHandle('convoy:rsa').result()) as ConvoyResult;
    expect(second).toMatchObject({ status: 'failed', counts: { closed: 1, failed: 1, blocked: 1 } });
    const again = await runGt(['convoy', 'resume', 'rsa'], t.cliEnv());
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe('gt: convoy rsa has no beads held back by onFailure: stop-all; nothing to resume');

    const retried = await runGt(['convoy', 'retry', 'rsa', '--json'], t.cliEnv());
    expect(retried.code).toBe(0);
    expect(JSON.parse(retried.stdout)).toMatchObject({ reopened: true, state: { status: 'running' } });
    const landed = (await t.client.workflow.getHandle('convoy:rsa').result()) as ConvoyResult;
    expect(landed).toMatchObject({ status: 'landed', counts: { closed: 3 } });
    expect((await runsOf(t.client, 'convoy:rsa')).length).toBe(3);
  });

  it('gt escalation ack --skip lets the convoy go on without the bead; --close records the decision', async () => {
    const testDir = mkdtempSync(join(tmpdir(), 'gt-retry-'));
    const repo = await createRepo();
    await t.addRig({
      name: 'retry-skip',
      repo: repo.origin,
      agent: agentScript('fail-until-retried'),
      env: { TEST_DIR: testDir, FLAKY_BEADS: 'c', FAIL_TIMES: '99' },
      policy: { maxAttempts: 1, maxRounds: 1 },
    });
    await convoys.start({
      id: 'rsk',
      title: 'Skip the broken one',
      rig: 'retry-skip',
      beads: [
        { id: 'c', title: 'Always fails' },
        { id: 'd', title: 'After c', dependsOn: ['c'] },
      ],
    });
    expect(((await t.client.workflow.getHandle('convoy:rsk').result()) as ConvoyResult).status).toBe('failed');
    const noReason = await runGt(['escalation', 'ack', 'bead-rsk-c', '--close', ''], t.cliEnv());
    expect(noReason.code).toBe(1);
    expect(noReason.stderr.trim()).toBe('gt: --close needs a reason: --close "why"');

    const skip = await runGt(
      ['escalation', 'ack', 'convoy-rsk.bead.c', '--skip', '--note', 'done by hand'],
      t.cliEnv(),
    );
    expect(skip.stderr).toBe('');
    expect(skip.stdout.trim()).toBe(
      'escalation convoy-rsk.bead.c acknowledged by ' +
        (process.env.USER ?? 'operator') +
        ': convoy rsk skips bead rsk-c (convoy reopened)',
    );
    const landed = (await t.client.workflow.getHandle('convoy:rsk').result()) as ConvoyResult;
    expect(landed).toMatchObject({ status: 'landed', reason: 'every bead merged into main (skipped: c)' });
    expect((await convoys.state('rsk')).beads[0]).toMatchObject({
      status: 'closed',
      skipped: { reason: 'done by hand' },
    });
    expect(await repo.show('work/rsk-c.txt')).toBeNull();
    expect(await repo.show('work/rsk-d.txt')).toMatch(/^done by rsk-d/);

    // A landed convoy is never reopened; an unknown one is named.
    const landedRetry = await runGt(['convoy', 'retry', 'rsk'], t.cliEnv());
    expect(landedRetry.code).toBe(1);
    expect(landedRetry.stderr.trim()).toBe('gt: convoy rsk was landed: it cannot be reopened');
    const unknown = await runGt(['convoy', 'skip', 'no-such', 'c', '--reason', 'x'], t.cliEnv());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe("gt: unknown convoy 'no-such' (see `gt convoy list`)");

    const close = await runGt(['escalation', 'ack', 'bead-rsk-c', '--close', 'not needed', '--json'], t.cliEnv());
    expect(close.code).toBe(0);
    expect(JSON.parse(close.stdout)).toMatchObject({
      action: { kind: 'close', detail: 'convoy rsk had already ended; closed: not needed' },
      escalation: { status: 'acknowledged', note: 'not needed', action: { kind: 'close' } },
    });
  });

  it('gt mcp offers the recovery tools, and they refuse as the CLI does', async () => {
    const env = Object.fromEntries(
      Object.entries(t.cliEnv()).filter((e): e is [string, string] => typeof e[1] === 'string'),
    );
    const client = new Client({ name: 'gt-retry-test', version: '1.0.0' });
    await client.connect(new StdioClientTransport({ command: gtBin, args: ['mcp'], env, stderr: 'pipe' }));
    try {
      const names = (await client.listTools()).tools.map((tool) => tool.name);
      expect(names).toEqual(
        expect.arrayContaining(['gt_bead_retry', 'gt_convoy_retry', 'gt_convoy_resume', 'gt_convoy_skip']),
      );
      const Result = z.object({ isError: z.boolean().optional(), content: z.array(z.object({ text: z.string() })) });
      const merged = Result.parse(await client.callTool({ name: 'gt_bead_retry', arguments: { beadId: 'solo-1' } }));
      expect(merged.isError).toBe(true);
      expect(merged.content[0]!.text).toMatch(/^bead solo-1 merged as [0-9a-f]{40}: nothing to retry$/);
      const acked = Result.parse(
        await client.callTool({
          name: 'gt_escalation_ack',
          arguments: { id: 'convoy-rsk.bead.c', action: 'retry' },
        }),
      );
      expect(acked.isError).toBe(true);
      expect(acked.content[0]!.text).toMatch(/^escalation convoy-rsk\.bead\.c was already acknowledged by /);
    } finally {
      await client.close();
    }
  });
});
