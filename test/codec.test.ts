/**
 * Issue 6 acceptance: with the payload codec on, no bead title or description is readable in Temporal's raw
 * history (or memo, or summaries); `gt codec-server` decodes it for the Web UI. Real server, worker, git, agent.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, type Connection } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { AesGcmCodec, isEncrypted } from '../codec/aes-gcm-codec';
import { keyId, parseKeys } from '../codec/keys';
import { startCodecServer } from '../codec/server';
import { dataConverterFromEnv, MISSING_KEY_MESSAGE } from '../codec/settings';
import { Town } from '../client/town';
import { createRepo } from './helpers/repo';
import { startChild, type Child } from './helpers/processes';
import { startDevServer } from '../provisioning/dev-server';
import { installWorkerRuntime } from '../worker/logging';
import { createTownWorker } from '../worker/worker';
import { FAST_POLICY, agentScript, gtBin, runGt } from './helpers/town';

const { workflowservice } = proto.temporal.api;
const newKey = () => randomBytes(32).toString('base64');
const KEY = newKey();
const utf8 = (b: Uint8Array | null | undefined) => Buffer.from(b ?? new Uint8Array()).toString('utf8');

describe('AesGcmCodec', () => {
  const codec = new AesGcmCodec(parseKeys(KEY, /,/, 'test'));
  const plain: Payload = { metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('"a secret title"') };

  it('round-trips a payload and hides both its data and its original encoding', async () => {
    const [sealed] = await codec.encode([plain]);
    expect(isEncrypted(sealed!)).toBe(true);
    expect(utf8(sealed!.metadata!['encryption-key-id'])).toBe(keyId(Buffer.from(KEY, 'base64')));
    expect(utf8(sealed!.data)).not.toContain('secret');
    expect(utf8(sealed!.data)).not.toContain('json/plain');
    const [opened] = await codec.decode([sealed!]);
    expect(utf8(opened!.data)).toBe('"a secret title"');
    expect(utf8(opened!.metadata!.encoding)).toBe('json/plain');
  });

  it('passes unencrypted payloads through, so history written before encryption stays readable', async () => {
    const [same] = await codec.decode([plain]);
    expect(utf8(same!.data)).toBe('"a secret title"');
  });

  it('refuses a tampered payload and names an unknown key instead of guessing', async () => {
    const [sealed] = await codec.encode([plain]);
    const tampered = { ...sealed!, data: Buffer.from(sealed!.data!).fill(0, 20, 21) };
    await expect(codec.decode([tampered])).rejects.toThrow(/unable to authenticate|auth/i);
    const other = new AesGcmCodec(parseKeys(newKey(), /,/, 'GT_CODEC_KEY'));
    await expect(other.decode([sealed!])).rejects.toThrow(
      /encrypted with codec key [0-9a-f]{16}, which is not among the keys from GT_CODEC_KEY/,
    );
  });

  it('decrypts with an older key after rotation (first key encrypts, all decrypt)', async () => {
    const [sealedOld] = await codec.encode([plain]);
    const rotated = new AesGcmCodec(parseKeys(`${newKey()},${KEY}`, /,/, 'GT_CODEC_KEY'));
    const [opened] = await rotated.decode([sealedOld!]);
    expect(utf8(opened!.data)).toBe('"a secret title"');
  });

  it('gt worker with aes-gcm and no key refuses to start instead of inventing a key of its own', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gt-codec-nokey-'));
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'GT_CODEC_KEY_FILE')),
      GT_HOME: home,
      GT_PAYLOAD_CODEC: 'aes-gcm',
      GT_CODEC_KEY: '',
    };
    const r = await runGt(['worker', '--gateway-port', '0'], env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `gt: GT_PAYLOAD_CODEC=aes-gcm needs the town's key, the same on every worker: no codec key: ${join(home, 'codec.key')} does not exist; set GT_CODEC_KEY or GT_CODEC_KEY_FILE to the town's key`,
    );
    expect(existsSync(join(home, 'codec.key'))).toBe(false);
  });

  it('rejects a malformed key with a message that says how to make one', () => {
    expect(() => parseKeys('c2hvcnQ=', /,/, 'GT_CODEC_KEY')).toThrow(
      'invalid codec key in GT_CODEC_KEY: 0: a codec key must decode to 32 bytes (generate one with `openssl rand -base64 32`)',
    );
  });
});

describe('codec server bearer token', () => {
  it('refuses a wrong token of the same length and of another length, and no token; accepts the right one', async () => {
    const token = randomBytes(24).toString('hex');
    const server = await startCodecServer({
      codecs: [new AesGcmCodec(parseKeys(KEY, /,/, 'GT_CODEC_KEY'))],
      allowOrigins: [],
      token,
    });
    try {
      const decode = (authorization?: string) =>
        fetch(`${server.url}/decode`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body: '{"payloads":[]}',
        });
      const sameLength = token.slice(0, -1) + (token.endsWith('0') ? '1' : '0');
      for (const wrong of [
        `Bearer ${sameLength}`,
        `Bearer ${token}x`,
        `Bearer ${token.slice(0, 8)}`,
        `bearer ${token}`,
        token,
        undefined,
      ]) {
        const r = await decode(wrong);
        expect(r.status, `authorization ${JSON.stringify(wrong)}`).toBe(401);
        expect(await r.json()).toEqual({ error: 'missing or wrong bearer token' });
      }
      const ok = await decode(`Bearer ${token}`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ payloads: [] });
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

/**
 * An encrypted town on a Temporal server of its own: other test files list rigs and beads across the suite's shared
 * namespace, and must never meet workflows whose payloads they have no key for.
 */
