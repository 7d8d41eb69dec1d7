/**
 * The gateway does not hear an agent launched ahead of its bead (activities/launch-ahead.ts) before the bead's launch
 * took it: its requests wait, then go on once taken, get a 503 that says to try again when the hold runs out, a 409
 * once the run was stopped because no bead took it, and a closing gateway's 503 once its grace is over; a run its bead
 * launched first is never launched ahead. A real gateway on a real server; the launch itself is a stand-in here
 * (test/launch-run.test.ts and test/asks-in-launch.test.ts launch real agents ahead).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LaunchesAhead } from '../activities/launch-ahead';
import type { LaunchWhenGrantedInput } from '../activities/agent-runs';
import { mintRunToken } from '../agents/run-token';
import { startGateway, type Gateway } from '../gateway/server';
import { gatewaySecret } from '../host/home';
import { eventually, FAST_POLICY, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let gateway: Gateway;
const closed = new Set<string>();
const abandoned: string[] = [];
const launchesAhead = new LaunchesAhead({
  workflowRunning: (workflowId) => Promise.resolve(!closed.has(workflowId)),
  checkEveryMs: 50,
  holdMs: 1_000,
});
launchesAhead.serve({
  normalize: (raw) => raw as never,
  launch: () => Promise.resolve({ queued: true }),
  abandon: (runId) => Promise.resolve(void abandoned.push(runId)),
});

beforeAll(async () => {
  t = await startTestTown();
  gateway = await startGateway({
    client: t.client,
    secret: gatewaySecret(t.gtHome),
    socketHome: false,
    launchesAhead,
  });
});
afterAll(async () => {
  await gateway?.close();
  await t?.stop();
});

const launch = (beadId: string): LaunchWhenGrantedInput => {
  const runId = `${beadId}/r1/a1`;
  const workflowId = `bead:${beadId}`;
  return {
    rig: { name: 'la-gw', repo: '/nowhere', agent: 'true', policy: FAST_POLICY },
    bead: { id: beadId, title: 'Launched ahead' },
    runId,
    round: 1,
    attempt: 1,
    targetBranch: 'main',
    workflowId,
    request: { beadId, runId, workflowId, maxPolecats: 1, breakerThreshold: 3, breakerProbeInterval: 60_000 },
  };
};

/** gt progress from the run's agent, with its own token (through `via`, the shared gateway unless given). */
async function progress(i: LaunchWhenGrantedInput, via = gateway) {
  const token = mintRunToken(gatewaySecret(t.gtHome), {
    beadId: i.bead.id,
    runId: i.runId,
    role: 'polecat',
    workflowId: i.workflowId,
    exp: Date.now() + 60_000,
  });
  const res = await fetch(`${via.url}/v1/progress`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ message: 'working' }),
  });
  return { status: res.status, error: ((await res.json()) as { error?: string }).error ?? '' };
}

describe('the gateway and an agent launched ahead of its bead', () => {
  it('holds its requests until the bead takes the run, then forwards them', async () => {
    const i = launch('la-gw-taken');
    expect(launchesAhead.begin(i)).toBe(true);
    let answered = false;
    const asked = progress(i).finally(() => (answered = true));
    // Held: nothing answers while the bead has not taken the run (its hold is 1 s; taken well within it).
    await new Promise((r) => setTimeout(r, 200));
    expect(answered).toBe(false);
    await launchesAhead.take(i as never);
    // Forwarded once taken: no such bead's workflow exists here, which the gateway says as it does for any run.
    expect(await asked).toEqual({ status: 410, error: 'workflow bead:la-gw-taken no longer exists' });
  });

  it('answers 503, to try again, when the bead has not taken it within the hold', async () => {
    const i = launch('la-gw-later');
    launchesAhead.begin(i);
    const answer = await progress(i);
    expect(answer.status).toBe(503);
    expect(answer.error).toMatch(/not started by its bead yet; run the command again in a moment/);
    closed.add(i.workflowId); // let it be stopped
  });

  it('begins nothing for a run whose bead launched it first, and its requests go through', async () => {
    const i = launch('la-gw-bead-first');
    expect(launchesAhead.take(i as never)).toBeUndefined();
    expect(launchesAhead.begin(i)).toBe(false);
    expect(await progress(i)).toEqual({ status: 410, error: 'workflow bead:la-gw-bead-first no longer exists' });
  });

  it('refuses it for good once it was stopped because its bead closed without taking it', async () => {
    const i = launch('la-gw-closed');
    launchesAhead.begin(i);
    closed.add(i.workflowId);
    await eventually(() => abandoned.includes(i.runId), 10_000, 'the run nobody took stopped');
    const answer = await progress(i);
    expect(answer.status).toBe(409);
    expect(answer.error).toMatch(
      /la-gw-closed\/r1\/a1 was launched ahead of its bead, which never took it; it was stopped/,
    );
  });

  it('does not hold a closing gateway past its grace: a held request gets the 503 that says to retry', async () => {
    const holding = new LaunchesAhead({ holdMs: 60_000 });
    holding.serve({
      normalize: (raw) => raw as never,
      launch: () => Promise.resolve({ queued: true }),
      abandon: () => Promise.resolve(),
    });
    const closing = await startGateway({
      client: t.client,
      secret: gatewaySecret(t.gtHome),
      socketHome: false,
      launchesAhead: holding,
    });
    const i = launch('la-gw-closing');
    holding.begin(i);
    const asked = progress(i, closing);
    // Held (its bead never takes it here) when the gateway closes.
    await new Promise((r) => setTimeout(r, 200));
    await closing.close();
    expect(await asked).toEqual({
      status: 503,
      error: 'the gateway is stopping (its worker is shutting down or restarting); run the command again in a moment',
    });
  });
});
