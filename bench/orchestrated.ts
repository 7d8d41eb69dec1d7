/**
 * One orchestrated run: a fresh rig on a scratch repository, N instant beads as a convoy (or, with the `sling`
 * driver, slung one by one as their dependency merges), waited for through the public clients; then every
 * workflow of the rig read back, and each bead's timeline assembled from its histories and the agent's own clock.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beadWorkflowId, refineryWorkflowId } from '../domain/ids';
import { pauseRefineryUpdate, refineryStateQuery } from '../domain/messages';
import { SA } from '../domain/search-attributes';
import { cpuMark, cpuSpent, type CpuSpent } from './cpu';
import { agentScript } from './floor';
import { mergedWorkFiles } from './git';
import {
  beadEvents,
  fetchRigHistories,
  mergeSections,
  type MergeSection,
  type RunHistory,
  ticketsReceived,
} from './histories';
import { beadLocalId, convoySpec, dependencyOf, indexOfBead } from './scenario';
import type { BenchStack } from './stack';

export type Driver = 'convoy' | 'sling';

export interface OrchestratedOptions {
  stack: BenchStack;
  root: string;
  origin: string;
  /** Rig name and convoy id: unique per run. */
  label: string;
  n: number;
  width: number;
  gates: string[];
  driver: Driver;
  maxPolecats: number;
  batchSize?: number;
  /** The rig's `speculation` (speculative merge queue); 1 or unset: off. */
  speculation?: number;
  bad?: Set<number>;
  maxRounds?: number;
  /** Hold the refinery until every MR is queued, so the queue is measured on its own. */
  fillQueueFirst?: boolean;
  /** A run still going after this long is stopped (its workflows terminated) and reported as timed out. */
  deadlineMs: number;
}

/** Times (ms since the epoch) of one bead; agent-side times come from the agent's clock on this host. */
export interface BeadTimeline {
  beadId: string;
  index: number;
  status?: string;
  /** Why the bead did not close, from its result. */
  reason?: string;
  workflowStartedAt: number;
  supervisionStartedAt?: number;
  agentStartedAt?: number;
  committedAt?: number;
  doneReturnedAt?: number;
  doneAcceptedAt?: number;
  /** Its merge request's ticket reached the refinery. */
  ticketAt?: number;
  mergeStartedAt?: number;
  mergedAt?: number;
  closedAt?: number;
}

export interface OrchestratedRun {
  rig: string;
  driver: Driver;
  status: string;
  startedAt: number;
  endedAt: number;
  makespanMs: number;
  /** With fillQueueFirst: when the refinery was let go (every MR queued). */
  queueReleasedAt?: number;
  beads: BeadTimeline[];
  sections: MergeSection[];
  histories: RunHistory[];
  /** From the start to the end of the makespan (bench/cpu.ts); absent where /proc cannot be read. */
  cpu?: CpuSpent;
}

interface AgentTimes {
  runId: string;
  started: number;
  committed: number;
  doneReturned: number;
}

function readAgentTimes(dir: string): Map<string, AgentTimes> {
  const byBead = new Map<string, AgentTimes>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    let t: AgentTimes;
    try {
      t = JSON.parse(readFileSync(join(dir, file), 'utf8')) as AgentTimes;
    } catch {
      // A `date` without millisecond support (not GNU date) writes no usable times: the agent-side hops stay empty.
      continue;
    }
    const beadId = t.runId.replace(/\/r\d+\/a\d+$/, '');
    // The last run of a bead is the one whose work merged.
    if (!byBead.has(beadId) || byBead.get(beadId)!.started < t.started) byBead.set(beadId, t);
  }
  return byBead;
}

const sleep = (msec: number) => new Promise((r) => setTimeout(r, msec));
const QUEUE_SETTLE_MS = 15_000;

