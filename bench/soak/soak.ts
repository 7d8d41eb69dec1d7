/**
 * The chaos soak: a convoy of scripted beads (some crash, stall, conflict or leave broken trees; the gate is flaky)
 * runs on a town of real `gt worker` hosts (separate GT_HOMEs, one town queue) against a Temporal server on a file,
 * while a chaos driver kills hosts (worker and agents, kill -9), kills and restarts the server, pauses a host
 * (SIGSTOP) past its heartbeat timeout, replays stale `gt done`s with old runs' tokens and slows the gate. When the
 * convoy has ended (or the deadline passed) the evidence is collected and checked (invariants.ts).
 *
 * What the soak may do that an agent could not: it reads the agents' run tokens (the scripted agents copy them
 * out on purpose, standing for an agent that leaks its token), so replays exercise the gateway's run fencing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode } from '@temporalio/worker';
import { ConvoyClient } from '../../client/convoys';
import { Town } from '../../client/town';
import { convoyBeadId, type ConvoySpecInput, type ConvoyState } from '../../domain/convoy';
import { beadWorkflowId } from '../../domain/ids';
import { beadStateQuery } from '../../domain/messages';
import { SA } from '../../domain/search-attributes';
import { startDevServer, type DevServer } from '../../provisioning/dev-server';
import { workflowsPath } from '../../worker/worker';
import {
  checkInvariants,
  figures,
  parseGateLog,
  parseMarks,
  violations,
  type BeadFinal,
  type Figures,
  type Invariants,
  type SoakEvidence,
  type StaleReplay,
} from './invariants';
import { startHost, type Host } from './hosts';

const run = promisify(execFile);
const here = fileURLToPath(new URL('.', import.meta.url));
const gtBin = fileURLToPath(new URL('../../bin/gt', import.meta.url));

export const FAULT_KINDS = ['kill-host', 'kill-server', 'pause-host', 'stale-done', 'slow-gates'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface SoakOptions {
  beads: number;
  /** Chains the convoy's beads form (bead i depends on bead i − width). */
  width: number;
  hosts: number;
  maxPolecats: number;
  faults: readonly FaultKind[];
  /** Seconds between faults: a uniform pick in [min, max]. */
  faultEvery: [number, number];
  /** `random`: each fault a seeded pick from `faults`; `cycle`: `faults` in order, once each (the smoke test). */
  faultOrder: 'random' | 'cycle';
  flakyPercent: number;
  seed: number;
  deadlineMs: number;
  /** A workflow bundle already built (the test suite's); otherwise the soak bundles once for every host. */
  workflowBundle?: string;
  log: (line: string) => void;
}

export interface FaultRecord {
  at: number;
  kind: FaultKind;
  detail: string;
}