async function startEncryptedTown(codecEnv: Record<string, string>) {
  installWorkerRuntime({ logFormat: 'pretty', logLevel: 'WARN' });
  const gtHome = mkdtempSync(join(tmpdir(), 'gt-codec-home-'));
  // The worker reads the setting from the environment, as `gt worker` does.
  Object.assign(process.env, codecEnv, { GT_HOME: gtHome });
  const server = await startDevServer();
  const taskQueue = `codec-${process.pid}`;
  const client = new Client({
    connection: server.env.connection,
    namespace: server.namespace,
    dataConverter: dataConverterFromEnv(),
  });
  const worker = await createTownWorker({
    connection: server.env.nativeConnection,
    namespace: server.namespace,
    taskQueue,
    hostId: 'codec-host',
    workflowBundle: { codePath: inject('workflowBundlePath') },
    pollIntervalMs: 200,
    shutdownGraceTime: '2s',
  });
  const running = worker.run();
  return {
    town: new Town(client, taskQueue),
    connection: server.env.connection,
    namespace: server.namespace,
    cliEnv: (extra: Record<string, string> = {}) => ({
      ...process.env,
      TEMPORAL_ADDRESS: server.address,
      TEMPORAL_NAMESPACE: server.namespace,
      GT_TASK_QUEUE: taskQueue,
      GT_HOME: gtHome,
      ...extra,
    }),
    async stop() {
      await worker.shutdown();
      await running.catch(() => undefined);
      await server.stop();
      for (const k of Object.keys(codecEnv)) delete process.env[k];
    },
  };
}

