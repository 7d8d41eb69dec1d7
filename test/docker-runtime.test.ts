/**
 * The docker runtime at the Docker Engine API boundary: a fake Engine (HTTP on a unix socket, as dockerd serves it)
 * since build machines have no engine; the shared contract suite runs the real one where it exists. Container name
 * = run id, labels carry bead and run, a name conflict is adopted after checking labels, never a second start.
 */
import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { containerName, DockerRuntime, LABELS } from '../agents/docker-runtime';
import type { AgentLaunch } from '../agents/runtime';

interface FakeContainer {
  Id: string;
  Name: string;
  Config: { Labels: Record<string, string>; Image: string; Cmd: string[]; Env: string[] };
  HostConfig: { Binds: string[]; NetworkMode: string };
  State: { Status: 'created' | 'running' | 'exited'; Running: boolean; ExitCode: number };
}

/** Just enough of the Docker Engine API for the runtime, with counters and fault switches. */
class FakeEngine {
  containers = new Map<string, FakeContainer>();
  calls: string[] = [];
  /** Another launcher creates the container between our inspect and our create. */
  raceOnCreate?: FakeContainer;
  inspectFails = false;
  server!: Server;
  readonly socketPath = join(mkdtempSync(join(tmpdir(), 'gt-fake-docker-')), 'docker.sock');

  find(ref: string) {
    return this.containers.get(ref) ?? [...this.containers.values()].find((c) => c.Name === `/${ref}`);
  }
  add(name: string, labels: Record<string, string>, status: FakeContainer['State']['Status']): FakeContainer {
    const c: FakeContainer = {
      Id: `id${this.containers.size + 1}`.padEnd(64, '0'),
      Name: `/${name}`,
      Config: { Labels: labels, Image: 'img', Cmd: [], Env: [] },
      HostConfig: { Binds: [], NetworkMode: 'none' },
      State: { Status: status, Running: status === 'running', ExitCode: 0 },
    };
    this.containers.set(c.Id, c);
    return c;
  }

  async start() {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, body, raw }) => {
        res.writeHead(status, { 'content-type': raw ? 'application/vnd.docker.raw-stream' : 'application/json' });
        res.end(raw ?? (body === undefined ? '' : JSON.stringify(body)));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(this.socketPath, resolve));
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body?: unknown; raw?: Buffer }> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'http://docker');
    const path = url.pathname.replace(/^\/v[\d.]+/, '');
    this.calls.push(`${req.method} ${path}`);
    if (path === '/_ping') return { status: 200, body: 'OK' };
    if (req.method === 'POST' && path === '/containers/create') {
      const name = url.searchParams.get('name')!;
      if (this.raceOnCreate) {
        this.containers.set(this.raceOnCreate.Id, this.raceOnCreate);
        this.raceOnCreate = undefined;
      }
      if (this.find(name)) return { status: 409, body: { message: `Conflict. The container name "/${name}" is already in use` } };
      const spec = JSON.parse(Buffer.concat(chunks).toString()) as { Image: string; Cmd: string[]; Env: string[]; Labels: Record<string, string>; HostConfig: FakeContainer['HostConfig'] };
      const c = this.add(name, spec.Labels, 'created');
      Object.assign(c.Config, { Image: spec.Image, Cmd: spec.Cmd, Env: spec.Env });
      c.HostConfig = spec.HostConfig;
      return { status: 201, body: { Id: c.Id, Warnings: [] } };
    }
    const m = /^\/containers\/([^/]+)\/(json|start|stop|logs)$/.exec(path);
    const c = m ? this.find(decodeURIComponent(m[1]!)) : undefined;
    if (!m) return { status: 404, body: { message: 'page not found' } };
    if (m[2] === 'json' && this.inspectFails) return { status: 500, body: { message: 'engine hiccup' } };
    if (!c) return { status: 404, body: { message: `No such container: ${m[1]}` } };
    switch (m[2]) {
      case 'json':
        return { status: 200, body: c };
      case 'start':
        if (c.State.Status === 'running') return { status: 304 };
        c.State = { Status: 'running', Running: true, ExitCode: 0 };
        return { status: 204 };
      case 'stop':
        if (c.State.Status !== 'running') return { status: 304 };
        c.State = { Status: 'exited', Running: false, ExitCode: 143 };
        return { status: 204 };
      default: {
        const frame = (stream: number, text: string) => {
          const payload = Buffer.from(text);
          const header = Buffer.alloc(8);
          header[0] = stream;
          header.writeUInt32BE(payload.length, 4);
          return Buffer.concat([header, payload]);
        };
        return { status: 200, raw: Buffer.concat([frame(1, 'out line\n'), frame(2, 'err line\n')]) };
      }
    }
  }
}

const engine = new FakeEngine();
const docker = new DockerRuntime(engine.socketPath);
beforeAll(() => engine.start());
afterAll(() => new Promise<void>((resolve) => engine.server.close(() => resolve())));
beforeEach(() => {
  engine.containers.clear();
  engine.calls = [];
  engine.inspectFails = false;
});

