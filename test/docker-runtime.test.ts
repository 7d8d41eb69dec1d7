/**
 * The docker runtime at the Docker Engine API boundary, for what a real engine cannot be made to do on demand: a
 * concurrent launcher creating the container between our look and our create (409), and an engine whose inspect
 * fails. Everything else runs against the real engine (test/docker-real.test.ts, test/runtime-contract.test.ts).
 */
import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { containerName, DockerRuntime, LABELS } from '../agents/docker-runtime';
import type { AgentLaunch } from '../agents/runtime';
import { ResourceLimits } from '../domain/rig';

interface FakeContainer {
  Id: string;
  Name: string;
  Config: { Labels: Record<string, string>; Image: string; Cmd: string[]; Env: string[] };
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
      State: { Status: status, Running: status === 'running', ExitCode: 0 },
    };
    this.containers.set(c.Id, c);
    return c;
  }

  async start() {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, body }) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(body === undefined ? '' : JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(this.socketPath, resolve));
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body?: unknown }> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'http://docker');
    const path = url.pathname.replace(/^\/v[\d.]+/, '');
    this.calls.push(`${req.method} ${path}`);
    if (path === '/_ping') return { status: 200, body: 'OK' };
    if (req.method === 'GET' && /^\/images\/[^/]+(\/[^/]+)?\/json$/.test(path))
      return { status: 200, body: { Id: 'sha256:img' } };
    if (req.method === 'POST' && path === '/containers/create') {
      const name = url.searchParams.get('name')!;
      if (this.raceOnCreate) {
        this.containers.set(this.raceOnCreate.Id, this.raceOnCreate);
        this.raceOnCreate = undefined;
      }
      if (this.find(name))
        return { status: 409, body: { message: `Conflict. The container name "/${name}" is already in use` } };
      const spec = JSON.parse(Buffer.concat(chunks).toString()) as {
        Image: string;
        Cmd: string[];
        Env: string[];
        Labels: Record<string, string>;
      };
      const c = this.add(name, spec.Labels, 'created');
      Object.assign(c.Config, { Image: spec.Image, Cmd: spec.Cmd, Env: spec.Env });
      return { status: 201, body: { Id: c.Id, Warnings: [] } };
    }
    const m = /^\/containers\/([^/]+)\/(json|start)$/.exec(path);
    const c = m ? this.find(decodeURIComponent(m[1]!)) : undefined;
    if (!m) return { status: 404, body: { message: 'page not found' } };
    if (m[2] === 'json' && this.inspectFails) return { status: 500, body: { message: 'engine hiccup' } };
    if (!c) return { status: 404, body: { message: `No such container: ${m[1]}` } };
    if (m[2] === 'json') return { status: 200, body: c };
    if (c.State.Status === 'running') return { status: 304 };
    c.State = { Status: 'running', Running: true, ExitCode: 0 };
    return { status: 204 };
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
    agentDir: join(root, 'agent'),
    env: { PATH: '/opt/gt/bin:/usr/bin', GT_RUN_ID: runId },
    allowNetwork: false,
    mounts: [],
    image: 'agents:latest',
    limits: ResourceLimits.parse({}),
  };
};
const creates = () => engine.calls.filter((c) => c === 'POST /containers/create').length;

describe('docker runtime (fake Engine API)', () => {
  it('adopts the container a concurrent launcher created first (409 on create), after checking its labels', async () => {
    const l = launch();
    const other = new FakeEngine().add(
      containerName(l.runId, l.runDir),
      { [LABELS.run]: l.runId, [LABELS.bead]: l.beadId, [LABELS.runDir]: l.runDir },
      'running',
    );
    engine.raceOnCreate = other;
    const r = await docker.startOrAdopt(l);
    expect(r).toEqual({ handle: { runtime: 'docker', runId: l.runId, ref: other.Id }, adopted: true });
    expect([...engine.containers.values()]).toHaveLength(1);
    expect(creates()).toBe(1);
  });

  it('never reads a failing or missing inspect as an exit', async () => {
    const l = launch();
    const { handle } = await docker.startOrAdopt(l);
    expect(await docker.status(handle, l.runDir)).toEqual({ state: 'running' });
    engine.inspectFails = true;
    expect(await docker.status(handle, l.runDir)).toMatchObject({
      state: 'unknown',
      detail: expect.stringMatching(/engine hiccup/) as string,
    });
    engine.inspectFails = false;
    expect(await docker.status({ ...handle, ref: 'gone' }, l.runDir)).toMatchObject({
      state: 'unknown',
      detail: 'container gone not found',
    });
  });
});
