/**
 * Issue 16 items 1 and 2, for real: the production topology (provisioning/prod-stack.ts: Debian PostgreSQL, the
 * schemas made by temporal-sql-tool, the full Temporal server v1.29 with SQL visibility, the Web UI server, two
 * `gt worker` hosts with their gateways), configured from docker-compose.yml. `gt` talks to it through the standard
 * Temporal variables; a convoy merges; visibility finds the beads by the town's search attributes (through the
 * frontend and through the Web UI server's API); kill -9 of the host that owns a live agent (and of its agents)
 * re-dispatches the bead on the other host with one merge; kill -9 of the Temporal server mid-convoy, and kill -9
 * of PostgreSQL (postmaster and backends) mid-convoy, each followed by a restart, lose and double nothing.
 *
 * The server is built with Go the first time (`npm run provision` does it before the suite); without Go or
 * PostgreSQL on the machine the file skips and says why.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { measureHandoffs, prodServerPids } from '../bench/handoff';
import { ConvoyClient } from '../client/convoys';
import { Town } from '../client/town';
import type { BeadState } from '../domain/bead';
import type { ConvoyResult } from '../domain/convoy';
import { COMPOSE_DYNAMIC_CONFIG } from '../provisioning/server-settings';
import { HOST_OVERRIDES, interpolate, readComposeSettings } from '../provisioning/compose-settings';
import { resolvePostgres } from '../provisioning/postgres';
import { baseEnv, startProdStack, type ProdStack } from '../provisioning/prod-stack';
import { findGo, resolveTemporalServer, TEMPORAL_SERVER_VERSION } from '../provisioning/temporal-server';
import { writeSpec } from './helpers/convoy';
import { processExists } from './helpers/pids';
import { createRepo, type TestRepo } from './helpers/repo';
import { agentScript, eventually, FAST_POLICY, repoRoot, runGt } from './helpers/town';

const run = promisify(execFile);

const installed = await resolveTemporalServer({ build: false });
const postgres = resolvePostgres();
const skipReason = !postgres.available
  ? postgres.reason
  : !installed.available && !findGo()
    ? `no Temporal server ${TEMPORAL_SERVER_VERSION} and no Go to build it`
    : undefined;
if (skipReason) console.warn(`test/prod-stack.test.ts skipped: ${skipReason}`);

let stack: ProdStack;
let stateDir: string;
let connection: Connection;
let client: Client;
let town: Town;
const unexpectedExits: string[] = [];
const started = Date.now();

beforeAll(async () => {
  if (skipReason) return;
  stateDir = mkdtempSync(join(tmpdir(), 'gt-prod-'));
  stack = await startProdStack({
    stateDir,
    hosts: 2,
    workerEnv: { GT_WORKFLOW_BUNDLE: inject('workflowBundlePath') },
    onProgress: (m) => console.error(`[prod-stack] ${m}`),
    onExit: (_component, reason) => unexpectedExits.push(reason),
  });
  console.error(`[prod-stack] up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  connection = await Connection.connect({ address: stack.address });
  client = new Client({ connection, namespace: stack.namespace });
  town = new Town(client, stack.taskQueue);
}, 900_000);

afterAll(async () => {
  await connection?.close();
  await stack?.stop();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  console.error(`[prod-stack] file took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}, 180_000);

/** `gt` as a user runs it against the stack: only the standard Temporal variables (and the town's queue). */
const gtEnv = () => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TEMPORAL_|GT_)/.test(k)));
  return { ...env, ...stack.clientEnv, GT_HOME: mkdtempSync(join(tmpdir(), 'gt-prod-client-')) };
};

const mergesOf = async (repo: TestRepo, beadId: string) =>
  (await repo.log()).filter((c) => new RegExp(`Gt-Merge-Request: mr:${beadId}[:@]`).test(c.body));

const startsIn = (dir: string) =>
  existsSync(join(dir, 'starts'))
    ? readFileSync(join(dir, 'starts'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string])
    : [];

