/**
 * The town at a glance (`gt status`) and a rig's open work (what `gt rig remove` refuses on or drains).
 *
 * Invariants:
 * - Read-only: nothing here starts or signals a workflow (a rig whose dispatch gate never started reads as open).
 * - Which beads, merge requests and convoys are open comes from visibility scoped to the town's queue; their details
 *   from queries, a bounded number at a time, and a workflow that does not answer is shown from visibility alone.
 */
import type { WorkflowExecutionInfo } from '@temporalio/client';
import type { BeadState } from '../domain/bead';
import { countBeads, type ConvoyCounts, type ConvoyState } from '../domain/convoy';
import { dispatchGateWorkflowId, dispatchStateQuery, type DispatchGateState } from '../domain/dispatch';
import { beadWorkflowId, refineryWorkflowId } from '../domain/ids';
import { beadStateQuery, refineryStateQuery, convoyStateQuery } from '../domain/messages';
import type { RefineryState } from '../domain/refinery';
import { SA, type WorkflowKind } from '../domain/search-attributes';
import type { Town } from './town';

/** Running beads whose state `gt status` asks for; past this the view says how many more there are. */
const MAX_AGENTS_READ = 200;
const QUERY_BATCH = 16;

export interface AgentView {
  beadId: string;
  title: string;
  runId: string;
  host?: string;
  startedAt: string;
  ageMs: number;
  lastProgress?: string;
  /** Since the last progress report (or since the run started, if it has reported none). */
  quietMs: number;
}

export interface RigView {
  name: string;
  /** `open`, `paused` (by an operator), or the breaker's state when it stopped dispatch. */
  dispatch: 'open' | 'paused' | 'breaker_open' | 'breaker_half_open';
  paused?: { by: string; reason: string; since: string };
  capacity: { running: number; max: number; waiting: number };
  mergeQueue: { depth: number; merging: string[]; paused: boolean };
  beadsOpen: number;
  agents: AgentView[];
}

export interface TownStatus {
  at: string;
  rigs: RigView[];
  escalations: { id: string; severity: string; reason: string; beadId?: string; convoyId?: string; raisedAt: string }[];
  convoys: { convoyId: string; title: string; rig: string; status: string; counts: ConvoyCounts }[];
  /** Running beads not read because there were more than the view reads. */
  agentsNotShown: number;
}

async function each<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += QUERY_BATCH)
    out.push(...(await Promise.all(items.slice(i, i + QUERY_BATCH).map(fn))));
  return out;
}

async function running(town: Town, kind: WorkflowKind, rig?: string): Promise<WorkflowExecutionInfo[]> {
  const rows = new Map<string, WorkflowExecutionInfo>();
  const query = town.scoped(`GtKind = '${kind}' AND ExecutionStatus = 'Running'${rig ? ` AND GtRig = '${rig}'` : ''}`);
  for await (const wf of town.client.workflow.list({ query })) rows.set(wf.workflowId, wf);
  return [...rows.values()];
}

const gateState = (town: Town, rig: string) =>
  town.client.workflow
    .getHandle(dispatchGateWorkflowId(rig))
    .query(dispatchStateQuery)
    .catch((): DispatchGateState | undefined => undefined);

const queueState = (town: Town, rig: string) =>
  town.client.workflow
    .getHandle(refineryWorkflowId(rig))
    .query(refineryStateQuery)
    .catch((): RefineryState | undefined => undefined);

const beadState = (town: Town, beadId: string) =>
  town.client.workflow
    .getHandle(beadWorkflowId(beadId))
    .query(beadStateQuery)
    .catch((): BeadState | undefined => undefined);

function agentOf(bead: BeadState, now: number): AgentView | undefined {
  const run = bead.currentRunId
    ? bead.runs.find((r) => r.runId === bead.currentRunId && r.outcome === 'running')
    : undefined;
  if (!run) return undefined;
  const started = Date.parse(run.startedAt);
  return {
    beadId: bead.beadId,
    title: bead.title,
    runId: run.runId,
    host: run.host,
    startedAt: run.startedAt,
    ageMs: Math.max(0, now - started),
    lastProgress: run.lastProgress,
    quietMs: Math.max(0, now - (run.lastProgressAt ? Date.parse(run.lastProgressAt) : started)),
  };
}

