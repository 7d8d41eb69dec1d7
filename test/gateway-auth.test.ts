/**
 * Issue 3 acceptance: the agent gateway refuses forged, expired and cross-bead tokens (401/403) and malformed bodies
 * (400 with the zod message) and oversized ones (413/400 naming the limit), and none of it changes the bead; no run
 * token appears in any workflow history. The same holds for form-encoded bodies answered in plain text (bin/gt's
 * `gt done` through curl), and such a `gt done` is recorded as the bundle's JSON one is.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintRunToken } from '../agents/run-token';
import { gatewaySecret } from '../host/home';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

const post = async (path: string, token: string | undefined, body: unknown) => {
  const res = await fetch(`${t.worker.gateway.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, error: ((await res.json()) as { error?: string }).error ?? '' };
};

/** A request as bin/gt's curl sends `gt done`: form fields, the answer asked for as plain text. */
const postForm = async (path: string, token: string, fields: [string, string][]) => {
  const res = await fetch(`${t.worker.gateway.url}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'text/plain',
      authorization: `Bearer ${token}`,
    },
    body: new URLSearchParams(fields).toString(),
  });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
};

/** Every history of the test's task queue, as text. */
async function allHistories(): Promise<string> {
  const texts: string[] = [];
  for await (const wf of t.client.workflow.list({ query: `TaskQueue = '${t.taskQueue}'` })) {
    const history = await t.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    texts.push(JSON.stringify(history));
  }
  return texts.join('\n');
}

describe('the agent gateway', () => {
  it('refuses forged, expired, cross-bead and wrong-role tokens and malformed bodies without changing anything; no token reaches history', async () => {
    const repo = await createRepo();
    const dir = mkdtempSync(join(tmpdir(), 'gt-gw-'));
    await t.addRig({
      name: 'gw-rig',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: dir },
    });
    const { handle } = await t.town.sling('gw-rig', { id: 'b-gw', title: 'Guarded' });
    await eventually(
      async () => /waiting for gt done/.test((await t.town.beadState('b-gw')).waitingFor),
      30_000,
      'run started',
    );
    const before = await t.town.beadState('b-gw');
    const secret = gatewaySecret(t.gtHome);
    const claims = {
      beadId: 'b-gw',
      runId: 'b-gw/r1/a1',
      role: 'polecat' as const,
      workflowId: 'bead:b-gw',
      exp: Date.now() + 60_000,
    };
    const valid = mintRunToken(secret, claims);

    expect(await post('/v1/done', undefined, {})).toEqual({
      status: 401,
      error: 'missing bearer token (the token in the file GT_RUN_TOKEN_FILE names)',
    });
    expect(await post('/v1/done', mintRunToken(Buffer.from('not the secret'), claims), {})).toEqual({
      status: 401,
      error: 'bad token signature',
    });
    expect(await post('/v1/done', `${valid.slice(0, -4)}AAAA`, {})).toEqual({
      status: 401,
      error: 'bad token signature',
    });
    expect(await post('/v1/done', mintRunToken(secret, { ...claims, exp: Date.now() - 1 }), {})).toEqual({
      status: 401,
      error: 'token expired',
    });
    expect(await post('/v1/done', 'gtr1.garbage', {})).toEqual({ status: 401, error: 'malformed token' });
    // A valid token speaks only for its own run, whatever the body says.
    expect(await post('/v1/done', valid, { runId: 'b-other/r1/a1' })).toEqual({
      status: 403,
      error: 'token belongs to run b-gw/r1/a1, not "b-other/r1/a1"',
    });
    expect(await post('/v1/review', valid, { verdict: 'approve' })).toEqual({
      status: 403,
      error: "this endpoint is for reviewers; the token is a polecat's",
    });
    // A token of the same bead, validly signed, for a run that is not current.
    expect((await post('/v1/done', mintRunToken(secret, { ...claims, runId: 'b-gw/r1/a2' }), {})).status).toBe(409);

    expect(await post('/v1/escalate', valid, { reason: '   ' })).toEqual({
      status: 400,
      error: 'reason: reason must not be empty',
    });
    expect(await post('/v1/checkpoint', valid, { note: 'x'.repeat(5000) })).toEqual({
      status: 400,
      error: 'note: checkpoint note must be at most 4000 characters',
    });
    expect(await post('/v1/progress', valid, { message: 42 })).toMatchObject({
      status: 400,
      error: expect.stringMatching(/^message: /) as string,
    });
    expect((await post('/v1/done', valid, '{"summary": ')).status).toBe(400);
    expect(await post('/v1/done', valid, [1, 2])).toEqual({ status: 400, error: 'body must be a JSON object' });

    // Oversized text is refused with its limit and never forwarded: a 3 MB summary would pass Temporal's 2 MB payload limit.
    expect(await post('/v1/done', valid, { summary: 'x'.repeat(3 * 1024 * 1024) })).toEqual({
      status: 413,
      error:
        'request body over the gateway limit of 256 KiB: a summary, feedback or reason is at most 20000 characters (put long material in the repository and refer to it)',
    });
    expect(await post('/v1/done', valid, { summary: 'x'.repeat(20_001) })).toEqual({
      status: 400,
      error: 'summary: summary must be at most 20000 characters (put long material in the repository and refer to it)',
    });

    // Form-encoded, answered in text: the same checks, the same words.
    const text = 'text/plain; charset=utf-8';
    expect(await postForm('/v1/done', valid, [['runId', 'b-other/r1/a1']])).toEqual({
      status: 403,
      type: text,
      text: 'token belongs to run b-gw/r1/a1, not "b-other/r1/a1"',
    });
    expect(
      await postForm('/v1/done', valid, [
        ['summary', 'a'],
        ['summary', 'b'],
      ]),
    ).toEqual({
      status: 400,
      type: text,
      text: 'form field "summary" given twice',
    });
    expect(await postForm('/v1/done', valid, [['summary', 'x'.repeat(20_001)]])).toMatchObject({
      status: 400,
      text: expect.stringMatching(/^summary: summary must be at most 20000 characters/) as string,
    });
    expect(await postForm('/v1/done', valid, [['summary', 'x'.repeat(300 * 1024)]])).toEqual({
      status: 413,
      type: text,
      text: expect.stringMatching(/^request body over the gateway limit of 256 KiB/) as string,
    });

    expect(await t.town.beadState('b-gw')).toEqual(before);

    // A `gt done` as curl sends it is taken like the bundle's: its summary decoded, its answer the message.
    const summary = 'form: quote " & = + % ü';
    expect(
      await postForm('/v1/done', valid, [
        ['runId', claims.runId],
        ['summary', summary],
      ]),
    ).toEqual({
      status: 200,
      type: text,
      text: 'bead b-gw: done recorded; the branch goes to the refinery',
    });

    writeFileSync(join(dir, 'release'), '');
    expect((await handle.result()).status).toBe('closed');
    // The agent's own `gt done` afterwards was a repeat: the first summary stands.
    expect((await t.town.beadState('b-gw')).runs.find((r) => r.runId === claims.runId)?.summary).toBe(summary);

    const histories = await allHistories();
    expect(histories).toContain('bead:b-gw');
    expect(histories).not.toContain(valid);
    expect(histories).not.toContain(valid.split('.')[2]);
    expect(histories).not.toMatch(/gtr1\.[A-Za-z0-9_-]{20,}/);
  });
});