export interface SoakResult {
  options: Omit<SoakOptions, 'log'>;
  startedAt: string;
  durationMs: number;
  convoyStatus: string;
  faults: FaultRecord[];
  notMerged: { beadId: string; status: string; reason?: string }[];
  staleReplays: StaleReplay[];
  invariants: Invariants;
  violations: number;
  figures: Figures;
  kinds: Record<string, number>;
  scratch: string;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same beads and the same fault schedule. */
export function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bead kinds by share: most beads are plain, the rest exercise a failure class each. */
const KIND_SHARES: [string, number][] = [
  ['crash', 0.08],
  ['stall', 0.04],
  ['conflict', 0.08],
  ['broken', 0.05],
];

export function soakConvoy(id: string, rig: string, n: number, width: number, random: () => number): ConvoySpecInput {
  const kindOf = () => {
    let r = random();
    for (const [kind, share] of KIND_SHARES) if ((r -= share) < 0) return kind;
    return 'good';
  };
  const ids = Array.from({ length: n }, (_, i) => `s-${kindOf()}-${i}`);
  return {
    id,
    title: `soak: ${n} beads, width ${width}`,
    rig,
    mergeMode: 'review-and-merge',
    beads: ids.map((beadId, i) => ({
      id: beadId,
      title: `soak bead ${i}`,
      dependsOn: i >= width ? [ids[i - width]!] : [],
    })),
  };
}

const git = async (cwd: string, args: string[]) => (await run('git', args, { cwd, maxBuffer: 64 << 20 })).stdout;

async function createOrigin(root: string): Promise<string> {
  const origin = join(root, 'origin.git');
  await run('git', ['init', '-q', '--bare', '-b', 'main', origin]);
  // Every value the target ever held stays in the reflog: the checker reads each tree from there.
  await git(origin, ['config', 'core.logAllRefUpdates', 'always']);
  const work = join(root, 'seed');
  await run('git', ['clone', '-q', origin, work]);
  writeFileSync(join(work, 'README.md'), '# soak\n');
  await git(work, ['add', '-A']);
  await git(work, ['-c', 'user.name=Soak', '-c', 'user.email=soak@test', 'commit', '-q', '-m', 'initial commit']);
  await git(work, ['push', '-q', 'origin', 'HEAD:main']);
  return origin;
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const { log } = options;
  const random = prng(options.seed);
  const scratch = mkdtempSync(join(tmpdir(), 'gt-soak-'));
  const soakDir = join(scratch, 'evidence');
  mkdirSync(join(soakDir, 'marks'), { recursive: true });
  const started = Date.now();
  const faults: FaultRecord[] = [];
  const fault = (kind: FaultKind, detail: string) => {
    faults.push({ at: Date.now() - started, kind, detail });
    log(`fault ${kind}: ${detail}`);
  };

  log(`scratch ${scratch}; starting the Temporal server (file-backed, restartable)…`);
  const dbFilename = join(scratch, 'temporal.db');
  let server: DevServer = await startDevServer({ dbFilename, namespace: 'default' });
  const port = Number(server.address.split(':').pop());
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection, namespace: 'default' });

  let bundle = options.workflowBundle;
  if (!bundle) {
    log('bundling workflows once for every host…');
    bundle = join(scratch, 'workflow-bundle.js');
    writeFileSync(bundle, (await bundleWorkflowCode({ workflowsPath, logger: quietLogger })).code);
  }

  const townEnv = {
    TEMPORAL_ADDRESS: server.address,
    TEMPORAL_NAMESPACE: 'default',
    GT_TASK_QUEUE: 'soak',
    GT_GATEWAY_SECRET: randomBytes(32).toString('hex'),
    GT_WORKFLOW_BUNDLE: bundle,
  };
  const hosts: Host[] = [];
  for (let i = 0; i < options.hosts; i++)
    hosts.push(await startHost({ name: `host${i + 1}`, scratch, gtBin, env: townEnv, log }));

  const town = new Town(client, 'soak');
  const convoys = new ConvoyClient(town);
  const origin = await createOrigin(scratch);
  await town.addRig({
    name: 'soak',
    repo: origin,
    agent: join(here, 'agent.sh'),
    gates: [join(here, 'gate.sh')],
    maxPolecats: options.maxPolecats,
    env: { SOAK_DIR: soakDir, SOAK_FLAKY_PERCENT: String(options.flakyPercent) },
    policy: {
      startTimeout: 30_000,
      heartbeatTimeout: 5_000,
      stallTimeout: 20_000,
      retryBackoff: 500,
      maxAttempts: 5,
      maxRounds: 6,
    },
  });
  const spec = soakConvoy('soak', 'soak', options.beads, options.width, random);
  const kinds: Record<string, number> = {};
  for (const b of spec.beads) {
    const kind = b.id.split('-')[1]!;
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  log(
    `convoy of ${options.beads} beads (${JSON.stringify(kinds)}), ${options.hosts} hosts, faults every ${options.faultEvery.join('–')} s: ${options.faults.join(', ')}`,
  );
  await convoys.start(spec, { id: 'soak' });

  const staleReplays: StaleReplay[] = [];
  let convoyStatus = 'unknown';
  let done = false;
  const chaos = (async () => {
    for (let i = 0; !done; i++) {
      const [lo, hi] = options.faultEvery;
      await sleep((lo + random() * (hi - lo)) * 1000);
      if (done || !options.faults.length) break;
      if (options.faultOrder === 'cycle' && i >= options.faults.length) break;
      const kind =
        options.faultOrder === 'cycle'
          ? options.faults[i]!
          : options.faults[Math.floor(random() * options.faults.length)]!;
      try {
        await inject(kind);
      } catch (err) {
        log(`fault ${kind} could not be injected: ${(err as Error).message}`);
      }
    }
  })();

  async function inject(kind: FaultKind) {
    const host = hosts[Math.floor(random() * hosts.length)]!;
    switch (kind) {
      case 'kill-host': {
        const agents = host.killAll(soakDir);
        fault(kind, `${host.name}: worker and ${agents} agent process groups killed (-9); back in 3–8 s`);
        await sleep(3000 + random() * 5000);
        await host.start();
        return;
      }
      case 'kill-server': {
        const pid = server.pid;
        if (!pid) throw new Error('the server pid is unknown (SDK-downloaded CLI)');
        process.kill(pid, 'SIGKILL');
        fault(kind, `Temporal server (pid ${pid}) killed (-9); restarting on the same file and port`);
        await sleep(1000 + random() * 3000);
        server = await startDevServer({ dbFilename, namespace: 'default', port });
        return;
      }
      case 'pause-host': {
        const ms = 5_000 + 3_000;
        host.pause();
        fault(kind, `${host.name}: worker stopped (SIGSTOP) for ${ms} ms, past its 5 s heartbeat timeout`);
        await sleep(ms);
        host.resume();
        return;
      }
      case 'stale-done': {
        const replays = await replayStaleDones(soakDir, 3, random);
        staleReplays.push(...replays);
        fault(
          kind,
          replays.length
            ? replays.map((r) => `${r.message} of ${r.runId}: ${r.accepted ? 'ACCEPTED' : 'refused'}`).join('; ')
            : 'no finished run to replay yet',
        );
        return;
      }
      case 'slow-gates': {
        writeFileSync(join(soakDir, 'slow-gates'), '');
        fault(kind, 'every gate run takes 2 s more for 20 s');
        await sleep(20_000);
        rmSync(join(soakDir, 'slow-gates'), { force: true });
        return;
      }
    }
  }

  // The convoy's end, read through restarts: a failed read while the server is down is retried.
  const deadline = started + options.deadlineMs;
  let lastLine = '';
  while (Date.now() < deadline) {
    try {
      const state = await convoys.state('soak');
      convoyStatus = state.status;
      const counts: Record<string, number> = {};
      for (const b of state.beads) counts[b.status] = (counts[b.status] ?? 0) + 1;
      const line = `convoy ${state.status}: ${JSON.stringify(counts)}`;
      if (line !== lastLine) log((lastLine = line));
      if (['landed', 'failed', 'cancelled', 'closed'].includes(state.status)) break;
    } catch {
      // The server is being restarted.
    }
    await sleep(2000);
  }
  done = true;
  await chaos;
  for (const h of hosts) h.resume();
  log(`convoy ${convoyStatus} after ${Math.round((Date.now() - started) / 1000)} s; collecting evidence…`);
  // Agents stopped with their runs write their last marks on the way out.
  await sleep(2000);

  const evidence = await collect(
    client,
    origin,
    soakDir,
    spec.beads.map((b) => convoyBeadId('soak', b.id)),
    staleReplays,
    () => convoys.state('soak'),
  );
  const invariants = checkInvariants(evidence);
  const result: SoakResult = {
    options: { ...options, log: undefined } as unknown as SoakResult['options'],
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    convoyStatus,
    faults,
    notMerged: evidence.beads
      .filter((b) => b.status !== 'closed')
      .map((b) => ({ beadId: b.beadId, status: b.status, reason: b.reason })),
    staleReplays,
    invariants,
    violations: violations(invariants),
    figures: figures(evidence),
    kinds,
    scratch,
  };
  delete (result.options as { log?: unknown }).log;

  for (const h of hosts) await h.stop();
  await connection.close();
  await server.stop();
  return result;
}