export async function townStatus(town: Town): Promise<TownStatus> {
  const now = Date.now();
  const [rigs, beads, convoyRows, escalations] = await Promise.all([
    town.listRigs(),
    running(town, 'bead'),
    running(town, 'convoy'),
    town.listEscalations(),
  ]);
  const read = beads.sort((a, b) => a.startTime.getTime() - b.startTime.getTime()).slice(0, MAX_AGENTS_READ);
  const [states, gates, queues, convoys] = await Promise.all([
    each(read, (wf) =>
      beadState(town, String(wf.typedSearchAttributes.get(SA.beadId) ?? wf.workflowId.replace(/^bead:/, ''))),
    ),
    each(rigs, (r) => gateState(town, r.name)),
    each(rigs, (r) => queueState(town, r.name)),
    each(convoyRows, (wf) =>
      town.client.workflow
        .getHandle(wf.workflowId)
        .query(convoyStateQuery)
        .catch((): ConvoyState | undefined => undefined),
    ),
  ]);
  const agents = states.flatMap((s) => {
    const a = s && agentOf(s, now);
    return a ? [{ rig: s.rig, agent: a }] : [];
  });
  return {
    at: new Date(now).toISOString(),
    rigs: rigs.map((rig, i) => {
      const gate = gates[i];
      const queue = queues[i];
      const breaker = gate?.breaker.state ?? 'closed';
      return {
        name: rig.name,
        dispatch: gate?.paused
          ? 'paused'
          : breaker === 'closed'
            ? 'open'
            : breaker === 'open'
              ? 'breaker_open'
              : 'breaker_half_open',
        paused: gate?.paused,
        capacity: {
          running: gate?.running.length ?? 0,
          max: gate?.settings.maxPolecats ?? rig.maxPolecats,
          waiting: gate?.waiting.length ?? 0,
        },
        mergeQueue: {
          depth: queue?.queue.length ?? 0,
          merging: queue?.section?.mrIds ?? [],
          paused: queue?.paused ?? false,
        },
        beadsOpen: beads.filter((b) => b.typedSearchAttributes.get(SA.rig) === rig.name).length,
        agents: agents.filter((a) => a.rig === rig.name).map((a) => a.agent),
      };
    }),
    escalations: escalations.map((e) => ({
      id: e.id,
      severity: e.severity,
      reason: e.reason,
      beadId: e.beadId,
      convoyId: e.convoyId,
      raisedAt: e.raisedAt,
    })),
    convoys: convoyRows.flatMap((wf, i) => {
      const c = convoys[i];
      return c
        ? [{ convoyId: c.convoyId, title: c.title, rig: c.rig, status: c.status, counts: countBeads(c.beads) }]
        : [];
    }),
    agentsNotShown: beads.length - read.length,
  };
}

/** What keeps a rig from being removed: beads in flight, merge requests open or queued, convoys not ended. */
export interface RigOpenWork {
  rig: string;
  beads: { beadId: string; status: string }[];
  mergeRequests: string[];
  convoys: string[];
  /** Runs holding or waiting for a dispatch slot. */
  dispatch: { running: number; waiting: number };
}

export const isIdle = (w: RigOpenWork) =>
  w.beads.length + w.mergeRequests.length + w.convoys.length + w.dispatch.running + w.dispatch.waiting === 0;

export function describeOpenWork(w: RigOpenWork): string {
  const parts: string[] = [];
  const list = (ids: string[]) => (ids.length > 5 ? `${ids.slice(0, 5).join(', ')}, …` : ids.join(', '));
  if (w.beads.length)
    parts.push(`${w.beads.length} bead(s) in flight (${list(w.beads.map((b) => `${b.beadId} ${b.status}`))})`);
  if (w.mergeRequests.length) parts.push(`${w.mergeRequests.length} merge request(s) open (${list(w.mergeRequests)})`);
  if (w.convoys.length) parts.push(`${w.convoys.length} convoy(s) not ended (${list(w.convoys)})`);
  if (!w.beads.length && w.dispatch.running + w.dispatch.waiting)
    parts.push(`${w.dispatch.running + w.dispatch.waiting} run(s) in its dispatch gate`);
  return parts.join(', ') || 'nothing';
}

