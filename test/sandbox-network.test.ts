/**
 * A sandboxed run of a rig with network, with real bubblewrap, real slirp4netns and real processes. Its network
 * namespace is always its own; with network, slirp4netns (--disable-host-loopback) attaches a user-mode network to
 * it. So it cannot reach a TCP service on the host's loopback (the stand-in for the Temporal frontend on
 * 127.0.0.1:7233, directly or through slirp's host alias 10.0.2.2) nor an abstract unix socket of the host, while the
 * same probes under the process runtime do reach both (the probes are real); it does reach a service on a
 * non-loopback address of this host (this machine has no internet), through its tap0 (10.0.2.100, default route).
 * slirp4netns ends with the run (exit or stop()), a worker killed mid-run leaves a networked run adoptable, a host
 * without slirp4netns fails a networked launch with one clear line, and a slirp4netns that cannot attach fails the run
 * before its command starts. The gateway's unix socket (a mounted directory) is covered by sandbox-runtime.test.ts
 * and hostile-agents.test.ts (whose sandbox rig has network).
 *
 * Before the fix (no network namespace when the rig allowed network), the loopback and abstract-socket probes
 * connected from the sandbox too.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessRuntime } from '../agents/process-runtime';
import type { AgentHandle, AgentLaunch } from '../agents/runtime';
import { SandboxRuntime, SLIRP_MISSING, slirpLog } from '../agents/sandbox-runtime';
import { findOnPath } from '../provisioning/temporal-cli';
import { runToExit, startInWorker, testLaunch, untilExited } from './helpers/launch';
import { startTestHost, type TestHost } from './helpers/netns';
import { eventually } from './helpers/town';

const sandbox = new SandboxRuntime();
const check = await sandbox.available();
const slirp = findOnPath('slirp4netns', `${process.env.PATH ?? ''}:/usr/bin:/usr/sbin`);
const skip = !check.ok ? check.reason : !slirp ? 'slirp4netns is not installed (apt-get install slirp4netns)' : null;
if (skip) console.warn(`sandbox network tests skipped: ${skip}`);

// Not under /tmp: the sandbox has a private /tmp.
const roots: string[] = [];
const scratch = (prefix: string) => {
  const dir = mkdtempSync(join('/var/tmp', prefix));
  roots.push(dir);
  return dir;
};

/** Connects to each target (`host:port`, or `@name` for an abstract unix socket) and writes `<target> <outcome>` lines. */
const PROBE = `
const net = require('net');
const fs = require('fs');
const targets = process.argv.slice(2);
(async () => {
  for (const t of targets) {
    const outcome = await new Promise((resolve) => {
      const s = t.startsWith('@') ? net.connect('\\0' + t.slice(1)) : net.connect(Number(t.split(':')[1]), t.split(':')[0]);
      let got = '';
      s.setTimeout(4000, () => { s.destroy(); resolve('timeout'); });
      s.on('data', (d) => { got += d; if (got.includes('\\n')) { s.destroy(); resolve('connected ' + got.trim()); } });
      s.on('error', (e) => resolve(e.code || e.message));
    });
    fs.appendFileSync('results', t + ' ' + outcome + '\\n');
  }
  const nets = require('os').networkInterfaces();
  fs.writeFileSync('interfaces.json', JSON.stringify(nets));
})();
`;

function launchOf(command: string, allowNetwork = true): AgentLaunch {
  const launch = testLaunch('sbx-net', command, { makeRoot: scratch, allowNetwork, env: { PATH: '/usr/bin:/bin' } });
  writeFileSync(join(launch.cwd, 'probe.cjs'), PROBE);
  return launch;
}

const results = (launch: AgentLaunch) =>
  Object.fromEntries(
    readFileSync(join(launch.cwd, 'results'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]),
  );

/** Live (non-zombie) slirp4netns processes in the process group of a run's wrapper. */
function slirpsOf(handle: AgentHandle): number[] {
  return readdirSync('/proc').flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return [];
    try {
      const argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0]!;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return argv0.endsWith('slirp4netns') && pgrp === handle.ref && state !== 'Z' ? [Number(entry)] : [];
    } catch {
      return [];
    }
  });
}

const listen = async (server: Server, where: string | number, host?: string) => {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (host === undefined) server.listen(where, resolve);
    else server.listen(where as number, host, resolve);
  });
  return server;
};
const greeter = (greeting: string) => createServer((s) => s.on('error', () => undefined).end(`${greeting}\n`));

