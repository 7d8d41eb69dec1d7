/**
 * A worker's gateway stops without hanging on its workflows (found by CI: a web-ui run's teardown waited forever).
 * Closing forwards what it still holds — progress reports the coalescer kept back, agents' requests in flight — and the
 * worker closes it before it stops its own workflow polling, so those are answered. When nobody runs the workflows
 * any more, the close gives up after its grace: the requests in flight get a 503 that says to retry, the reports are
 * dropped, and neither changes the bead.
 */
import { mkdtempSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterEach, describe, expect, it } from 'vitest';
import { mintRunToken } from '../agents/run-token';
import { beadWorkflowId } from '../domain/ids';
import { startGateway } from '../gateway/server';
import { gatewaySecret } from '../host/home';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const clean of cleanups.splice(0).reverse()) await clean().catch(() => undefined);
});

async function post(url: string, path: string, token: string, body: unknown) {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as { error?: string; message?: string } };
}

const lastProgress = async (t: TestTown, beadId: string) => (await t.town.beadState(beadId)).runs.at(-1)?.lastProgress;

/** A town whose one bead's agent holds (test/agents/hold.sh) until the test releases it; its run's token. */
async function holdingBead(beadId: string): Promise<{ t: TestTown; token: string; dir: string }> {
  const t = await startTestTown();
  const dir = mkdtempSync(join(tmpdir(), 'gt-gw-close-'));
  cleanups.push(async () => {
    writeFileSync(join(dir, `go-${beadId}`), '');
    await t.stop();
  });
  const repo = await createRepo();
  await t.addRig({ name: `${beadId}-rig`, repo: repo.origin, agent: agentScript('hold'), env: { TEST_DIR: dir } });
  await t.town.sling(`${beadId}-rig`, { id: beadId, title: 'Held' });
  await eventually(() => existsSync(join(dir, 'pids')), 30_000, 'the agent holding');
  // hold.sh reported "holding <bead>" before it wrote its pid line: a report now comes within the interval.
  await eventually(
    async () => (await lastProgress(t, beadId)) === `holding ${beadId}`,
    30_000,
    "the agent's first report recorded",
  );
  const runId = readFileSync(join(dir, 'pids'), 'utf8').trim().split(' ')[1]!;
  const token = mintRunToken(gatewaySecret(t.gtHome), {
    beadId,
    runId,
    role: 'polecat',
    workflowId: beadWorkflowId(beadId),
    exp: Date.now() + 600_000,
  });
  return { t, token, dir };
}

const updatesNamed = async (client: Client, beadId: string, name: string) =>
  (await client.workflow.getHandle(beadWorkflowId(beadId)).fetchHistory()).events!.filter(
    (e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === name,
  ).length;

describe("a worker's gateway, stopping", () => {
  it('stops while it holds back a progress report for a running bead (the teardown that hung in CI)', async () => {
    const { t, token } = await holdingBead('gwc-held');
    const queued = await post(t.worker.gateway.url, '/v1/progress', token, { message: 'second thoughts' });
    expect(queued.status).toBe(200);
    expect(queued.body.message).toMatch(/^progress noted; it is recorded within/);

    // Before, the worker stopped its workflow polling first and the close then waited forever on the report's update.
    await t.worker.shutdown();

    // Forwarded as the gateway closed, the report met the workflow's own bound (too soon after the agent's) and was
    // dropped: the bead's history holds the agent's report only, as the coalescer's contract says of a report
    // waiting at a stop.
    expect(await updatesNamed(t.client, 'gwc-held', 'gt_progress')).toBe(1);
  });

  it('gives up on workflows nobody runs any more: a 503 that says to retry, the report dropped, the bead unchanged', async () => {
    const { t, token } = await holdingBead('gwc-orphan');
    // A second gateway for the same town, on its own connection, outliving the town's worker.
    const connection = await Connection.connect({ address: t.address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: t.namespace });
    const gateway = await startGateway({ client, secret: gatewaySecret(t.gtHome), socketHome: false });
    cleanups.push(() => gateway.close());

    // Too soon after the agent's own report: the workflow refuses it and the gateway keeps it back.
    const queued = await post(gateway.url, '/v1/progress', token, { message: 'kept back' });
    expect(queued.body.message).toMatch(/^progress noted; it is recorded within/);
    await t.worker.shutdown();

    // With no worker for the bead, gt done waits for a workflow task that never comes, until the gateway closes.
    const done = post(gateway.url, '/v1/done', token, { summary: 'finished' });
    await eventually(
      async () => (await client.workflow.getHandle(beadWorkflowId('gwc-orphan')).describe()).raw.pendingWorkflowTask,
      10_000,
      "gt done's update waiting for a workflow task",
    );
    await gateway.close();
    expect(await done).toEqual({
      status: 503,
      body: {
        error: 'the gateway is stopping (its worker is shutting down or restarting); run the command again in a moment',
      },
    });
    expect(await updatesNamed(client, 'gwc-orphan', 'gt_done')).toBe(0);
    expect(await updatesNamed(client, 'gwc-orphan', 'gt_progress')).toBe(1);
    await client.workflow.getHandle(beadWorkflowId('gwc-orphan')).terminate('test over');
  });
});
