/**
 * Issue 14 acceptance (retry): a convoy of 5 whose bead c fails twice (every attempt of its round) ends `failed`;
 * `gt bead retry` runs c again in its convoy's place — the convoy reopens, c merges, its dependents run, the convoy
 * lands — and `gt escalation ack --retry` does the same from the escalation while the convoy still runs. Every bead
 * is merged exactly once, counted on the target branch. Bad input is one line, exit 1, nothing changed.
 * Real dev server, real git, real scripted agent processes (test/agents/fail-until-retried.sh).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyResult } from '../domain/convoy';
import { beadExists, convoyTimeline, runsOf } from './helpers/convoy';
import { createRepo, type TestRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let convoys: ConvoyClient;
beforeAll(async () => {
  t = await startTestTown();
  convoys = new ConvoyClient(t.town);
});
afterAll(async () => {
  await t?.stop();
});

/** How many commits on the target branch carry each bead's work (the scripted agent's commit subject). */
async function mergedCounts(repo: TestRepo, beadIds: string[]): Promise<Record<string, number>> {
  const log = await repo.log('main');
  return Object.fromEntries(
    beadIds.map((id) => [id, log.filter((c) => `${c.subject}\n${c.body}`.includes(`work for ${id}\n`)).length]),
  );
}

const RetryJson = z.object({
  beadId: z.string(),
  retry: z.number().int(),
  fresh: z.boolean(),
  by: z.string(),
  note: z.string(),
  after: z.enum(['failed', 'cancelled']),
  convoy: z.object({ convoyId: z.string(), reopened: z.boolean() }).optional(),
  bead: z.object({ beadId: z.string(), status: z.string(), retries: z.array(z.object({ retry: z.number() })) }),
});

async function flakyRig(name: string, testDir: string) {
  const repo = await createRepo();
  await t.addRig({
    name,
    repo: repo.origin,
    agent: agentScript('fail-until-retried'),
    env: { TEST_DIR: testDir, FLAKY_BEADS: 'c', FAIL_TIMES: '2', HOLD_BEADS: 'hold' },
    policy: { maxAttempts: 2, maxRounds: 2 },
  });
  return repo;
}

describe('gt bead retry', () => {
  it('a convoy that failed on bead c reopens when c is retried: c merges, its dependents run, the convoy lands, each bead merged once', async () => {
    const testDir = mkdtempSync(join(tmpdir(), 'gt-retry-'));
    const repo = await flakyRig('retry-five', testDir);
    await convoys.start({
      id: 'rt5',
      title: 'Five beads, the third flaky',
      rig: 'retry-five',
      beads: [
        { id: 'a', title: 'First' },
        { id: 'b', title: 'Second', dependsOn: ['a'] },
        { id: 'c', title: 'Third: fails twice', dependsOn: ['b'] },
        { id: 'd', title: 'Fourth', dependsOn: ['c'] },
        { id: 'e', title: 'Fifth', dependsOn: ['d'] },
      ],
    });
    const failed = (await t.client.workflow.getHandle('convoy:rt5').result()) as ConvoyResult;
    expect(failed.status).toBe('failed');
    expect(Object.fromEntries((await convoys.state('rt5')).beads.map((b) => [b.id, b.status]))).toEqual({
      a: 'closed',
      b: 'closed',
      c: 'failed',
      d: 'blocked',
      e: 'blocked',
    });
    expect(await beadExists(t.client, 'rt5-d')).toBe(false);

    // Bad input first: each is one line on stderr, exit 1, and changes nothing.
    const before = (await t.client.workflow.getHandle('bead:rt5-c').describe()).runId;
    const unknown = await runGt(['bead', 'retry', 'rt5-nosuch'], t.cliEnv());
    expect(unknown).toMatchObject({ code: 1, stdout: '' });
    expect(unknown.stderr.trim()).toBe("gt: unknown bead 'rt5-nosuch'");
    const merged = await runGt(['bead', 'retry', 'rt5-a'], t.cliEnv());
    expect(merged.code).toBe(1);
    expect(merged.stderr.trim()).toMatch(/^gt: bead rt5-a merged as [0-9a-f]{40}: nothing to retry$/);
    const bad = await runGt(['bead', 'retry', 'Not An Id!'], t.cliEnv());
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect((await t.client.workflow.getHandle('bead:rt5-c').describe()).runId).toBe(before);
    expect((await runsOf(t.client, 'convoy:rt5')).length).toBe(1);

    const retried = await runGt(['bead', 'retry', 'rt5-c', '--note', 'the flake is gone', '--json'], t.cliEnv());
    expect(retried.stderr).toBe('');
    expect(retried.code).toBe(0);
    const answer = RetryJson.parse(JSON.parse(retried.stdout));
    expect(answer).toMatchObject({
      beadId: 'rt5-c',
      retry: 1,
      fresh: false,
      after: 'failed',
      note: 'the flake is gone',
      convoy: { convoyId: 'rt5', reopened: true },
    });

    const landed = (await t.client.workflow.getHandle('convoy:rt5').result()) as ConvoyResult;
    expect(landed).toMatchObject({ status: 'landed', counts: { closed: 5, failed: 0, blocked: 0 } });
    expect(await mergedCounts(repo, ['rt5-a', 'rt5-b', 'rt5-c', 'rt5-d', 'rt5-e'])).toEqual({
      'rt5-a': 1,
      'rt5-b': 1,
      'rt5-c': 1,
      'rt5-d': 1,
      'rt5-e': 1,
    });

    // The same bead id went on: its earlier runs and the note carried, its round numbered after the used one.
    const c = await t.town.beadState('rt5-c');
    expect(c.status).toBe('closed');
    expect(c.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['rt5-c/r1/a1', 'exited'],
      ['rt5-c/r1/a2', 'exited'],
      ['rt5-c/r2/a1', 'done'],
    ]);
    expect(c.rounds.map((r) => r.mergeRequest)).toEqual(['mr:rt5-c:2']);
    expect(c.retries).toMatchObject([{ retry: 1, after: 'failed', note: 'the flake is gone' }]);
    expect(c.feedback.join('\n')).toMatch(/\[retry 1 by .+\] the flake is gone/);
    expect((await runsOf(t.client, 'bead:rt5-c')).length).toBe(2);
    expect((await runsOf(t.client, 'convoy:rt5')).length).toBe(2);
    // The retried run's merge was reported by the refinery with its retry number, which the convoy took (a report
    // without it would be the failed run's, and ignored).
    const reports = (await convoyTimeline(t.client, 'rt5')).filter((e) => e.kind === 'report' && e.beadId === 'rt5-c');
    expect(reports.map((e) => [e.status, e.from])).toEqual([
      ['failed', 'bead:rt5-c'],
      ['closed', 'refinery:retry-five'],
    ]);

    // Now merged: a second retry is refused.
    const again = await runGt(['bead', 'retry', 'rt5-c'], t.cliEnv());
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(/^gt: bead rt5-c merged as [0-9a-f]{40}: nothing to retry$/);
  });
});