describe.skipIf(skip !== null)('a sandboxed run with network', () => {
  const servers: Server[] = [];
  let loopbackPort: number;
  const abstractName = `gt-sbxnet-${process.pid}`;
  let outside: string | undefined; // host:port of a test host of our own (a network namespace), when one can be made
  let testHost: TestHost | undefined;

  beforeAll(async () => {
    // The stand-in for the Temporal frontend (and the gateway's TCP port): loopback only, as `gt up` binds them.
    const loopback = await listen(greeter('loopback-service'), 0, '127.0.0.1');
    loopbackPort = (loopback.address() as { port: number }).port;
    servers.push(loopback, await listen(greeter('abstract-service'), `\0${abstractName}`));
    const host = await startTestHost('outside-service');
    if ('skip' in host)
      console.warn(`no test host, so the sandbox network is checked by its interface and route only: ${host.skip}`);
    else [testHost, outside] = [host, host.target];
  });
  afterAll(() => {
    testHost?.close();
    for (const s of servers) s.close();
    for (const dir of roots) rmSync(dir, { recursive: true, force: true });
  });

  const loopbackTargets = () => [`127.0.0.1:${loopbackPort}`, `10.0.2.2:${loopbackPort}`, `@${abstractName}`];

  it("cannot reach a TCP service on the host's loopback (the Temporal frontend's place) nor the host's abstract unix sockets; the same probes connect under the process runtime", async () => {
    const targets = loopbackTargets();
    const probe = `node probe.cjs ${targets.join(' ')}`;

    const control = launchOf(probe);
    expect(await runToExit(new ProcessRuntime(), control)).toEqual({ state: 'exited', exitCode: 0 });
    const onHost = results(control);
    expect(onHost[targets[0]!]).toBe('connected loopback-service');
    expect(onHost[targets[2]!]).toBe('connected abstract-service');

    const launch = launchOf(probe);
    expect(await runToExit(sandbox, launch)).toEqual({ state: 'exited', exitCode: 0 });
    const inSandbox = results(launch);
    expect(Object.keys(inSandbox)).toEqual(targets);
    // Its own loopback has nothing listening; slirp's alias of the host's loopback is refused; the abstract socket
    // lives in the host's network namespace.
    expect(inSandbox[targets[0]!]).toBe('ECONNREFUSED');
    expect(inSandbox[targets[1]!]).not.toMatch(/^connected/);
    expect(inSandbox[targets[2]!]).toBe('ECONNREFUSED');
  });

  it('has a working network: tap0 at 10.0.2.100 with a default route, and a service on a non-loopback address of the host answers', async () => {
    const launch = launchOf(`cat /proc/net/route > route; node probe.cjs ${outside ?? ''}`);
    expect(await runToExit(sandbox, launch)).toEqual({ state: 'exited', exitCode: 0 });
    const interfaces = JSON.parse(readFileSync(join(launch.cwd, 'interfaces.json'), 'utf8')) as Record<
      string,
      { family: string; address: string }[]
    >;
    expect(Object.keys(interfaces).sort()).toEqual(['lo', 'tap0']);
    expect(interfaces.tap0!.filter((i) => i.family === 'IPv4').map((i) => i.address)).toEqual(['10.0.2.100']);
    // Destination 0 (default) through gateway 10.0.2.2 (0202000A, little-endian hex) on tap0.
    expect(readFileSync(join(launch.cwd, 'route'), 'utf8')).toMatch(/^tap0\s+00000000\s+0202000A\s/m);
    if (outside) expect(results(launch)).toEqual({ [outside]: 'connected outside-service' });
    else console.warn('no non-loopback address on this host: only the interface and route were checked');
  });

  it('without network the run has only its own loopback, as before', async () => {
    const launch = launchOf(`node probe.cjs ${[...loopbackTargets(), ...(outside ? [outside] : [])].join(' ')}`, false);
    expect(await runToExit(sandbox, launch)).toEqual({ state: 'exited', exitCode: 0 });
    const seen = results(launch);
    for (const outcome of Object.values(seen)) expect(outcome).not.toMatch(/^connected/);
    expect(Object.keys(JSON.parse(readFileSync(join(launch.cwd, 'interfaces.json'), 'utf8')) as object)).toEqual([
      'lo',
    ]);
    expect(existsSync(slirpLog(launch.runDir))).toBe(false);
  });

  it("passes none of bwrap's descriptors on to the run's command", async () => {
    const launch = launchOf('ls /proc/self/fd > fds');
    expect(await runToExit(sandbox, launch)).toEqual({ state: 'exited', exitCode: 0 });
    const fds = readFileSync(join(launch.cwd, 'fds'), 'utf8').trim().split('\n').map(Number);
    for (const fd of [4, 5, 6, 7, 8, 9]) expect(fds).not.toContain(fd);
  });

  it('ends slirp4netns with the run: when the run exits, and at once when it is stopped', async () => {
    const done = launchOf('while [ ! -f release ]; do sleep 0.05; done');
    const first = await sandbox.startOrAdopt(done);
    await eventually(() => slirpsOf(first.handle).length === 1, 10_000, 'slirp4netns runs for the run');
    writeFileSync(join(done.cwd, 'release'), '');
    await eventually(
      async () => (await sandbox.status(first.handle, done.runDir)).state === 'exited',
      10_000,
      'the run exited',
    );
    expect(await sandbox.status(first.handle, done.runDir)).toEqual({ state: 'exited', exitCode: 0 });
    expect(slirpsOf(first.handle)).toEqual([]);

    const stopped = launchOf('sleep 600');
    const { handle } = await sandbox.startOrAdopt(stopped);
    await eventually(() => slirpsOf(handle).length === 1, 10_000, 'slirp4netns runs for the run');
    const started = Date.now();
    await sandbox.stop(handle, 10_000);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(slirpsOf(handle)).toEqual([]);
    expect((await sandbox.status(handle, stopped.runDir)).state).toBe('exited');
  });

  it('survives kill -9 of the worker that started it; a new runtime adopts it, its network still works, and slirp4netns ends with it', async () => {
    const target = outside ?? '10.0.2.100:1'; // without an outside address: only that the probe ran
    const launch = launchOf(`while [ ! -f release ]; do sleep 0.05; done; node probe.cjs ${target}; exit 5`);
    const { handle: first, kill } = await startInWorker('sandbox', launch, scratch('gt-starter-'));
    await eventually(() => slirpsOf(first).length === 1, 10_000, 'slirp4netns runs for the run');
    await kill();

    const again = await new SandboxRuntime().startOrAdopt(launch);
    expect(again).toEqual({ handle: first, adopted: true });
    expect(await sandbox.status(again.handle, launch.runDir)).toEqual({ state: 'running' });
    expect(slirpsOf(first)).toHaveLength(1);
    writeFileSync(join(launch.cwd, 'release'), '');
    const status = await untilExited(sandbox, again.handle, launch.runDir, 20_000);
    expect(status).toEqual({ state: 'exited', exitCode: 5 });
    if (outside) expect(results(launch)).toEqual({ [outside]: 'connected outside-service' });
    expect(slirpsOf(first)).toEqual([]);
  });

  it('fails a networked launch with one clear line where slirp4netns is missing, and starts nothing (no host network instead)', async () => {
    const runtime = new SandboxRuntime(undefined, '/nonexistent/slirp4netns');
    const launch = launchOf('echo ran > ran');
    await expect(runtime.startOrAdopt(launch)).rejects.toThrow(SLIRP_MISSING);
    expect(SLIRP_MISSING).not.toContain('\n');
    expect(SLIRP_MISSING).toMatch(/install the Debian package slirp4netns/);
    expect(existsSync(join(launch.cwd, 'ran'))).toBe(false);
    expect(existsSync(join(launch.runDir, 'pid'))).toBe(false);
    // Nothing is left to block a launch of the same run id once slirp4netns is there, nor a launch without network.
    expect(await runToExit(sandbox, launch)).toEqual({ state: 'exited', exitCode: 0 });
    expect(await runToExit(runtime, launchOf('echo ran > ran', false))).toEqual({ state: 'exited', exitCode: 0 });
  });

  it('fails the run before its command starts when slirp4netns cannot attach the network', async () => {
    const broken = join(scratch('gt-slirp-'), 'slirp4netns');
    writeFileSync(broken, '#!/bin/sh\necho "cannot attach" >&2\nexit 1\n', { mode: 0o755 });
    const launch = launchOf('echo ran > ran');
    expect(await runToExit(new SandboxRuntime(undefined, broken), launch)).toEqual({ state: 'exited', exitCode: 125 });
    expect(existsSync(join(launch.cwd, 'ran'))).toBe(false);
    expect(readFileSync(join(launch.runDir, 'output.log'), 'utf8')).toContain(
      "gt sandbox: the run's network could not be attached",
    );
    expect(readFileSync(slirpLog(launch.runDir), 'utf8')).toContain('cannot attach');
  });
});
