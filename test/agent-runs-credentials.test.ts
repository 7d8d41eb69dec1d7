/**
 * The worker's git credentials (`gt credential add`) answer for its mirror's fetches, keyed by the remote's full
 * host:port: proved with real git against a real HTTP git server (git http-backend behind basic auth) on a
 * non-default port, where a port-less key (the predecessor's bug) is never matched. Agents never get them (the
 * run's environment is tested in agent-env.test.ts; the hostile-agent suite tries to read the store).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentialKey, credentialLine, hostCredentialsFile, saveHostCredential } from '../activities/credentials';
import { createRunRepo, git, importRunBranch, remoteBranchSha, syncMirror } from '../activities/git';
import { createRepo } from './helpers/repo';

const TOKEN = 'tok-3f9a1c-secret';
let server: Server;
let remote: string;
let origin: string;

/** A smart-HTTP git server that demands `ci:<TOKEN>`. */
beforeAll(async () => {
  const repo = await createRepo();
  origin = repo.origin;
  const root = join(repo.origin, '..');
  server = createServer((req, res) => {
    if (req.headers.authorization !== `Basic ${Buffer.from(`ci:${TOKEN}`).toString('base64')}`) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const cgi = spawn('git', ['http-backend'], {
      env: {
        ...process.env,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        REMOTE_USER: 'ci',
      },
    });
    req.pipe(cgi.stdin);
    const out: Buffer[] = [];
    cgi.stdout.on('data', (d: Buffer) => out.push(d));
    cgi.on('close', () => {
      const all = Buffer.concat(out);
      const split = all.indexOf('\r\n\r\n');
      const headers = all.subarray(0, split).toString().split('\r\n');
      const status = Number(/^Status: (\d+)/m.exec(headers.join('\n'))?.[1] ?? 200);
      for (const h of headers) {
        const i = h.indexOf(':');
        if (i > 0 && !/^status$/i.test(h.slice(0, i))) res.setHeader(h.slice(0, i), h.slice(i + 1).trim());
      }
      res.writeHead(status).end(all.subarray(split + 4));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  remote = `http://127.0.0.1:${(server.address() as { port: number }).port}/origin.git`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("the worker's git credentials", () => {
  it('keys credentials by protocol and the full host:port as the remote spells it', () => {
    expect(credentialKey('https://git.example.com:8443/org/repo.git')).toEqual({
      protocol: 'https',
      host: 'git.example.com:8443',
    });
    expect(credentialKey('https://user@git.example.com/org/repo.git')).toEqual({
      protocol: 'https',
      host: 'git.example.com',
    });
    expect(credentialKey('git@github.com:org/repo.git')).toBeNull();
    expect(credentialKey('/srv/repos/app.git')).toBeNull();
    expect(credentialLine('https://git.example.com:8443/x.git', 'ci', 'a/b:c')).toBe(
      'https://ci:a%2Fb%3Ac@git.example.com:8443',
    );
  });

  it('let the worker’s mirror fetch a host:port remote, from an owner-only store, without writing the token anywhere else', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gt-cred-home-'));
    saveHostCredential(home, 'https://elsewhere.example.com', 'other', 'other-token');
    saveHostCredential(home, remote, 'ci', TOKEN);
    expect(statSync(hostCredentialsFile(home)).mode & 0o777).toBe(0o600);
    expect(readFileSync(hostCredentialsFile(home), 'utf8')).toContain(credentialLine(remote, 'ci', TOKEN));

    const mirror = await syncMirror('cred', remote, home);
    expect(await remoteBranchSha(mirror, 'main')).toMatch(/^[0-9a-f]{40}$/);
    expect(await git(mirror, ['config', '--list', '--local'])).not.toContain(TOKEN);
  });

  it('let a finished run’s branch be pushed there from the import’s quarantine', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gt-cred-home-'));
    saveHostCredential(home, remote, 'ci', TOKEN);
    const mirror = await syncMirror('cred-push', remote, home);
    const base = (await remoteBranchSha(mirror, 'main'))!;
    const workTree = join(home, 'wt');
    await createRunRepo(mirror, workTree, { sha: base, branch: 'gt/cred' }, join(home, 'trash'));
    writeFileSync(join(workTree, 'work.txt'), 'work\n');
    execFileSync('git', ['add', '-A'], { cwd: workTree });
    execFileSync('git', ['-c', 'user.name=A', '-c', 'user.email=a@x', 'commit', '-qm', 'work'], { cwd: workTree });
    const taken = await importRunBranch({
      mirror,
      repo: remote,
      syncMirror: () => syncMirror('cred-push', remote, home),
      workTree,
      branch: 'gt/cred',
      targetBranch: 'main',
      baseSha: base,
      quarantine: join(home, 'q.git'),
      home,
      trash: join(home, 'trash'),
    });
    expect(taken.commitsAhead).toBe(1);
    expect(execFileSync('git', ['rev-parse', 'gt/cred'], { cwd: origin, encoding: 'utf8' }).trim()).toBe(taken.headSha);
  });

  it('do not authenticate with a port-less entry, and never prompt', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gt-cred-home-'));
    saveHostCredential(home, remote.replace(/:\d+\//, '/'), 'ci', TOKEN);
    await expect(syncMirror('cred', remote, home)).rejects.toThrow(
      /Authentication failed|could not read Username|terminal prompts disabled/,
    );
  });
});