async function replayStaleDones(soakDir: string, count: number, random: () => number): Promise<StaleReplay[]> {
  const dir = join(soakDir, 'tokens');
  if (!existsSync(dir)) return [];
  const files = readdirSync(dir).filter((f) => !f.endsWith('.tmp'));
  const picked = Array.from(
    { length: Math.min(count, files.length) },
    () => files[Math.floor(random() * files.length)]!,
  );
  const replays: StaleReplay[] = [];
  for (const file of new Set(picked)) {
    const [runId, url, token] = readFileSync(join(dir, file), 'utf8').split('\n');
    if (!runId || !url || !token) continue;
    // Only runs that are over (their marks say they ended).
    const marks = join(soakDir, 'marks', file);
    const text = existsSync(marks) ? readFileSync(marks, 'utf8') : '';
    if (!/^end /m.test(text)) continue;
    const gt = (args: string[]) =>
      run(gtBin, args, {
        env: { ...process.env, GT_RUN_ID: runId, GT_GATEWAY_URL: url, GT_RUN_TOKEN: token, GT_RUN_TOKEN_FILE: '' },
        timeout: 30_000,
      }).then(
        (r) => ({ ok: true, answer: r.stdout.trim() }),
        (err: { stderr?: string; message: string }) => ({ ok: false, answer: (err.stderr ?? err.message).trim() }),
      );
    // A checkpoint from a run that is over must be refused: nothing deduplicates it.
    const checkpoint = await gt(['checkpoint', 'stale replay']);
    replays.push({ runId, message: 'checkpoint', accepted: checkpoint.ok, answer: checkpoint.answer });
    // A gt done the run really sent comes back with its first answer (same update id: nothing changes);
    // one it never sent must be refused.
    const done = await gt(['done', '--summary', 'stale replay']);
    replays.push({ runId, message: 'done', accepted: done.ok && !/^done /m.test(text), answer: done.answer });
  }
  return replays;
}