async function untilAnswered<T>(ask: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await ask();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

/** Stops everything of a rig that overran its deadline, so it cannot disturb the runs after it. */
async function terminateRig(stack: BenchStack, rig: string): Promise<void> {
  for await (const wf of stack.client.workflow.list({
    query: `${SA.rig.name} = '${rig}' AND ExecutionStatus = 'Running'`,
  })) {
    await stack.client.workflow
      .getHandle(wf.workflowId, wf.runId)
      .terminate('bench deadline exceeded')
      .catch(() => undefined);
  }
}

export async function runOrchestrated(o: OrchestratedOptions): Promise<OrchestratedRun> {
  const { stack, label: rig, n, width } = o;
  const bad = o.bad ?? new Set<number>();
  const timesDir = join(o.root, 'agent-times');
  mkdirSync(timesDir, { recursive: true });
  await stack.town.addRig({
    name: rig,
    repo: o.origin,
    agent: `'${agentScript}'`,
    gates: o.gates,
    maxPolecats: o.maxPolecats,
    batchSize: o.batchSize,
    speculation: o.speculation ?? 1,
    env: { BENCH_TIMES: timesDir },
    policy: o.maxRounds ? { maxRounds: o.maxRounds } : undefined,
  });
  const refinery = stack.client.workflow.getHandle(refineryWorkflowId(rig));
  if (o.fillQueueFirst) {
    // Pause only once the refinery has run its first task: an update arriving with that task is handled before the
    // refinery's code has fully set up (seen as "Cannot access 'setStatus' before initialization").
    await untilAnswered(() => refinery.query(refineryStateQuery));
    await refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: true }] });
  }

  let queueReleasedAt: number | undefined;
  let finished = false;
  /** Every MR queued — or no new one for a while (a bead that never reaches the queue must not hold the rest). */
  const releaseWhenFull = async () => {
    let seen = 0;
    let grewAt = Date.now();
    while (!finished) {
      // A loaded machine can time a query out: ask again rather than lose the run.
      const queued = (await untilAnswered(() => refinery.query(refineryStateQuery))).queue.length;
      if (queued > seen) [seen, grewAt] = [queued, Date.now()];
      if (queued >= n || (queued > 0 && Date.now() - grewAt > QUEUE_SETTLE_MS)) {
        queueReleasedAt = Date.now();
        await untilAnswered(() => refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] }));
        return;
      }
      await sleep(250);
    }
  };

  const beadIds = Array.from({ length: n }, (_, i) => `${rig}-${beadLocalId(i, bad.has(i))}`);
  const cpuAtStart = cpuMark(stack.server.pid);
  const startedAt = Date.now();
  // Awaited only after the run: a failure to release must be kept until then, not crash the bench as unhandled.
  const releasing = (o.fillQueueFirst ? releaseWhenFull() : Promise.resolve()).then(
    () => undefined,
    (err: unknown) => (err instanceof Error ? err : new Error(`releasing the refinery failed: ${JSON.stringify(err)}`)),
  );
  const drive = async (): Promise<string> => {
    if (o.driver === 'convoy') {
      const { convoyId } = await stack.convoys.start(convoySpec({ id: rig, rig, n, width, bad }));
      return (await stack.convoys.result(convoyId))?.status ?? 'cancelled';
    }
    // Without a convoy the bench plays its part: a bead is slung when the bead it depends on has closed.
    let failed = 0;
    const sling = async (i: number): Promise<void> => {
      const { handle } = await stack.town.sling(rig, { id: beadIds[i]!, title: `bench bead ${i}` });
      const result = await handle.result();
      if (result.status !== 'closed') failed++;
      else if (i + width < n) await sling(i + width);
    };
    await Promise.all(Array.from({ length: Math.min(width, n) }, (_, lane) => sling(lane)));
    return failed ? 'failed' : 'landed';
  };
  let deadline: NodeJS.Timeout | undefined;
  let status = await Promise.race([
    drive(),
    new Promise<string>((resolve) => (deadline = setTimeout(() => resolve('timed out'), o.deadlineMs))),
  ]);
  clearTimeout(deadline);
  const endedAt = Date.now();
  const cpu = cpuSpent(cpuAtStart, cpuMark(stack.server.pid));
  if (status === 'timed out') await terminateRig(stack, rig);
  // A convoy ends on the refinery's word that its last bead merged, a moment before that bead's workflow closes:
  // the histories below are read once every bead has closed (one never started has nothing to wait for), or after
  // a minute, when what is still open shows as unfinished.
  else {
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(
        beadIds.map((id) =>
          stack.client.workflow
            .getHandle(beadWorkflowId(id))
            .result()
            .catch(() => undefined),
        ),
      ),
      new Promise((resolve) => (giveUp = setTimeout(resolve, 60_000))),
    ]);
    clearTimeout(giveUp);
  }
  // The town's word is checked against the repository: a landed convoy has every good bead's work on main.
  const landed = await mergedWorkFiles(o.origin);
  if (status === 'landed' && landed !== n - bad.size)
    status = `landed, but main holds ${landed} of ${n - bad.size} beads' work`;
  finished = true;
  const releaseError = await releasing;
  if (releaseError) throw releaseError;

  const histories = await fetchRigHistories(stack.client, rig, [
    ...(o.driver === 'convoy' ? [`convoy:${rig}`] : []),
    ...beadIds.map(beadWorkflowId),
  ]);
  const sections = histories
    .filter((h) => h.workflowType === 'refineryWorkflow')
    .flatMap((h) => mergeSections(h.events));
  const agentTimes = readAgentTimes(timesDir);
  const ticketAt = new Map(
    histories.filter((h) => h.workflowType === 'refineryWorkflow').flatMap((h) => [...ticketsReceived(h.events)]),
  );

  const beads: BeadTimeline[] = histories
    .filter((h) => h.workflowType === 'beadWorkflow')
    .map((h) => {
      const beadId = h.workflowId.replace(/^bead:/, '');
      const ev = beadEvents(h.events);
      // The bench's beads merge in round 1 or not at all (bad beads run with maxRounds 1).
      const mrId = `mr:${beadId}:1`;
      const mergedIn = sections.find((s) => s.merged.includes(mrId));
      const agent = agentTimes.get(beadId);
      return {
        beadId,
        index: indexOfBead(beadId) ?? -1,
        status: ev.status,
        reason: ev.reason,
        workflowStartedAt: ev.workflowStartedAt,
        supervisionStartedAt: ev.supervisionStartedAt.at(-1),
        agentStartedAt: agent?.started,
        committedAt: agent?.committed,
        doneReturnedAt: agent?.doneReturned,
        doneAcceptedAt: ev.doneAcceptedAt,
        ticketAt: ticketAt.get(mrId),
        mergeStartedAt: sections.find((s) => s.mrIds.includes(mrId))?.startedAt,
        mergedAt: mergedIn?.endedAt,
        closedAt: ev.closedAt,
      };
    })
    .sort((a, b) => a.index - b.index);
  return {
    rig,
    driver: o.driver,
    status,
    startedAt,
    endedAt,
    makespanMs: endedAt - startedAt,
    queueReleasedAt,
    beads,
    sections,
    histories,
    ...(cpu ? { cpu } : {}),
  };
}

/** When bead `index` could start: its dependency's merge, or the start of the run. */
export function readyAt(
  run: { startedAt: number; beads: { index: number; mergedAt?: number }[] },
  index: number,
  width: number,
): number | undefined {
  const dep = dependencyOf(index, width);
  if (dep === undefined) return run.startedAt;
  return run.beads.find((b) => b.index === dep)?.mergedAt;
}