describe("the harness's reading of docker-compose.yml", () => {
  it("interpolates as compose does: defaults, required values, and $$ left for the container's shell", () => {
    const env = { SET: 'x', EMPTY: '' };
    expect(interpolate('${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET}', env)).toBe('x d d  x');
    expect(interpolate('for db in $$a; do', env)).toBe('for db in $$a; do');
    expect(() => interpolate('${UNSET:?set it}', env)).toThrow('docker-compose.yml needs UNSET: set it');
  });

  it("takes the server's environment, dynamic config, scripts and search attributes from compose", () => {
    const compose = readComposeSettings({ POSTGRES_PASSWORD: 'from-shell' });
    expect(compose.serverEnv).toMatchObject({ DB: 'postgres12', POSTGRES_PWD: 'from-shell' });
    expect(compose.schema.env.SQL_PASSWORD).toBe('from-shell');
    expect(compose.dynamicConfigFile).toBe(join(repoRoot, COMPOSE_DYNAMIC_CONFIG));
    // The schema script takes where PostgreSQL and the schema files are from its environment, which the harness sets.
    for (const key of HOST_OVERRIDES.schema) expect(compose.schema.script).toContain(`$${key}`);
    expect(compose.namespace.script).toContain('temporal operator search-attribute create');
    expect(compose.workerEnv).not.toHaveProperty('GT_GATEWAY_SECRET');
  });
});

