/** Escalations: raised once when a bead fails or an agent asks, visible in `gt escalations`, acknowledged by an operator. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

const EscalationJson = z.array(
  z.object({
    id: z.string(),
    severity: z.enum(['low', 'medium', 'high', 'critical']),
    status: z.enum(['open', 'acknowledged']),
    source: z.string(),
    beadId: z.string().optional(),
    reason: z.string(),
  }),
);

describe('escalations', () => {
  it('a bead that exhausts its attempts fails with exactly one escalation, which an operator acknowledges', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'esc-fail',
      repo: repo.origin,
      agent: agentScript('exit-without-done'),
      policy: { maxAttempts: 2, maxRounds: 1 },
    });
    const { handle } = await t.town.sling('esc-fail', { id: 'b-esc-fail', title: 'Never done' });
    const result = await handle.result();
    expect(result.status).toBe('failed');
    expect(result.reason).toMatch(/all 2 attempts of round 1 failed/);
    const state = await t.town.beadState('b-esc-fail');
    expect(state.runs.map((r) => [r.runId, r.outcome])).toEqual([
      ['b-esc-fail/r1/a1', 'exited'],
      ['b-esc-fail/r1/a2', 'exited'],
    ]);

    const listed = EscalationJson.parse(JSON.parse((await runGt(['escalations', '--json'], t.cliEnv())).stdout));
    const mine = listed.filter((e) => e.beadId === 'b-esc-fail');
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ id: 'bead-b-esc-fail', severity: 'high', status: 'open', source: 'bead' });

    const ack = await runGt(['escalation', 'ack', 'bead-b-esc-fail', '--note', 'looked at it'], t.cliEnv());
    expect(ack.code).toBe(0);
    expect(ack.stdout).toMatch(/acknowledged/);
    const after = EscalationJson.parse(JSON.parse((await runGt(['escalations', '--json'], t.cliEnv())).stdout));
    expect(after.filter((e) => e.beadId === 'b-esc-fail')).toHaveLength(0);
    // Acknowledging again is harmless.
    expect((await runGt(['escalation', 'ack', 'bead-b-esc-fail'], t.cliEnv())).code).toBe(0);
  });

  it('an agent can escalate from inside its run without stopping its work', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'esc-agent', repo: repo.origin, agent: agentScript('escalate-then-done') });
    const { handle } = await t.town.sling('esc-agent', { id: 'b-esc-agent', title: 'Ask then do' });
    expect((await handle.result()).status).toBe('closed');
    const listed = await eventually(
      async () => (await t.town.listEscalations()).filter((e) => e.beadId === 'b-esc-agent'),
      10_000,
      'agent escalation',
    );
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ source: 'agent', severity: 'low', runId: 'b-esc-agent/r1/a1' });
    expect(listed[0]!.reason).toBe('the spec for b-esc-agent is ambiguous');
  });

  it('rejects an unknown escalation id with a clear message', async () => {
    const r = await runGt(['escalation', 'ack', 'no-such-escalation'], t.cliEnv());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("gt: unknown escalation 'no-such-escalation' (see `gt escalations`)");
  });
});