export async function rigOpenWork(town: Town, rig: string): Promise<RigOpenWork> {
  const [beads, mrs, convoys, queue, gate] = await Promise.all([
    running(town, 'bead', rig),
    running(town, 'merge-request', rig),
    running(town, 'convoy', rig),
    queueState(town, rig),
    gateState(town, rig),
  ]);
  const states = await each(beads, (wf) =>
    beadState(town, String(wf.typedSearchAttributes.get(SA.beadId) ?? wf.workflowId.replace(/^bead:/, ''))),
  );
  const mergeRequests = new Set([
    ...mrs.map((m) => m.workflowId),
    ...(queue?.section?.mrIds ?? []),
    ...(queue?.queue.map((t) => t.mrId) ?? []),
  ]);
  return {
    rig,
    beads: beads.map((wf, i) => ({
      beadId: String(wf.typedSearchAttributes.get(SA.beadId) ?? wf.workflowId),
      status: states[i]?.status ?? String(wf.typedSearchAttributes.get(SA.status) ?? 'running'),
    })),
    mergeRequests: [...mergeRequests].sort(),
    convoys: convoys.map((c) => c.workflowId.replace(/^convoy:/, '')),
    dispatch: { running: gate?.running.length ?? 0, waiting: gate?.waiting.length ?? 0 },
  };
}

/** A text frame of the town: what `gt status` prints and `--watch` redraws. */
export function describeTownStatus(s: TownStatus, formatMs: (ms: number) => string): string[] {
  const ago = (ms: number) => formatMs(Math.floor(ms / 1000) * 1000);
  const lines = [
    `town at ${s.at}: ${s.rigs.length} rig(s), ${s.rigs.reduce((n, r) => n + r.agents.length, 0)} agent(s) running, ${s.escalations.length} open escalation(s), ${s.convoys.length} convoy(s) in flight`,
  ];
  for (const r of s.rigs) {
    const dispatch =
      r.dispatch === 'paused'
        ? `PAUSED by ${r.paused?.by}: ${r.paused?.reason}`
        : r.dispatch === 'open'
          ? 'dispatch open'
          : `BREAKER ${r.dispatch.replace('breaker_', '').toUpperCase()}`;
    const mq = `merge queue ${r.mergeQueue.depth} waiting${r.mergeQueue.merging.length ? `, merging ${r.mergeQueue.merging.join(', ')}` : ''}${r.mergeQueue.paused ? ' (paused)' : ''}`;
    lines.push(
      '',
      `rig ${r.name}  ${dispatch}; ${r.capacity.running}/${r.capacity.max} slots, ${r.capacity.waiting} waiting; ${r.beadsOpen} bead(s) open; ${mq}`,
    );
    for (const a of r.agents) {
      lines.push(
        `  ▶ ${a.runId}  ${ago(a.ageMs)}${a.host ? ` on ${a.host}` : ''}  last progress ${ago(a.quietMs)} ago${a.lastProgress ? `: ${a.lastProgress.split('\n')[0]!.slice(0, 80)}` : ''}`,
      );
    }
  }
  if (s.agentsNotShown) lines.push('', `… ${s.agentsNotShown} more running bead(s) not read`);
  if (s.convoys.length) {
    lines.push('', 'convoys in flight:');
    for (const c of s.convoys)
      lines.push(
        `  ${c.convoyId}  ${c.status}  ${c.counts.closed}/${c.counts.total} merged, ${c.counts.running} running, ${c.counts.failed + c.counts.blocked + c.counts.cancelled} failed/blocked/cancelled  (${c.rig}) ${c.title.slice(0, 50)}`,
      );
  }
  if (s.escalations.length) {
    lines.push('', 'open escalations (`gt escalations`):');
    for (const e of s.escalations)
      lines.push(`  ${e.severity.padEnd(8)} ${e.id}  ${e.reason.split('\n')[0]!.slice(0, 90)}`);
  }
  return lines;
}
