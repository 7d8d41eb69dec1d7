/**
 * The docker runtime against a real Docker Engine and the real agent image (`npm run provision` starts dockerd and
 * builds the image as root; without them this file skips and says why). What a container run may and may not do:
 * it runs as the worker's uid with no capabilities on a read-only root, sees only its own directories and mounts,
 * has no network unless allowed, is bounded by its pids and memory limits, and can still do an agent's job (commit
 * with git on a read-only mirror's alternates, `gt done` through the gateway's unix socket). A worker killed with
 * kill -9 mid-run is replaced by one that adopts the live container: one container per run id, counted by the engine.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Docker from 'dockerode';
import { simpleGit } from 'simple-git';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerName, DockerRuntime, LABELS } from '../agents/docker-runtime';
import type { AgentHandle, AgentLaunch } from '../agents/runtime';
import { DEFAULT_AGENT_IMAGE, ResourceLimits } from '../domain/rig';
import { type LaunchOverrides, testLaunch, untilExited } from './helpers/launch';
import { eventually } from './helpers/town';

const ROOT = join(import.meta.dirname, '..');
/** A network of the test's own: the engine here runs without a default bridge (`--bridge=none`). */
const NETWORK = 'gt-test-internal';
const engine = new Docker({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
const runtime = new DockerRuntime(undefined, { network: NETWORK });
const check = await runtime.available();
if (!check.ok) console.warn(`docker-real: skipping: ${check.reason}`);

const uid = process.getuid!();
const gid = process.getgid!();
const testStart = Math.floor(Date.now() / 1000);
const handles: AgentHandle[] = [];

/** The repo's bin first on PATH (a container keeps only that entry: `gt`); HOME is the agent directory itself. */
function launchFor(command: string, over: LaunchOverrides = {}): AgentLaunch {
  const launch = testLaunch('docker-real', command, {
    env: (l) => ({ PATH: `${join(ROOT, 'bin')}:/usr/bin:/bin`, HOME: l.agentDir, GT_RUN_ID: l.runId }),
    limits: ResourceLimits.parse({ memoryMb: 512, cpus: 1, pids: 256 }),
    ...over,
  });
  // Made before the run starts, so that a run that does not see it shows the boundary, not a missing directory.
  mkdirSync(launch.runDir);
  return launch;
}

/** Runs the launch to its end (60 s at most) and reads its output; the container is removed after the tests. */
async function runToEnd(
  launch: AgentLaunch,
): Promise<{ exitCode: number | null; output: string; handle: AgentHandle }> {
  const { handle } = await runtime.startOrAdopt(launch);
  handles.push(handle);
  const { exitCode } = await untilExited(runtime, handle, launch.runDir, 60_000);
  return { exitCode, output: await runtime.logs(handle, launch.runDir), handle };
}

/** Containers the engine ever created for a run id (its event log), and those that exist now. */
async function containersOf(runId: string): Promise<{ created: number; existing: number }> {
  const filters = { type: ['container'], event: ['create'], label: [`${LABELS.run}=${runId}`] };
  const events = await engine.getEvents({
    since: testStart,
    until: Math.ceil(Date.now() / 1000) + 1,
    filters: JSON.stringify(filters),
  } as object);
  const chunks: Buffer[] = [];
  for await (const c of events) chunks.push(Buffer.from(c as Buffer));
  const created = Buffer.concat(chunks)
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim()).length;
  const existing = (await engine.listContainers({ all: true, filters: { label: [`${LABELS.run}=${runId}`] } })).length;
  return { created, existing };
}

describe.skipIf(!check.ok)('docker runtime on a real engine', () => {
  beforeAll(async () => {
    const networks = await engine.listNetworks({ filters: { name: [NETWORK] } });
    // Internal: no route out (and no iptables needed); enough to show the run gets an interface only when allowed.
    if (!networks.some((n) => n.Name === NETWORK))
      await engine.createNetwork({ Name: NETWORK, Driver: 'bridge', Internal: true });
  });
  afterAll(async () => {
    for (const h of handles) {
      await runtime.stop(h, 1_000).catch(() => undefined);
      await runtime.remove(h).catch(() => undefined);
    }
    await engine
      .getNetwork(NETWORK)
      .remove()
      .catch(() => undefined);
  });

  it('runs as the worker’s uid:gid, with no capabilities, no new privileges and a read-only root', async () => {
    const launch = launchFor(
      [
        'echo "ids $(id -u):$(id -g)"',
        "grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status",
        'touch owned; chown 12345:12345 owned && echo CHOWN-DONE || echo CHOWN-REFUSED',
        'touch /etc/planted 2>/dev/null && echo ROOT-WRITTEN || echo ROOT-READONLY',
        'touch /tmp/scratch && echo TMP-OK',
      ].join('\n'),
    );
    const { exitCode, output, handle } = await runToEnd(launch);
    expect(exitCode).toBe(0);
    expect(output).toContain(`ids ${uid}:${gid}`);
    // The CPU share is the engine's to enforce; what it was told is what the rig's limits say.
    expect((await engine.getContainer(handle.ref).inspect()).HostConfig).toMatchObject({
      NanoCpus: 1e9,
      PidsLimit: 256,
      Memory: 512 * 1024 * 1024,
      MemorySwap: 512 * 1024 * 1024,
    });
    for (const cap of ['CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])
      expect(output).toMatch(new RegExp(`^${cap}:\\s+0000000000000000$`, 'm'));
    expect(output).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(output).toContain('CHOWN-REFUSED');
    expect(output).toContain('ROOT-READONLY');
    expect(output).toContain('TMP-OK');
    // What it writes is the worker's, on the host.
    expect(statSync(join(launch.cwd, 'owned')).uid).toBe(uid);
  });

  it('sees only its work tree, its own directory and its read-only mounts, and only the launch’s environment', async () => {
    const host = mkdtempSync(join(tmpdir(), 'gt-docker-host-'));
    writeFileSync(join(host, 'secret'), 'worker secret');
    const shared = mkdtempSync(join(tmpdir(), 'gt-docker-ro-'));
    writeFileSync(join(shared, 'readme'), 'shared data');
    process.env.GT_TEST_WORKER_ONLY = 'must not reach the run';
    const launch = launchFor('', { mounts: [{ path: shared, writable: false }] });
    launch.command = [
      `cat ${host}/secret 2>/dev/null || echo NO-SECRET`,
      `ls ${launch.runDir} 2>/dev/null || echo NO-RUNDIR`,
      `cat ${shared}/readme; echo`,
      `echo x > ${shared}/planted 2>/dev/null && echo RO-WRITTEN || echo RO-REFUSED`,
      `echo y > ${launch.agentDir}/scratch && echo AGENTDIR-OK`,
      'env | cut -d= -f1 | sort | tr "\\n" " "',
    ].join('\n');
    const { exitCode, output } = await runToEnd(launch);
    delete process.env.GT_TEST_WORKER_ONLY;
    expect(exitCode).toBe(0);
    expect(output).toContain('NO-SECRET');
    expect(output).not.toContain('worker secret');
    expect(output).toContain('NO-RUNDIR');
    expect(output).toContain('shared data');
    expect(output).toContain('RO-REFUSED');
    expect(output).toContain('AGENTDIR-OK');
    expect(readdirSync(shared)).toEqual(['readme']);
    const names = output.trim().split('\n').at(-1)!.trim().split(' ');
    // The engine adds HOSTNAME; the shell its own PWD/SHLVL/_; nothing else beyond the launch's.
    expect(names.filter((n) => !['HOSTNAME', 'PWD', 'SHLVL', '_'].includes(n)).sort()).toEqual(
      Object.keys(launch.env).sort(),
    );
    expect(output).toContain(`PATH`);
  });

  it('has no network interface but loopback unless the rig allows a network', async () => {
    const ifaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '";
    const off = await runToEnd(launchFor(ifaces));
    expect(off.output.trim()).toBe('lo');
    const on = await runToEnd(launchFor(ifaces, { allowNetwork: true }));
    expect(on.output.trim().split(' ').sort()).toEqual(['eth0', 'lo']);
  });

  it('bounds a fork bomb by its pids limit and a memory hog by its memory limit', async () => {
    const forks = await runToEnd(
      // The forking loop in a subshell (a shell that cannot fork exits), counted with builtins: nothing can fork now.
      launchFor(
        '(i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo "tasks $#"',
        {
          limits: ResourceLimits.parse({ pids: 32, memoryMb: 256, cpus: 1 }),
        },
      ),
    );
    expect(forks.exitCode).toBe(0);
    const tasks = Number(/tasks (\d+)/.exec(forks.output)?.[1]);
    expect(tasks).toBeGreaterThan(10);
    expect(tasks).toBeLessThanOrEqual(32);

    // A small program that only grows (tail keeps the last 512 MB it read): node in its place sometimes thrashed on its
    // own code pages near the limit, reclaimed and read back again and again, for over a minute on a loaded machine
    // before the kernel gave up on it.
    const hog = await runToEnd(
      launchFor('head -c 1024M /dev/zero | tail -c 512M', {
        limits: ResourceLimits.parse({ pids: 64, memoryMb: 64, cpus: 1 }),
      }),
    );
    expect(hog.exitCode).toBe(137);
    // The memory limit killed it: Docker says so once containerd's OOM event arrives, which can be after the exit
    // event (a known containerd race, containerd/containerd#12372), so the flag is read until it is set.
    let oomKilled = false;
    for (let i = 0; i < 50 && !oomKilled; i++) {
      oomKilled = (await engine.getContainer(hog.handle.ref).inspect()).State.OOMKilled;
      if (!oomKilled) await new Promise((r) => setTimeout(r, 100));
    }
    expect(oomKilled).toBe(true);
  });

  it('lets an agent commit on a read-only mirror’s alternates and call gt done through the gateway’s unix socket', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gt-docker-git-'));
    const mirror = join(root, 'mirror.git');
    const seed = join(root, 'seed');
    await simpleGit().init(['--bare', '-b', 'main', mirror]);
    await simpleGit().clone(mirror, seed);
    writeFileSync(join(seed, 'README'), 'hello\n');
    await simpleGit(seed)
      .add('README')
      .addConfig('user.name', 'seed')
      .addConfig('user.email', 'seed@test')
      .commit('seed')
      .push('origin', 'main');
    const launch = launchFor('');
    // The run's repository borrows the mirror's objects (alternates) and must never write into it.
    await simpleGit().clone(mirror, launch.cwd, ['--shared']);
    const mirrorObjects = () => readdirSync(join(mirror, 'objects')).sort().join(',');
    const objectsBefore = mirrorObjects();

    const socketDir = join(root, 'gateway');
    mkdirSync(socketDir);
    const socketPath = join(socketDir, 'gateway.sock');
    const requests: { url?: string; auth?: string; body: string }[] = [];
    const server: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        requests.push({ url: req.url, auth: req.headers.authorization, body: Buffer.concat(chunks).toString() });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'done recorded' }));
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      launch.command =
        'echo work > work.txt && git add work.txt && git commit -q -m "work from a container" && gt done --summary "from a container"';
      launch.mounts = [
        { path: mirror, writable: false },
        { path: ROOT, writable: false },
        { path: socketDir, writable: false },
      ];
      Object.assign(launch.env, {
        GT_GATEWAY_URL: `unix:${socketPath}`,
        GT_RUN_TOKEN: 'token-of-this-run',
        GIT_AUTHOR_NAME: 'Polecat',
        GIT_AUTHOR_EMAIL: 'polecat@test',
        GIT_COMMITTER_NAME: 'Polecat',
        GIT_COMMITTER_EMAIL: 'polecat@test',
      });
      const { exitCode, output } = await runToEnd(launch);
      expect(output).toContain('done recorded');
      expect(exitCode).toBe(0);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ url: '/v1/done', auth: 'Bearer token-of-this-run' });
    expect(JSON.parse(requests[0]!.body)).toMatchObject({ runId: launch.runId, summary: 'from a container' });
    expect((await simpleGit(launch.cwd).log()).latest?.message).toBe('work from a container');
    expect(mirrorObjects()).toBe(objectsBefore);
  });

  it('after kill -9 of the worker mid-run, a new one adopts the live container: one container for the run, ever', async () => {
    const launch = launchFor('echo before; while [ ! -f release ]; do sleep 0.1; done; echo after; exit 5');
    const child = join(mkdtempSync(join(tmpdir(), 'gt-docker-worker-')), 'worker.mts');
    // A worker in miniature: start or adopt, then supervise (each probe copies the output) until killed.
    writeFileSync(
      child,
      [
        `import { DockerRuntime } from ${JSON.stringify(join(ROOT, 'agents/docker-runtime.ts'))};`,
        'const launch = JSON.parse(process.argv[2]);',
        'const runtime = new DockerRuntime();',
        'const { handle, adopted } = await runtime.startOrAdopt(launch);',
        'console.log(JSON.stringify({ handle, adopted }));',
        'for (;;) { await runtime.status(handle, launch.runDir); await new Promise((r) => setTimeout(r, 100)); }',
      ].join('\n'),
    );
    const worker = spawn(
      process.execPath,
      ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), child, JSON.stringify(launch)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      worker.once('exit', (_code, signal) => resolve(signal)),
    );
    const line = await Promise.race([
      new Promise<string>((resolve) => createInterface({ input: worker.stdout }).once('line', resolve)),
      exited.then((s) => `worker exited early (${s})`),
    ]);
    const first = JSON.parse(line) as { handle: AgentHandle; adopted: boolean };
    handles.push(first.handle);
    expect(first.adopted).toBe(false);
    await eventually(
      () => readFileSync(join(launch.runDir, 'output.log'), 'utf8').includes('before'),
      30_000,
      'the first worker copied the output',
    );

    worker.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(await runtime.status(first.handle, launch.runDir)).toEqual({ state: 'running' });

    const next = new DockerRuntime();
    const again = await next.startOrAdopt(launch);
    expect(again).toEqual({ handle: first.handle, adopted: true });
    writeFileSync(join(launch.cwd, 'release'), '');
    const status = await untilExited(next, again.handle, launch.runDir, 30_000);
    expect(status).toEqual({ state: 'exited', exitCode: 5 });
    // The output log continues where the killed worker left it: every line once.
    expect(await next.logs(again.handle, launch.runDir)).toBe('before\nafter\n');
    expect(await containersOf(launch.runId)).toEqual({ created: 1, existing: 1 });
  });

  it('adopts and starts a container an earlier attempt created but never started; refuses one of another run', async () => {
    const launch = launchFor('echo adopted');
    const name = containerName(launch.runId, launch.runDir);
    const labels = { [LABELS.run]: launch.runId, [LABELS.bead]: launch.beadId, [LABELS.runDir]: launch.runDir };
    const earlier = await engine.createContainer({
      name,
      Image: DEFAULT_AGENT_IMAGE,
      Cmd: ['echo', 'adopted'],
      Labels: labels,
    });
    const adopted = await runtime.startOrAdopt(launch);
    handles.push(adopted.handle);
    expect(adopted).toEqual({ handle: { runtime: 'docker', runId: launch.runId, ref: earlier.id }, adopted: true });
    await eventually(
      async () => (await runtime.status(adopted.handle, launch.runDir)).state === 'exited',
      30_000,
      'exited',
    );
    expect(await runtime.logs(adopted.handle, launch.runDir)).toBe('adopted\n');

    const squatter = launchFor('true');
    const foreign = await engine.createContainer({
      name: containerName(squatter.runId, squatter.runDir),
      Image: DEFAULT_AGENT_IMAGE,
      Cmd: ['true'],
      Labels: { [LABELS.run]: 'other/r1/a1', [LABELS.bead]: 'other' },
    });
    handles.push({ runtime: 'docker', runId: 'other/r1/a1', ref: foreign.id });
    await expect(runtime.startOrAdopt(squatter)).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(/belongs to other\/r1\/a1 .* not run /) as string,
    });
    expect((await foreign.inspect()).State.Status).toBe('created');
  });

  it('never adopts the container of the same run id in another town (another run directory)', async () => {
    const mine = launchFor('exit 4');
    const before = await runToEnd(mine);
    expect(before.exitCode).toBe(4);
    const elsewhere = { ...launchFor('exit 0'), runId: mine.runId, beadId: mine.beadId };
    const theirs = await runtime.startOrAdopt(elsewhere);
    handles.push(theirs.handle);
    expect(theirs.adopted).toBe(false);
    expect(theirs.handle.ref).not.toBe(before.handle.ref);
    await eventually(
      async () => (await runtime.status(theirs.handle, elsewhere.runDir)).state === 'exited',
      30_000,
      'exited',
    );
    expect(await runtime.status(theirs.handle, elsewhere.runDir)).toEqual({ state: 'exited', exitCode: 0 });
  });

  it('refuses, without retrying, an image this host does not have, and says how to build it', async () => {
    const launch = launchFor('true', { image: 'gastown/agent:no-such-tag' });
    await expect(runtime.startOrAdopt(launch)).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(
        /image gastown\/agent:no-such-tag is missing.*gt image build --tag gastown\/agent:no-such-tag/,
      ) as string,
    });
    expect(await containersOf(launch.runId)).toEqual({ created: 0, existing: 0 });
  });

  it('removes a finished container, and refuses to remove a running one', async () => {
    const done = await runToEnd(launchFor('echo bye'));
    await runtime.remove(done.handle);
    await runtime.remove(done.handle);
    expect(await runtime.status(done.handle, '/nonexistent')).toMatchObject({ state: 'unknown' });
    const live = launchFor('sleep 60');
    const { handle } = await runtime.startOrAdopt(live);
    handles.push(handle);
    await expect(runtime.remove(handle)).rejects.toMatchObject({ statusCode: 409 });
    await runtime.stop(handle, 1_000);
  });
});
