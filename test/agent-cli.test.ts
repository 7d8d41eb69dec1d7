/**
 * The commands agents call inside their runs come from a plain-JS bundle (dist/gt-agent.cjs) so they start without
 * the TypeScript loader. Checked here with real processes: bin/gt routes exactly the agent commands to the bundle,
 * only while the bundle is newer than every source (never rebuilding it for them), and the bundle answers as the sources do;
 * `gt done` goes to the gateway through curl when it can, and answers as the bundle does.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
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

/** Stand-in gateways that hand each request, its body read whole, to `answer`; `close` ends them all. */
function standIns(answer: (req: IncomingMessage, body: string, res: ServerResponse) => void) {
  const servers: Server[] = [];
  const listen = (...at: [number, string] | [string]) =>
    new Promise<AddressInfo | string>((resolve, reject) => {
      const server = createServer((req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => answer(req, body, res));
      });
      servers.push(server);
      server.once('error', reject);
      server.listen(...(at as [string]), () => resolve(server.address()!));
    });
  return { listen, close: () => servers.forEach((server) => server.close()) };
}

/** Where a command is on this PATH. */
const onPath = (tool: string) => execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();

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
    // Keeps what each request carried and answers as the gateway does.
    const { listen: gateway, close } = standIns((req, body, res) => {
      const { host, authorization, connection } = req.headers;
      seen.push({ url: req.url, host, authorization, connection, body });
      res.end(JSON.stringify({ accepted: true, runId: 'b-cli/r1/a1', message: `noted by ${host}` }));
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
      close();
    }
  });

  it('sends `gt done` through curl when it can: form-encoded, the token on no command line, the answer as text', async () => {
    const seen: Record<string, unknown>[] = [];
    /** How the stand-in answers next: the gateway's message, or its refusal. */
    let answer: { status: number; message?: string; error?: string } = { status: 200 };
    // Keeps what each request carried and answers as gateway/server.ts does: JSON, or text when asked for text.
    const { listen: gateway, close } = standIns((req, body, res) => {
      const type = req.headers['content-type'];
      const fields =
        type === 'application/x-www-form-urlencoded'
          ? Object.fromEntries(new URLSearchParams(body))
          : (JSON.parse(body) as Record<string, string>);
      seen.push({ url: req.url, type, accept: req.headers.accept, authorization: req.headers.authorization, fields });
      const message = answer.message ?? `noted: ${fields.summary}`;
      res.statusCode = answer.status;
      if (req.headers.accept === 'text/plain') return void res.end(answer.error ?? message);
      res.end(JSON.stringify(answer.error ? { error: answer.error } : { accepted: true, message }));
    });
    const dir = mkdtempSync(join(tmpdir(), 'gt-agent-curl-'));
    writeFileSync(join(dir, 'token'), 'gtr1.the-token_part.sig\n');
    // A PATH with node and find (bin/gt's own needs) but no curl: the bundle takes every call.
    const noCurl = join(dir, 'no-curl');
    mkdirSync(noCurl);
    for (const tool of ['node', 'find']) symlinkSync(onPath(tool), join(noCurl, tool));
    const gt = join(root, 'bin/gt');
    const summary = 'quote " backslash \\ & = + % ü, then\na second line';
    try {
      const v4 = (await gateway(0, '127.0.0.1')) as AddressInfo;
      const v6 = (await gateway(0, '::1')) as AddressInfo;
      await gateway(join(dir, 'gateway.sock'));
      const runEnv = (url: string) => ({
        GT_RUN_ID: 'b-cli/r1/a1',
        GT_RUN_TOKEN_FILE: join(dir, 'token'),
        GT_GATEWAY_URL: url,
      });
      const viaCurl = {
        url: '/v1/done',
        type: 'application/x-www-form-urlencoded',
        accept: 'text/plain',
        authorization: 'Bearer gtr1.the-token_part.sig',
      };
      for (const url of [
        `http://127.0.0.1:${v4.port}`,
        `http://[::1]:${v6.port}/some/prefix`,
        `unix:${join(dir, 'gateway.sock')}`,
      ]) {
        for (const [args, said] of [
          [['done', '--summary', summary], summary],
          [['done', `--summary=${summary}`], summary],
          [['done'], ''],
        ] as const) {
          expect(await run(gt, [...args], runEnv(url)), url).toEqual({
            code: 0,
            stdout: `noted: ${said}\n`,
            stderr: '',
          });
          expect(seen.pop(), url).toEqual({ ...viaCurl, fields: { runId: 'b-cli/r1/a1', summary: said } });
        }
      }

      // What it prints and how it exits are the bundle's, answer by answer; the bundle's requests are JSON.
      const env = runEnv(`http://127.0.0.1:${v4.port}`);
      for (const next of [
        { status: 200, message: 'bead b-cli: done recorded; the branch goes to the refinery' },
        { status: 409, error: 'run b-cli/r1/a1 is not current (the bead moved on)\nmore detail' },
        { status: 503, error: 'the gateway is stopping; run the command again in a moment' },
      ]) {
        answer = next;
        const curled = await run(gt, ['done', '--summary', 'x'], env);
        expect(seen.pop()).toMatchObject({ type: 'application/x-www-form-urlencoded' });
        const bundled = await run(gt, ['done', '--summary', 'x'], { ...env, PATH: noCurl });
        expect(seen.pop()).toMatchObject({ type: 'application/json', fields: { runId: 'b-cli/r1/a1', summary: 'x' } });
        expect(curled, next.error).toEqual(bundled);
        expect(curled.code).toBe(next.error ? 1 : 0);
      }
      answer = { status: 200 };

      // Anything but the plain forms goes to the bundle: its other options, and a summary that looks like an option.
      await run(gt, ['done', '--summary', 'x', '--json'], env);
      expect(seen.pop()).toMatchObject({ type: 'application/json' });
      await run(gt, ['done', '--summary', '--json'], env);
      expect(seen.pop()).toMatchObject({ type: 'application/json' });
      // And a call curl could not deliver: the bundle tries and says why it could not.
      const unreachable = { ...env, GT_GATEWAY_URL: 'http://127.0.0.1:9' };
      expect(await run(gt, ['done', '--summary', 'x'], unreachable)).toEqual(
        await run(gt, ['done', '--summary', 'x'], { ...unreachable, PATH: noCurl }),
      );
      expect(seen).toEqual([]);

      // The token reaches curl on its stdin: a curl that writes down its arguments, then runs, never saw it.
      const spy = join(dir, 'spy');
      mkdirSync(spy);
      writeFileSync(
        join(spy, 'curl'),
        `#!/bin/sh\nprintf '%s\\n' "$@" > '${join(dir, 'argv')}'\nexec '${onPath('curl')}' "$@"\n`,
        {
          mode: 0o755,
        },
      );
      expect((await run(gt, ['done'], { ...env, PATH: `${spy}:${process.env.PATH}` })).code).toBe(0);
      expect(seen.pop()).toMatchObject({ authorization: 'Bearer gtr1.the-token_part.sig' });
      const argv = readFileSync(join(dir, 'argv'), 'utf8');
      expect(argv).toContain('runId=b-cli/r1/a1');
      expect(argv).not.toContain('the-token');
    } finally {
      close();
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