describe.skipIf(!!skipReason)('the production topology (PostgreSQL, full Temporal server, two worker hosts)', () => {
  it("runs the server from compose's settings: PostgreSQL persistence and SQL visibility, compose's dynamic config", async () => {
    const compose = readComposeSettings();
    expect(`v${compose.serverImageVersion}`).toBe(TEMPORAL_SERVER_VERSION);
    // What the server itself rendered from compose's environment through the release's config template.
    const config = parse(readFileSync(join(stateDir, 'temporal-config.yaml'), 'utf8')) as {
      persistence: {
        defaultStore: string;
        visibilityStore: string;
        datastores: Record<string, { sql?: { pluginName: string; connectAddr: string; databaseName: string } }>;
      };
      dynamicConfigClient: { filepath: string };
      services: Record<string, { rpc: { bindOnIP: string } }>;
    };
    const { datastores, defaultStore, visibilityStore } = config.persistence;
    const pgPort = (JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8')) as { postgres: number }).postgres;
    expect(datastores[defaultStore]!.sql).toMatchObject({
      pluginName: compose.serverEnv.DB,
      connectAddr: `127.0.0.1:${pgPort}`,
      databaseName: 'temporal',
    });
    expect(datastores[visibilityStore]!.sql).toMatchObject({
      pluginName: compose.serverEnv.DB,
      connectAddr: `127.0.0.1:${pgPort}`,
      databaseName: 'temporal_visibility',
    });
    expect(config.dynamicConfigClient.filepath).toBe(join(repoRoot, COMPOSE_DYNAMIC_CONFIG));
    for (const [name, svc] of Object.entries(config.services)) expect(svc.rpc.bindOnIP, name).toBe('127.0.0.1');
    // Compose's keys reach the server as compose sets them, but for where things are (HOST_OVERRIDES); the harness
    // adds nothing else but what a process needs to run.
    const overridden = new Set<string>(HOST_OVERRIDES.server);
    for (const [key, value] of Object.entries(compose.serverEnv))
      if (!overridden.has(key)) expect(stack.serverEnv[key], key).toBe(value);
    const added = Object.keys(stack.serverEnv).filter((k) => !(k in compose.serverEnv) && !overridden.has(k));
    expect(
      added.every((k) => k in baseEnv()),
      `added ${added.join(', ')}`,
    ).toBe(true);
    // The release's own validator accepts compose's dynamic config (every key known, every value of its type).
    const server = await resolveTemporalServer({ build: false });
    if (!server.available) throw new Error(server.reason);
    const validated = await run(server.server, ['validate-dynamic-config', join(repoRoot, COMPOSE_DYNAMIC_CONFIG)]);
    // It prints the file, then a warning per unregistered key or mistyped value (and exits 0 either way).
    expect(validated.stdout + validated.stderr).toContain(COMPOSE_DYNAMIC_CONFIG);
    expect(validated.stdout + validated.stderr).not.toMatch(/warning|error/i);
  });

  it("gives the bench's hand-off baseline a step's CPU in the server and PostgreSQL (bench/handoff.ts --stack prod)", async () => {
    const pids = prodServerPids(stack);
    expect(pids.slice(0, 2)).toEqual([stack.server.pid(), stack.postgres.pid()]);
    expect(pids.length, "PostgreSQL's backends, children of its postmaster, count too").toBeGreaterThan(2);
    const nativeConnection = await NativeConnection.connect({ address: stack.address });
    try {
      const target = { nativeConnection, client, namespace: stack.namespace, serverPids: () => prodServerPids(stack) };
      const [figures] = await measureHandoffs(target, 'ours', 3, 1);
      expect(figures!.cost!.serverMs).toBeGreaterThan(0.5);
      expect(figures!.cost!.workerMs).toBeGreaterThan(0.5);
    } finally {
      await nativeConnection.close();
    }
  });

  it('merges a convoy driven by `gt` through the standard Temporal variables, found by search attribute', async () => {
    const repo = await createRepo();
    const env = gtEnv();
    const added = await runGt(
      ['rig', 'add', 'prod-rig', '--repo', repo.origin, '--agent', agentScript('convoy-instant')],
      env,
    );
    expect(added.code, added.stderr).toBe(0);
    const spec = writeSpec({
      id: 'prod-convoy',
      title: 'Production topology',
      rig: 'prod-rig',
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
        { id: 'c', title: 'C' },
      ],
    });
    const convoy = await runGt(['convoy', 'start', spec, '--wait'], env, 300_000);
    expect(convoy.code, convoy.stdout + convoy.stderr).toBe(0);
    const beads = ['prod-convoy-a', 'prod-convoy-b', 'prod-convoy-c'];
    for (const b of beads) expect(await mergesOf(repo, b), b).toHaveLength(1);

    // Visibility (SQL, in PostgreSQL) by the town's search attributes: ListWorkflowExecutions on Gt* attributes.
    const query = `GtConvoyId = 'prod-convoy' AND GtKind = 'bead'`;
    const listed = await eventually(
      async () => {
        const ids: string[] = [];
        for await (const wf of client.workflow.list({ query })) ids.push(wf.workflowId);
        return ids.length === 3 ? ids.sort() : undefined;
      },
      60_000,
      'the three beads in visibility',
    );
    expect(listed).toEqual(beads.map((b) => `bead:${b}`));
    const closed = await eventually(
      async () => {
        const ids: string[] = [];
        for await (const wf of client.workflow.list({ query: `${query} AND GtStatus = 'closed'` }))
          ids.push(wf.workflowId);
        return ids.length === 3;
      },
      60_000,
      'the three beads closed in visibility',
    );
    expect(closed).toBe(true);
    const list = await runGt(['bead', 'list', '--convoy', 'prod-convoy', '--json'], env);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { beads: { beadId: string }[] }).beads.map((b) => b.beadId).sort()).toEqual(
      beads,
    );

    // The Web UI server lists the same beads by the same query (its HTTP API is what the UI's pages call).
    if (stack.uiUrl) {
      const res = await fetch(
        `${stack.uiUrl}/api/v1/namespaces/${stack.namespace}/workflows?query=${encodeURIComponent(query)}`,
      );
      expect(res.status).toBe(200);
      const body = (await res.json()) as { executions: { execution: { workflowId: string } }[] };
      expect(body.executions.map((e) => e.execution.workflowId).sort()).toEqual(listed);
    } else {
      console.warn('no Web UI server was built: the UI listing was not checked');
    }
    const hosts = await Promise.all(beads.map(async (b) => (await town.beadState(b)).runs.map((r) => r.host)));
    console.error(`[prod-stack] convoy beads ran on: ${JSON.stringify(hosts)}`);
    expect(hosts.flat().every((h) => stack.hosts.some((x) => x.hostId === h))).toBe(true);
  });

  it('re-dispatches a bead on the other host when the host running its agent is killed (-9, with its agents): one merge', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gt-prod-kill-'));
    const repo = await createRepo();
    await town.addRig({
      name: 'prod-kill',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: dir },
      // A dead host's supervision heartbeat times out after 3 s; its queue then finds no poller within 10 s.
      policy: { ...FAST_POLICY, heartbeatTimeout: 3_000, startTimeout: 10_000 },
    });
    const { handle } = await town.sling('prod-kill', { id: 'pk-1', title: 'Survive the loss of a host' });
    await eventually(() => startsIn(dir).length === 1, 120_000, 'agent started');
    const running = await eventually(
      async () => {
        const s = await town.beadState('pk-1');
        return /waiting for gt done/.test(s.waitingFor) ? s : undefined;
      },
      60_000,
      'run supervised',
    );
    const owner = running.runs[0]!.host!;
    const victim = stack.hosts.find((h) => h.hostId === owner)!;
    const survivor = stack.hosts.find((h) => h.hostId !== owner)!;
    expect(victim, `the run's host ${owner} is one of the stack's`).toBeDefined();
    const [[firstRun, agentPid]] = startsIn(dir) as [[string, string]];

    const killed = await victim.kill();
    expect(killed).toContain(Number(agentPid));
    expect(processExists(Number(agentPid))).toBe(false);
    writeFileSync(join(dir, 'release'), '');

    const result = await handle.result();
    expect(result.status).toBe('closed');
    const state: BeadState = await town.beadState('pk-1');
    const [lost, done] = [state.runs[0]!, state.runs.at(-1)!];
    expect(lost).toMatchObject({ runId: firstRun, host: owner });
    expect(lost.outcome).not.toBe('done');
    expect(done).toMatchObject({ outcome: 'done', host: survivor.hostId });
    expect(startsIn(dir).map(([r]) => r)).toEqual(state.runs.map((r) => r.runId));
    expect(await mergesOf(repo, 'pk-1')).toHaveLength(1);

    // The host comes back: its old run stays dead and the bead stays merged once; the host takes new work again.
    await victim.start();
    const next = await town.sling('prod-kill', { id: 'pk-2', title: 'After the host is back' });
    expect((await next.handle.result()).status).toBe('closed');
    expect((await town.beadState('pk-1')).runs).toEqual(state.runs);
    expect(startsIn(dir).filter(([r]) => r.startsWith('pk-1/'))).toHaveLength(state.runs.length);
    expect(await mergesOf(repo, 'pk-1')).toHaveLength(1);
    expect(await mergesOf(repo, 'pk-2')).toHaveLength(1);
  }, 300_000);

  /**
   * A convoy of four beads on a rig of its own: a and b merge, c and d start and hold; then `fault` strikes, c and d
   * are released, and the convoy must land with each bead merged once and run once.
   */
  async function convoyThrough(name: string, fault: () => Promise<void>) {
    const dir = mkdtempSync(join(tmpdir(), `gt-prod-${name}-`));
    const repo = await createRepo();
    await town.addRig({
      name: `prod-${name}`,
      repo: repo.origin,
      agent: agentScript('convoy-instant'),
      // Beads c and d hold until released, so they are in flight when the fault strikes.
      env: { TEST_DIR: dir, HOLD_BEADS: 'c d' },
      policy: FAST_POLICY,
    });
    const convoys = new ConvoyClient(town);
    await convoys.start({
      id: name,
      title: `${name} mid-convoy`,
      rig: `prod-${name}`,
      beads: [
        { id: 'a', title: 'A' },
        { id: 'b', title: 'B', dependsOn: ['a'] },
        { id: 'c', title: 'C' },
        { id: 'd', title: 'D', dependsOn: ['a'] },
      ],
    });
    const beads = ['a', 'b', 'c', 'd'].map((b) => `${name}-${b}`);
    await eventually(
      async () =>
        (await mergesOf(repo, `${name}-a`)).length === 1 &&
        (await mergesOf(repo, `${name}-b`)).length === 1 &&
        [`${name}-c`, `${name}-d`].every((b) => startsIn(dir).some(([r]) => r.startsWith(`${b}/`))),
      180_000,
      'a and b merged while c and d run',
    );

    await fault();
    writeFileSync(join(dir, 'release'), '');

    const result = (await client.workflow.getHandle(`convoy:${name}`).result()) as ConvoyResult;
    expect(result).toMatchObject({ status: 'landed', counts: { closed: 4, total: 4 } });
    for (const b of beads) expect(await mergesOf(repo, b), `${b} merged once`).toHaveLength(1);
    // One agent run per bead: the fault re-ran nothing that had started.
    const starts = startsIn(dir).map(([r]) => r.split('/')[0]);
    // The run ids (and pids) say which run started twice, should one ever: a retried start or a new run.
    expect(starts.sort(), JSON.stringify(startsIn(dir))).toEqual(beads);
    // Every component but the one killed on purpose stayed up through it.
    expect(unexpectedExits).toEqual([]);
  }

  it('lands a convoy whose Temporal server is killed (-9) and restarted mid-flight: nothing lost, nothing doubled', async () => {
    await convoyThrough('chaos', async () => {
      await stack.server.kill();
      expect(stack.server.running()).toBe(false);
      await stack.server.start();
    });
  }, 400_000);

  it('lands a convoy whose PostgreSQL is killed (-9, postmaster and backends) and restarted mid-flight: nothing lost, nothing doubled', async () => {
    await convoyThrough('pgchaos', async () => {
      const pid = stack.postgres.pid()!;
      const killed = await stack.postgres.kill();
      expect(killed).toContain(pid);
      expect(killed.length, 'the backends died with the postmaster').toBeGreaterThan(1);
      expect(processExists(pid)).toBe(false);
      // Down long enough for the server's and the workers' calls to fail, not only to wait.
      await new Promise((r) => setTimeout(r, 5_000));
      await stack.postgres.start();
      // The server was not restarted: it reconnected to the same database by itself.
      expect(stack.server.running()).toBe(true);
    });
  }, 400_000);
});
