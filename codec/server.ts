/**
 * The codec server the Temporal Web UI (and `temporal --codec-endpoint`) calls to show encrypted payloads to the
 * people allowed to read them: POST /decode and /encode with `{ payloads: [{ metadata, data }] }` (base64, the
 * proto3 JSON form). Browsers reach it cross-origin, so only the listed UI origins get CORS access; with a token
 * set, a request must also carry `Authorization: Bearer <token>` (the CLI's `--codec-auth`), compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Payload, PayloadCodec } from '@temporalio/common';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { describeZodError } from '../domain/validation';

export interface CodecServerOptions {
  codecs: PayloadCodec[];
  host?: string;
  port?: number;
  /** Origins of the Web UIs allowed to call it ('*' allows any). */
  allowOrigins: string[];
  /** When set, every request must present it as a bearer token. */
  token?: string;
}

export interface CodecServer {
  url: string;
  close(): Promise<void>;
}

const MAX_BODY = 8 * 1024 * 1024;
const Base64 = z.string().regex(/^[A-Za-z0-9+/_-]*={0,2}$/, 'must be base64');
const PayloadsBody = z.object({
  payloads: z
    .array(z.object({ metadata: z.record(z.string(), Base64).default({}), data: Base64.default('') }))
    .max(10_000),
});
type JsonPayload = z.input<typeof PayloadsBody>['payloads'][number];

const fromJson = (p: z.output<typeof PayloadsBody>['payloads'][number]): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data, 'base64'),
});
const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? new Uint8Array()).toString('base64')]),
  ),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

/**
 * The Authorization header is compared as SHA-256 digests with timingSafeEqual: digests always have equal length
 * (timingSafeEqual throws otherwise), and neither the time taken nor an early exit tells a caller how much of a
 * guess was right or how long the token is.
 */
const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
const sameToken = (header: string | undefined, expected: Buffer) => timingSafeEqual(digest(header ?? ''), expected);

export async function startCodecServer(options: CodecServerOptions): Promise<CodecServer> {
  const app = Fastify({ bodyLimit: MAX_BODY, logger: false });
  const anyOrigin = options.allowOrigins.includes('*');
  const expected = options.token ? digest(`Bearer ${options.token}`) : undefined;

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const origin = req.headers.origin;
    if (origin && (anyOrigin || options.allowOrigins.includes(origin))) {
      void reply.header('access-control-allow-origin', origin);
      void reply.header('vary', 'origin');
      void reply.header('access-control-allow-credentials', 'true');
      void reply.header('access-control-allow-methods', 'POST, OPTIONS');
      void reply.header('access-control-allow-headers', 'content-type, x-namespace, authorization');
    }
    if (req.method === 'OPTIONS') return reply.code(204).send();
    if (origin && !anyOrigin && !options.allowOrigins.includes(origin)) {
      return reply
        .code(403)
        .send({ error: `origin ${origin} is not allowed (gt codec-server --allow-origin ${origin})` });
    }
    if (expected && req.url !== '/healthz' && !sameToken(req.headers.authorization, expected)) {
      return reply.code(401).send({ error: 'missing or wrong bearer token' });
    }
  });

  const route = (path: '/encode' | '/decode', apply: (payloads: Payload[]) => Promise<Payload[]>) =>
    app.post(path, async (req: FastifyRequest, reply: FastifyReply) => {
      const parsed = PayloadsBody.safeParse(req.body);
      if (!parsed.success) return reply.code(400).send({ error: describeZodError(parsed.error) });
      try {
        return { payloads: (await apply(parsed.data.payloads.map(fromJson))).map(toJson) };
      } catch (err) {
        return reply.code(422).send({ error: (err as Error).message });
      }
    });
  route('/encode', async (payloads) => {
    for (const codec of options.codecs) payloads = await codec.encode(payloads);
    return payloads;
  });
  route('/decode', async (payloads) => {
    for (const codec of [...options.codecs].reverse()) payloads = await codec.decode(payloads);
    return payloads;
  });
  app.get('/healthz', () => ({ ok: true }));

  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 });
  const addr = app.server.address() as AddressInfo;
  return {
    url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    close: () => app.close(),
  };
}