const launch = (runId = 'b-dock/r1/a1'): AgentLaunch => {
  const root = mkdtempSync(join(tmpdir(), 'gt-dock-'));
  return {
    runId,
    beadId: runId.split('/')[0]!,
    role: 'polecat',
    command: 'agent --go',
    cwd: join(root, 'worktree'),
    runDir: join(root, 'run'),
    env: { PATH: '/opt/gt/bin:/usr/bin', GT_RUN_ID: runId },
    hostEnv: { SECRET_OF_THE_HOST: 'never' },
    allowNetwork: false,
    mounts: [{ path: '/srv/mirror.git', writable: true }, { path: '/srv/mirror.git/config', writable: false }],
    image: 'agents:latest',
  };
};
const creates = () => engine.calls.filter((c) => c === 'POST /containers/create').length;

describe('docker runtime (fake Engine API)', () => {
  it('reports whether an engine answers', async () => {
    expect(await docker.available()).toEqual({ ok: true });
    const none = await new DockerRuntime(join(tmpdir(), 'no-such-docker.sock')).available();
    expect(none.ok).toBe(false);
  });

  it('creates one container named after the run, labelled with bead and run, offline, with only the run’s mounts and env', async () => {
    const l = launch();
    const first = await docker.startOrAdopt(l);
    expect(first.adopted).toBe(false);
    const c = engine.find(containerName(l.runId))!;
    expect(c.Name).toBe('/gt-b-dock-r1-a1');
    expect(c.Config.Labels).toEqual({ [LABELS.run]: 'b-dock/r1/a1', [LABELS.bead]: 'b-dock', [LABELS.role]: 'polecat' });
    expect(c.Config.Image).toBe('agents:latest');
    expect(c.HostConfig.NetworkMode).toBe('none');
    expect(c.HostConfig.Binds).toEqual(['/srv/mirror.git:/srv/mirror.git:rw', '/srv/mirror.git/config:/srv/mirror.git/config:ro', `${l.runDir}:${l.runDir}:rw`, `${l.cwd}:${l.cwd}:rw`]);
    expect(c.Config.Env).toContain('PATH=/opt/gt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    expect(c.Config.Env.join('\n')).not.toContain('SECRET_OF_THE_HOST');
    expect(c.State.Status).toBe('running');

    const again = await docker.startOrAdopt(l);
    expect(again).toEqual({ handle: first.handle, adopted: true });
    expect(creates()).toBe(1);
  });

  it('adopts and starts a container an earlier attempt created but never started', async () => {
    const l = launch();
    const earlier = engine.add(containerName(l.runId), { [LABELS.run]: l.runId, [LABELS.bead]: l.beadId }, 'created');
    const r = await docker.startOrAdopt(l);
    expect(r).toEqual({ handle: { runtime: 'docker', runId: l.runId, ref: earlier.Id }, adopted: true });
    expect(earlier.State.Status).toBe('running');
    expect(creates()).toBe(0);
  });

  it('adopts the container a concurrent launcher created first (409 on create), after checking its labels', async () => {
    const l = launch();
    const other = new FakeEngine().add(containerName(l.runId), { [LABELS.run]: l.runId, [LABELS.bead]: l.beadId }, 'running');
    engine.raceOnCreate = other;
    const r = await docker.startOrAdopt(l);
    expect(r).toEqual({ handle: { runtime: 'docker', runId: l.runId, ref: other.Id }, adopted: true });
    expect([...engine.containers.values()]).toHaveLength(1);
  });

  it('refuses to adopt a container of that name that belongs to something else', async () => {
    const l = launch();
    const foreign = engine.add(containerName(l.runId), { [LABELS.run]: 'other/r1/a1', [LABELS.bead]: 'other' }, 'created');
    await expect(docker.startOrAdopt(l)).rejects.toThrow(/belongs to other\/r1\/a1 .* not run b-dock\/r1\/a1/);
    expect(foreign.State.Status).toBe('created');
    expect(creates()).toBe(0);
  });

  it('maps states to running / exited(code), and never reads a failing or missing inspect as an exit', async () => {
    const l = launch();
    const { handle } = await docker.startOrAdopt(l);
    expect(await docker.status(handle, l.runDir)).toEqual({ state: 'running' });
    engine.inspectFails = true;
    expect(await docker.status(handle, l.runDir)).toMatchObject({ state: 'unknown', detail: expect.stringMatching(/engine hiccup/) as string });
    engine.inspectFails = false;
    expect(await docker.status({ ...handle, ref: 'gone' }, l.runDir)).toMatchObject({ state: 'unknown', detail: 'container gone not found' });
    engine.find(handle.ref)!.State = { Status: 'exited', Running: false, ExitCode: 3 };
    expect(await docker.status(handle, l.runDir)).toEqual({ state: 'exited', exitCode: 3 });
  });

  it('stops idempotently and returns demultiplexed logs', async () => {
    const l = launch();
    const { handle } = await docker.startOrAdopt(l);
    await docker.stop(handle, 2_000);
    await docker.stop(handle, 2_000);
    await docker.stop({ ...handle, ref: 'gone' }, 2_000);
    expect(await docker.status(handle, l.runDir)).toEqual({ state: 'exited', exitCode: 143 });
    expect(await docker.logs(handle, l.runDir)).toBe('out line\nerr line\n');
  });
});