describe('a town with GT_PAYLOAD_CODEC=aes-gcm', () => {
  let t: Awaited<ReturnType<typeof startEncryptedTown>>;
  let town: Town;
  let connection: Connection;
  const children: Child[] = [];
  const codecEnv = { GT_PAYLOAD_CODEC: 'aes-gcm', GT_CODEC_KEY: KEY };

  beforeAll(async () => {
    t = await startEncryptedTown(codecEnv);
    town = t.town;
    connection = t.connection;
  });
  afterAll(async () => {
    await Promise.all(children.map((c) => c.stop('SIGKILL')));
    await t?.stop();
  });

  /** Every byte Temporal stores for a workflow: its full history and its description (memo, summaries). */
  async function storedBytes(workflowId: string): Promise<Buffer> {
    const svc = connection.workflowService;
    const history = await svc.getWorkflowExecutionHistory({ namespace: t.namespace, execution: { workflowId } });
    const described = await svc.describeWorkflowExecution({ namespace: t.namespace, execution: { workflowId } });
    return Buffer.concat([
      workflowservice.v1.GetWorkflowExecutionHistoryResponse.encode(history).finish(),
      workflowservice.v1.DescribeWorkflowExecutionResponse.encode(described).finish(),
    ]);
  }

  it('stores bead titles and descriptions only as ciphertext; the CLI with the key reads them', async () => {
    const secret = randomBytes(6).toString('hex');
    const title = `Rotate the ${secret} credentials`;
    const description = `Only people with the key may read ${secret}-details`;
    const repo = await createRepo();
    await town.addRig({ name: 'enc', repo: repo.origin, agent: agentScript('good'), policy: FAST_POLICY });
    const { handle } = await town.sling('enc', { id: 'b-enc', title, description });
    expect((await handle.result()).status).toBe('closed');

    for (const workflowId of ['bead:b-enc', 'mr:b-enc:1', 'refinery:enc']) {
      const bytes = await storedBytes(workflowId);
      expect(bytes.includes('binary/encrypted'), `${workflowId} has encrypted payloads`).toBe(true);
      expect(bytes.includes(secret), `${workflowId} leaks the bead text`).toBe(false);
    }

    const withKey = await runGt(['bead', 'status', 'b-enc', '--json'], t.cliEnv(codecEnv));
    expect(withKey.code, withKey.stderr).toBe(0);
    expect(z.object({ title: z.string() }).parse(JSON.parse(withKey.stdout)).title).toBe(title);
    const withoutKey = await runGt(
      ['bead', 'status', 'b-enc', '--json'],
      t.cliEnv({ GT_PAYLOAD_CODEC: 'none', GT_CODEC_KEY: '' }),
    );
    expect(withoutKey.code).toBe(1);
    expect(withoutKey.stdout).not.toContain(secret);
    expect(withoutKey.stderr.trim()).toBe(`gt: ${MISSING_KEY_MESSAGE}`);
  });

  it('gt codec-server decodes the stored payloads for the Web UI, with CORS for allowed origins only', async () => {
    const secret = randomBytes(6).toString('hex');
    const repo = await createRepo();
    await town.addRig({ name: 'enc-ui', repo: repo.origin, agent: agentScript('good'), policy: FAST_POLICY });
    const { handle } = await town.sling('enc-ui', { id: 'b-enc-ui', title: `Title ${secret}` });
    await handle.result();
    const history = await connection.workflowService.getWorkflowExecutionHistory({
      namespace: t.namespace,
      execution: { workflowId: 'bead:b-enc-ui' },
    });
    const input = history.history!.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads!;
    const body = JSON.stringify({
      payloads: input.map((p) => ({
        metadata: Object.fromEntries(
          Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
        ),
        data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
      })),
    });
    expect(body).not.toContain(secret);

    const server = startChild(gtBin, ['codec-server', '--port', '0'], t.cliEnv(codecEnv));
    children.push(server);
    await server.waitFor(/codec server listening on (http:\S+)/);
    const url = /codec server listening on (http:\S+)/.exec(server.output())![1]!;
    const origin = 'http://localhost:8233';

    const preflight = await fetch(`${url}/decode`, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,x-namespace',
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(origin);
    expect(preflight.headers.get('access-control-allow-headers')).toMatch(/x-namespace/);

    const decoded = await fetch(`${url}/decode`, {
      method: 'POST',
      headers: { origin, 'content-type': 'application/json', 'x-namespace': t.namespace },
      body,
    });
    expect(decoded.status).toBe(200);
    const out = z
      .object({ payloads: z.array(z.object({ metadata: z.record(z.string(), z.string()), data: z.string() })) })
      .parse(await decoded.json());
    expect(Buffer.from(out.payloads[0]!.metadata.encoding!, 'base64').toString()).toBe('json/plain');
    expect(Buffer.from(out.payloads[0]!.data, 'base64').toString()).toContain(`Title ${secret}`);

    const foreign = await fetch(`${url}/decode`, {
      method: 'POST',
      headers: { origin: 'http://evil.example', 'content-type': 'application/json' },
      body,
    });
    expect(foreign.status).toBe(403);
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    const malformed = await fetch(`${url}/decode`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"payloads":[{"data":"not base64!"}]}',
    });
    expect(malformed.status).toBe(400);
    expect(await malformed.text()).toMatch(/payloads.0.data: must be base64/);
  });

  it('gt codec-server without a key says where the key should be', async () => {
    const r = await runGt(
      ['codec-server', '--port', '0'],
      t.cliEnv({ GT_CODEC_KEY: '', GT_CODEC_KEY_FILE: '/nonexistent/codec.key' }),
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      "gt: no codec key: /nonexistent/codec.key does not exist; set GT_CODEC_KEY or GT_CODEC_KEY_FILE to the town's key",
    );
  });
});
