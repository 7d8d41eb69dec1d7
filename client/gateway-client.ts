/**
 * The agent side of the gateway: how `gt done` & co. and the agent MCP tools speak for their run (its gateway URL, id
 * and token from the run's environment) — never with Temporal credentials. The server side is gateway/server.ts.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { UNIX_URL_PREFIX } from '../agents/gateway-socket';
import { UserError } from './errors';

/**
 * The run this command speaks for: its gateway, its id, and its token — read from the owner-only file the worker
 * wrote (GT_RUN_TOKEN_FILE), so the token is never in an environment another process or `docker inspect` can read.
 * GT_RUN_TOKEN is still taken when set, for agents that were handed the token some other way.
 */
export function runEnv(env: NodeJS.ProcessEnv = process.env) {
  const { GT_GATEWAY_URL: url, GT_RUN_ID: runId } = env;
  let token = env.GT_RUN_TOKEN;
  if (!token && env.GT_RUN_TOKEN_FILE) {
    try {
      token = readFileSync(env.GT_RUN_TOKEN_FILE, 'utf8').trim();
    } catch (err) {
      throw new UserError(
        `cannot read the run token at GT_RUN_TOKEN_FILE=${env.GT_RUN_TOKEN_FILE}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  }
  if (!url || !token || !runId)
    throw new UserError(
      'not inside a Gas Town run: GT_GATEWAY_URL, GT_RUN_TOKEN_FILE (or GT_RUN_TOKEN) and GT_RUN_ID must be set',
    );
  return { url, token, runId };
}

/**
 * POSTs JSON to the gateway over TCP (`http://…`) or its unix socket (`unix:/path`, for sandboxed agents), on a
 * connection of its own: one request per process, so node's connection pool has nothing to keep, and without it the
 * request skips the pool's TLS server-name work (an IPv6 pattern compiled on first use: ≈ 6 ms of every agent's
 * `gt done`, which is on its bead's path; docs/performance.md, the twenty-second pass).
 */
function post(url: string, path: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  const data = JSON.stringify(body);
  const target = url.startsWith(UNIX_URL_PREFIX)
    ? { path, createConnection: () => connect(url.slice(UNIX_URL_PREFIX.length)) }
    : (() => {
        const u = new URL(path, url);
        // A URL writes an IPv6 address in brackets, which a connection does not take.
        const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
        const port = Number(u.port || 80);
        return { hostname: host, port, path: u.pathname, createConnection: () => connect(port, host) };
      })();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...target,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(data),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

export async function callGateway<T = { message: string }>(path: string, body: Record<string, unknown>): Promise<T> {
  const { url, token, runId } = runEnv();
  let res: { status: number; text: string };
  try {
    res = await post(url, path, token, { runId, ...body });
  } catch (err) {
    throw new UserError(`cannot reach the gateway at ${url}: ${(err as Error).message}`);
  }
  let payload: Record<string, unknown> = {};
  try {
    payload = JSON.parse(res.text) as Record<string, unknown>;
  } catch {
    // Not JSON: reported below by status.
  }
  if (res.status < 200 || res.status >= 300)
    throw new UserError(`${res.status}: ${typeof payload.error === 'string' ? payload.error : res.text.slice(0, 200)}`);
  return payload as T;
}