describe('gt escalation ack --retry', () => {
  it('retries the bead behind a convoy escalation while the convoy still runs; the convoy lands with every bead merged once', async () => {
    const testDir = mkdtempSync(join(tmpdir(), 'gt-retry-'));
    const repo = await flakyRig('retry-esc', testDir);
    await convoys.start({
      id: 'rte',
      title: 'A flaky bead and a held one',
      rig: 'retry-esc',
      beads: [
        { id: 'a', title: 'First' },
        { id: 'hold', title: 'Held until the test releases it' },
        { id: 'c', title: 'Fails twice', dependsOn: ['a'] },
        { id: 'd', title: 'After c', dependsOn: ['c'] },
        { id: 'e', title: 'After d', dependsOn: ['d'] },
      ],
    });
    const escalationId = 'convoy-rte.bead.c';
    await eventually(
      async () => (await t.town.listEscalations()).find((e) => e.id === escalationId),
      90_000,
      'the convoy escalation of c',
    );
    const state = await convoys.state('rte');
    expect(state.status).toBe('running');
    expect(state.beads.find((b) => b.id === 'c')?.status).toBe('failed');

    // A running bead cannot be retried: one line, exit 1, nothing changed.
    const running = await runGt(['bead', 'retry', 'rte-hold'], t.cliEnv());
    expect(running.code).toBe(1);
    expect(running.stderr.trim()).toMatch(
      /^gt: bead rte-hold is in_progress \(.*\): only a failed or cancelled bead can be retried$/,
    );
    const both = await runGt(['escalation', 'ack', escalationId, '--retry', '--skip'], t.cliEnv());
    expect(both).toMatchObject({ code: 1 });
    expect(both.stderr.trim()).toBe('gt: choose one of --retry, --skip, --close');

    const ack = await runGt(['escalation', 'ack', escalationId, '--retry', '--json'], t.cliEnv());
    expect(ack.stderr).toBe('');
    expect(ack.code).toBe(0);
    const acked = z
      .object({
        escalation: z.object({
          id: z.string(),
          status: z.literal('acknowledged'),
          action: z.object({ kind: z.string() }),
        }),
        action: z.object({ kind: z.literal('retry'), detail: z.string() }),
        retry: RetryJson,
      })
      .parse(JSON.parse(ack.stdout));
    expect(acked.action.detail).toBe('bead rte-c retried (retry 1)');
    expect(acked.retry.convoy).toEqual({ convoyId: 'rte', reopened: false });

    // Acknowledged: a second --retry does nothing and says so.
    const twice = await runGt(['escalation', 'ack', escalationId, '--retry'], t.cliEnv());
    expect(twice.code).toBe(1);
    expect(twice.stderr.trim()).toMatch(
      /^gt: escalation convoy-rte\.bead\.c was already acknowledged by .+; nothing done$/,
    );

    await eventually(
      async () => (await convoys.state('rte')).beads.find((b) => b.id === 'e')?.status === 'closed',
      90_000,
      'c, d and e to merge',
    );
    writeFileSync(join(testDir, 'release'), '');
    const landed = (await t.client.workflow.getHandle('convoy:rte').result()) as ConvoyResult;
    expect(landed).toMatchObject({ status: 'landed', counts: { closed: 5 } });
    expect(await mergedCounts(repo, ['rte-a', 'rte-hold', 'rte-c', 'rte-d', 'rte-e'])).toEqual({
      'rte-a': 1,
      'rte-hold': 1,
      'rte-c': 1,
      'rte-d': 1,
      'rte-e': 1,
    });
    // The convoy was never reopened: the retry went through its update.
    expect((await runsOf(t.client, 'convoy:rte')).length).toBe(1);
  });
});
