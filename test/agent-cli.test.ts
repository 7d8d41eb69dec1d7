/**
 * The commands agents call inside their runs come from a plain-JS bundle (dist/gt-agent.cjs) so they start without
 * the TypeScript loader. Checked here with real processes: bin/gt routes exactly the agent commands to the bundle,
 * only while the bundle is newer than every source (never rebuilding it for them), and the bundle answers as the sources do.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AGENT_COMMANDS } from '../client/program';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('gt for agents', () => {
  it('routes exactly the agent commands of client/program.ts to the bundle', () => {
    const routed = /case "\$\{1:-\}" in\s+([\w|-]+)\)/
      .exec(readFileSync(join(root, 'bin/gt'), 'utf8'))?.[1]
      ?.split('|');
    expect(new Set(routed)).toEqual(new Set(AGENT_COMMANDS));
  });

  it('answers as the sources do: help, a missing run, an unreachable gateway', async () => {
    const outside = { GT_RUN_ID: '' };
    const unreachable = { GT_GATEWAY_URL: 'http://127.0.0.1:9', GT_RUN_TOKEN: 't', GT_RUN_ID: 'b-cli/r1/a1' };
    for (const [args, env] of [
      [['done', '--help'], {}],
      [['done', '--summary', 'x'], outside],
      [['progress', 'working'], unreachable],
    ] as const) {
      const bundled = await run('node', [join(root, 'dist/gt-agent.cjs'), ...args], env);
      const sources = await run(
        'node',
        ['--import', join(root, 'node_modules/tsx/dist/loader.mjs'), join(root, 'client/cli.ts'), ...args],
        env,
      );
      expect(bundled).toEqual(sources);
    }
  });

  it('posts to the gateway over TCP (IPv4 and IPv6) and its unix socket, one connection a call', async () => {
    const seen: Record<string, string | undefined>[] = [];
    const servers: Server[] = [];
    /** A stand-in gateway that keeps what each request carried and answers as the gateway does. */
    const gateway = (...at: [number, string] | [string]) =>
      new Promise<AddressInfo | string>((resolve, reject) => {
        const server = createServer((req, res) => {
          let body = '';
          req.on('data', (c: Buffer) => (body += c.toString()));
          req.on('end', () => {
            const { host, authorization, connection } = req.headers;
            seen.push({ url: req.url, host, authorization, connection, body });
            res.end(JSON.stringify({ accepted: true, runId: 'b-cli/r1/a1', message: `noted by ${host}` }));
          });
        });
        servers.push(server);
        server.once('error', reject);
        server.listen(...(at as [string]), () => resolve(server.address()!));
      });
    const dir = mkdtempSync(join(tmpdir(), 'gt-agent-cli-'));
    writeFileSync(join(dir, 'token'), 'the-token\n');
    try {
      const v4 = (await gateway(0, '127.0.0.1')) as AddressInfo;
      const v6 = (await gateway(0, '::1')) as AddressInfo;
      await gateway(join(dir, 'gateway.sock'));
      for (const [url, host] of [
        [`http://127.0.0.1:${v4.port}`, `127.0.0.1:${v4.port}`],
        [`http://[::1]:${v6.port}`, `[::1]:${v6.port}`],
        [`unix:${join(dir, 'gateway.sock')}`, 'localhost:80'],
      ]) {
        const env = { GT_RUN_ID: 'b-cli/r1/a1', GT_RUN_TOKEN_FILE: join(dir, 'token'), GT_GATEWAY_URL: url };
        const out = await run('node', [join(root, 'dist/gt-agent.cjs'), 'done', '--summary', 'x'], env);
        expect(out, url).toEqual({ code: 0, stdout: `noted by ${host}\n`, stderr: '' });
        expect(seen.pop(), url).toEqual({
          url: '/v1/done',
          host,
          authorization: 'Bearer the-token',
          // Closed after the answer: the call's process keeps nothing for a next request.
          connection: 'close',
          body: JSON.stringify({ runId: 'b-cli/r1/a1', summary: 'x' }),
        });
      }
    } finally {
      for (const server of servers) server.close();
    }
  });

  it('uses the bundle only while it is newer than every source', async () => {
    // A copy of the sources as bin/gt finds them, with a stand-in bundle that says it ran.
    const copy = mkdtempSync(join(tmpdir(), 'gt-agent-cli-'));
    const skip = new Set(['node_modules', 'dist', 'test', 'bench', 'docs']);
    for (const e of readdirSync(root, { withFileTypes: true })) {
      if (e.isDirectory() && !e.name.startsWith('.') && !skip.has(e.name))
        cpSync(join(root, e.name), join(copy, e.name), { recursive: true });
    }
    cpSync(join(root, 'package.json'), join(copy, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'));
    const bundle = join(copy, 'dist/gt-agent.cjs');
    const gt = join(copy, 'bin/gt');

    // Operator commands never use it: they run dist/gt-cli, building it (and this bundle) first when stale.
    expect((await run(gt, ['--version'])).stdout).toBe('0.1.0\n');
    writeFileSync(bundle, "console.log('from the bundle');\n");
    expect((await run(gt, ['done'])).stdout).toBe('from the bundle\n');
    expect((await run(gt, ['--version'])).stdout).toBe('0.1.0\n');
    // A source edited after the build: the sources run (and tell that this is not a run).
    const past = new Date(Date.now() - 60_000);
    utimesSync(bundle, past, past);
    const stale = await run(gt, ['done']);
    expect(stale.stdout).toBe('');
    expect(stale.stderr).toContain('not inside a Gas Town run');
    expect(readFileSync(bundle, 'utf8'), 'not rebuilt by an agent command').toContain('from the bundle');
  });
});