async function collect(
  client: Client,
  origin: string,
  soakDir: string,
  beadIds: string[],
  staleReplays: StaleReplay[],
  convoyState: () => Promise<ConvoyState>,
): Promise<SoakEvidence> {
  const root = (await git(origin, ['rev-list', '--max-parents=0', 'main'])).trim();
  const merges = (
    await git(origin, [
      'log',
      '--first-parent',
      '--format=%H %T %(trailers:key=Gt-Merge-Request,valueonly,separator=%x20)',
      `${root}..main`,
    ])
  )
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [sha, tree, mr] = l.split(' ');
      return { sha: sha!, tree: tree!, mergeRequest: mr || undefined };
    });
  const rootTree = (await git(origin, ['rev-parse', `${root}^{tree}`])).trim();
  const treesHeld = (await git(origin, ['log', '-g', '--format=%T', 'refs/heads/main']))
    .split('\n')
    .filter((t) => t && t !== rootTree);
  const gateLog = join(soakDir, 'gates.log');
  const gates = existsSync(gateLog) ? parseGateLog(readFileSync(gateLog, 'utf8')) : [];
  const marksDir = join(soakDir, 'marks');
  const runs = readdirSync(marksDir).flatMap((f) => {
    const span = parseMarks(f.replace(/_/g, '/'), readFileSync(join(marksDir, f), 'utf8'));
    return span ? [span] : [];
  });

  const inConvoy = new Map((await convoyState()).beads.map((b) => [b.beadId, b.status as string]));
  const beads: BeadFinal[] = [];
  for (const beadId of beadIds) {
    const kind = beadId.split('-')[2] ?? 'good';
    try {
      const state = await client.workflow.getHandle(beadWorkflowId(beadId)).query(beadStateQuery);
      beads.push({
        beadId,
        kind,
        status: state.status,
        outcomes: state.rounds.map((r) => r.outcome?.kind ?? 'none'),
        reason: state.failureReason,
        inConvoy: inConvoy.get(beadId) ?? 'unknown',
      });
    } catch {
      beads.push({ beadId, kind, status: 'missing', outcomes: [], inConvoy: inConvoy.get(beadId) ?? 'unknown' });
    }
  }
  const openWorkflows: SoakEvidence['openWorkflows'] = [];
  for await (const wf of client.workflow.list({
    query: `${SA.rig.name} = 'soak' AND ExecutionStatus = 'Running' AND ${SA.kind.name} IN ('bead', 'merge-request', 'convoy')`,
  })) {
    const d = await client.workflow.getHandle(wf.workflowId).describe();
    openWorkflows.push({ workflowId: wf.workflowId, pendingActivities: d.raw.pendingActivities?.length ?? 0 });
  }
  return { merges, treesHeld, gates, runs, beads, staleReplays, openWorkflows };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, log: noop };
