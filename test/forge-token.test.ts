/**
 * Issue 11, item 7: the worker's GITHUB_TOKEN goes only to the forge origins the worker names (GITHUB_API_URL,
 * default https://api.github.com), over https — plain http only to a loopback server named there explicitly. A rig's
 * forge.apiUrl (anyone with Temporal access can edit a rig) picks one of those or gets nothing. Each test points the
 * real forge activities at real local HTTP servers that record the Authorization header of every request they get.
 * Before this change, every refused case below sent the token to the server the rig named.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createForgeActivities } from '../activities/forge';
import { RigConfig } from '../domain/rig';
import { runGt, startTestTown, type TestTown } from './helpers/town';

interface Recorder {
  url: string;
  /** Authorization header of every request received (undefined when none was sent). */
  seen: (string | undefined)[];
  close(): Promise<void>;
}

/** A local HTTP server that records what it is sent; it answers 404, or redirects everything to `redirectTo`. */
async function recorder(redirectTo?: () => string): Promise<Recorder> {
  const seen: (string | undefined)[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    if (redirectTo) {
      res.writeHead(307, { location: `${redirectTo()}${req.url ?? '/'}` });
      return res.end();
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ message: 'Not Found' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const TOKEN = 'ghp_worker_token_never_leaves';
const rigWithApi = (apiUrl: string) =>
  RigConfig.parse({
    name: 'forge-token',
    repo: '/nonexistent',
    agent: 'true',
    merge: 'pr',
    forge: { repository: 'acme/forge-token', apiUrl, requestTimeout: 2000 },
  });
/** How the real activity fails for a rig whose API URL is `apiUrl`: the failure's type, retry decision and message. */
async function failureOf(
  apiUrl: string,
): Promise<{ type?: string | null; nonRetryable?: boolean | null; message: string }> {
  const env = new MockActivityEnvironment();
  try {
    await env.run((input: { rig: RigConfig; number: number }) => createForgeActivities().pullRequestSnapshot(input), {
      rig: rigWithApi(apiUrl),
      number: 1,
    });
  } catch (err) {
    if (err instanceof ApplicationFailure)
      return { type: err.type, nonRetryable: err.nonRetryable, message: err.message };
    throw err;
  }
  throw new Error(`the snapshot from ${apiUrl} did not fail`);
}

const servers: Recorder[] = [];
const serve = async (redirectTo?: () => string) => {
  const r = await recorder(redirectTo);
  servers.push(r);
  return r;
};
const saved = { token: process.env.GITHUB_TOKEN, api: process.env.GITHUB_API_URL };
const setEnv = (name: 'GITHUB_TOKEN' | 'GITHUB_API_URL', value: string | undefined) =>
  value === undefined ? delete process.env[name] : (process.env[name] = value);

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  setEnv('GITHUB_TOKEN', saved.token);
  setEnv('GITHUB_API_URL', saved.api);
});

describe("the worker's GitHub token", () => {
  it("goes to a loopback test server only when the worker's GITHUB_API_URL names it, and then it works", async () => {
    const fake = await serve();
    setEnv('GITHUB_TOKEN', TOKEN);
    setEnv('GITHUB_API_URL', undefined);
    // Default: only https://api.github.com. A rig naming a local server gets a refusal that says what to set.
    const refused = await failureOf(fake.url);
    expect(refused).toMatchObject({ type: 'ForgeNotConfigured', nonRetryable: true });
    expect(refused.message).toContain(
      `the worker sends its GitHub token only to https://api.github.com, not to ${fake.url}: if ${fake.url} is your GitHub (Enterprise) API, add it to GITHUB_API_URL in the worker's environment`,
    );
    expect(fake.seen).toEqual([]);

    setEnv('GITHUB_API_URL', `https://api.github.com, ${fake.url}`);
    // Allowed: the request reaches the server with the token (this one answers 404, which is GitHub's own refusal).
    const answered = await failureOf(`${fake.url}/`);
    expect(answered.type).toBe('ForgeRejected');
    expect(answered.message).toContain('404');
    expect(fake.seen).toEqual([`token ${TOKEN}`]);
  });

  it('never goes to an origin the worker does not name, whatever the rig says', async () => {
    const allowed = await serve();
    const other = await serve();
    setEnv('GITHUB_TOKEN', TOKEN);
    setEnv('GITHUB_API_URL', allowed.url);
    const refused = await failureOf(other.url);
    expect(refused).toMatchObject({ type: 'ForgeNotConfigured', nonRetryable: true });
    expect(refused.message).toContain(`only to ${allowed.url}, not to ${other.url}`);
    expect(other.seen).toEqual([]);
    expect(allowed.seen).toEqual([]);
  });

  it('never goes over plain http to anything but loopback, even when the worker names it', async () => {
    setEnv('GITHUB_TOKEN', TOKEN);
    setEnv('GITHUB_API_URL', 'http://github.example.com/api/v3');
    expect(await failureOf('http://github.example.com/api/v3')).toEqual({
      type: 'ForgeNotConfigured',
      nonRetryable: true,
      message:
        "GITHUB_API_URL of the worker: the GitHub API URL http://github.example.com/api/v3 is not https: the worker's GITHUB_TOKEN is sent only over https (plain http only to a loopback test server)",
    });
    setEnv('GITHUB_API_URL', 'https://github.example.com/api/v3');
    const plain = await failureOf('http://github.example.com/api/v3');
    expect(plain.type).toBe('ForgeNotConfigured');
    expect(plain.message).toContain('is not https');
  });

  it('does not follow a redirect to an origin the worker does not name', async () => {
    const elsewhere = await serve();
    const redirecting = await serve(() => elsewhere.url);
    setEnv('GITHUB_TOKEN', TOKEN);
    setEnv('GITHUB_API_URL', redirecting.url);
    const refused = await failureOf(redirecting.url);
    expect(refused).toMatchObject({ type: 'ForgeNotConfigured', nonRetryable: true });
    expect(refused.message).toContain(`not to ${elsewhere.url}`);
    expect(redirecting.seen).toEqual([`token ${TOKEN}`]);
    expect(elsewhere.seen).toEqual([]);
  });
});

describe('gt rig add --github-api-url', () => {
  let t: TestTown;
  beforeAll(async () => {
    t = await startTestTown();
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('refuses a URL the token could never go to, and warns when the worker would refuse it', async () => {
    const add = (name: string, apiUrl: string, env: Record<string, string> = {}) =>
      runGt(
        [
          'rig',
          'add',
          name,
          '--repo',
          `https://github.com/acme/${name}.git`,
          '--merge',
          'pr',
          '--github-repo',
          `acme/${name}`,
          '--github-api-url',
          apiUrl,
        ],
        t.cliEnv({ GITHUB_API_URL: '', ...env }),
      );
    const plain = await add('token-http', 'http://github.example.com/api/v3');
    expect(plain.code).not.toBe(0);
    expect(plain.stderr.trim()).toBe(
      "gt: --github-api-url: the GitHub API URL http://github.example.com/api/v3 is not https: the worker's GITHUB_TOKEN is sent only over https (plain http only to a loopback test server)",
    );

    const enterprise = await add('token-ghe', 'https://ghe.example.com/api/v3');
    expect(enterprise.code).toBe(0);
    expect(enterprise.stderr).toContain(
      "gt: warning: --github-api-url https://ghe.example.com/api/v3: the worker sends its GitHub token only to https://api.github.com, not to https://ghe.example.com: if https://ghe.example.com is your GitHub (Enterprise) API, add it to GITHUB_API_URL in the worker's environment",
    );

    const named = await add('token-named', 'https://ghe.example.com/api/v3', {
      GITHUB_API_URL: 'https://ghe.example.com/api/v3',
    });
    expect(named.code).toBe(0);
    expect(named.stderr).toBe('');
  });
});
