/**
 * Convoy graphs (`gt convoy graph`): the DAG of a convoy — running, staged, ended, or a spec file not launched yet —
 * as Mermaid, Graphviz DOT, SVG or a self-contained HTML page.
 *
 * Invariants:
 * - One model (`ConvoyGraph`) feeds every format, so a node's status, colour, symbol and critical-path mark are the
 *   same in all of them; the JSON of the model is what `--json` prints.
 * - Edges point from a bead to the bead that waits for it (the order work merges in), the reverse of `dependsOn`.
 * - SVG is laid out by Graphviz compiled to WebAssembly (`@viz-js/viz`): no network, no system Graphviz. HTML is
 *   that SVG inlined in one file with no external assets, each node a link to its workflow in the Web UI.
 * - Labels are monospace: Graphviz sizes boxes from its own font metrics, and any monospace font a browser falls
 *   back to has the same advance width (0.6 em), so text stays inside its box on machines without Helvetica.
 * - Every node carries `id="bead-<local id>"` and `class="bead status-<status>[ critical]"` in SVG and HTML, so
 *   scripts (and the tests) can find nodes without parsing labels.
 */
import type { BeadState } from '../domain/bead';
import {
  convoyBeadId,
  countBeads,
  type ConvoyBeadStatus,
  type ConvoyCounts,
  type ConvoySpec,
  type ConvoyState,
} from '../domain/convoy';
import { topologicalOrder } from '../domain/dag';
import { beadWorkflowId, convoyWorkflowId } from '../domain/ids';

export const GRAPH_FORMATS = ['mermaid', 'dot', 'svg', 'html'] as const;
export type GraphFormat = (typeof GRAPH_FORMATS)[number];

/** Colour (fill, border) and symbol per status: the terminal views use the same symbols. */
export const STATUS_STYLE: Record<ConvoyBeadStatus, { symbol: string; label: string; fill: string; stroke: string }> = {
  closed: { symbol: '✓', label: 'merged', fill: '#bbf7d0', stroke: '#15803d' },
  running: { symbol: '▶', label: 'running', fill: '#bfdbfe', stroke: '#1d4ed8' },
  pending: { symbol: '·', label: 'waiting', fill: '#f3f4f6', stroke: '#6b7280' },
  blocked: { symbol: '⊘', label: 'blocked', fill: '#fde68a', stroke: '#b45309' },
  failed: { symbol: '✗', label: 'failed', fill: '#fecaca', stroke: '#b91c1c' },
  cancelled: { symbol: '⊘', label: 'cancelled', fill: '#e5e7eb', stroke: '#374151' },
};
const CRITICAL = '#7c3aed';

export interface GraphNode {
  /** The bead's id in the convoy (the spec's). */
  id: string;
  /** Its bead workflow's bead id (`<convoy>-<id>`); absent for a spec without an id. */
  beadId?: string;
  title: string;
  status: ConvoyBeadStatus;
  /** The bead's own status while it runs (`in_progress`, `in_review`), and its current round and run. */
  beadStatus?: string;
  round?: number;
  runId?: string;
  commit?: string;
  /** Why a bead failed, is blocked or was cancelled (first line). */
  reason?: string;
  dependsOn: string[];
  critical: boolean;
  /** Where the bead is in the Web UI: its workflow once started, the convoy's before (the plan lives there). */
  url?: string;
}

export interface ConvoyGraph {
  convoyId?: string;
  title: string;
  /** `spec`: a spec file, nothing started. */
  status: ConvoyState['status'] | 'spec';
  waitingFor: string;
  counts: ConvoyCounts;
  /** The chain that decides when the convoy can land, roots first. */
  criticalPath: string[];
  nodes: GraphNode[];
}

/** Where bead and convoy workflows are in the Web UI (`<ui>/namespaces/<ns>/workflows/<id>`). */
export interface WebUi {
  url: string;
  namespace: string;
}

const workflowUrl = (ui: WebUi, workflowId: string) =>
  `${ui.url.replace(/\/+$/, '')}/namespaces/${encodeURIComponent(ui.namespace)}/workflows/${encodeURIComponent(workflowId)}`;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : undefined;
};

/**
 * The heaviest dependency chain: each bead weighs what it took (or has taken so far), beads not started weigh the
 * median of those that finished (so a spec, where nothing has run, gets the longest chain by count). Ties go to the
 * earlier bead in spec order, so the path is stable between redraws.
 */
export function criticalPath(
  nodes: readonly { id: string; dependsOn: readonly string[]; startedAt?: string; endedAt?: string }[],
  now: number,
): string[] {
  if (!nodes.length) return [];
  const took = (n: (typeof nodes)[number]) =>
    n.startedAt
      ? Math.max(1, Date.parse(n.endedAt ?? new Date(now).toISOString()) - Date.parse(n.startedAt))
      : undefined;
  const finished = nodes.filter((n) => n.startedAt && n.endedAt).map((n) => took(n)!);
  const started = nodes.map(took).filter((x): x is number => x !== undefined);
  const estimate = median(finished) ?? median(started) ?? 1;
  const byId = new Map(nodes.map((n) => [n.id, n] as const));
  const best = new Map<string, { total: number; via?: string }>();
  for (const id of topologicalOrder(nodes)) {
    const n = byId.get(id)!;
    let via: string | undefined;
    for (const d of n.dependsOn)
      if (best.has(d) && (via === undefined || best.get(d)!.total > best.get(via)!.total)) via = d;
    best.set(id, { total: (took(n) ?? estimate) + (via ? best.get(via)!.total : 0), via });
  }
  let end = nodes[0]!.id;
  for (const n of nodes) if (best.get(n.id)!.total > best.get(end)!.total) end = n.id;
  const path: string[] = [];
  for (let at: string | undefined = end; at; at = best.get(at)!.via) path.unshift(at);
  return path;
}

/** Text on one line (reasons often end their first line with a colon and go on below), cut to `max`. */
const oneLine = (s: string | undefined, max = 200) => {
  const line = s?.replace(/\s+/g, ' ').trim();
  return line ? (line.length > max ? `${line.slice(0, max - 1)}…` : line) : undefined;
};

/** The graph of a spec file before launch: every bead waiting, the longest chain marked. */
export function graphOfSpec(spec: ConvoySpec): ConvoyGraph {
  const path = criticalPath(spec.beads, 0);
  const onPath = new Set(path);
  return {
    convoyId: spec.id,
    title: spec.title,
    status: 'spec',
    waitingFor: 'launch (`gt convoy start`)',
    counts: countBeads(spec.beads.map(() => ({ status: 'pending' as const }))),
    criticalPath: path,
    nodes: spec.beads.map((b) => ({
      id: b.id,
      beadId: spec.id ? convoyBeadId(spec.id, b.id) : undefined,
      title: b.title,
      status: 'pending',
      dependsOn: b.dependsOn,
      critical: onPath.has(b.id),
    })),
  };
}

/**
 * The graph of a convoy as it is now, with each started bead's own state (round, run) where known. The critical
 * path runs through beads that can still merge (or have): the chain that decides when the convoy lands.
 */
export function graphOfConvoy(
  convoy: ConvoyState,
  beads: ReadonlyMap<string, BeadState>,
  opts: { ui?: WebUi; now?: number } = {},
): ConvoyGraph {
  // Failed, blocked and cancelled beads will never merge, so no chain through them decides when the rest lands.
  const path = criticalPath(
    convoy.beads.filter((b) => b.status === 'closed' || b.status === 'running' || b.status === 'pending'),
    opts.now ?? Date.now(),
  );
  const onPath = new Set(path);
  return {
    convoyId: convoy.convoyId,
    title: convoy.title,
    status: convoy.status,
    waitingFor: convoy.waitingFor,
    counts: countBeads(convoy.beads),
    criticalPath: path,
    nodes: convoy.beads.map((b) => {
      const bead = beads.get(b.beadId);
      const started = !!b.startedAt;
      return {
        id: b.id,
        beadId: b.beadId,
        title: b.title,
        status: b.status,
        beadStatus: bead?.status,
        round: bead?.round,
        runId: bead?.currentRunId ?? bead?.runs.at(-1)?.runId,
        commit: b.commit,
        reason:
          b.status === 'closed' || b.status === 'pending'
            ? undefined
            : oneLine(b.reason ?? (b.status === 'running' ? undefined : bead?.failureReason)),
        dependsOn: b.dependsOn,
        critical: onPath.has(b.id),
        url: opts.ui
          ? workflowUrl(opts.ui, started ? beadWorkflowId(b.beadId) : convoyWorkflowId(convoy.convoyId))
          : undefined,
      };
    }),
  };
}

/** The lines of a node's label: symbol and id, title, what it is doing (round/run) or why it stopped. */
function labelLines(n: GraphNode): string[] {
  const style = STATUS_STYLE[n.status];
  const lines = [`${style.symbol} ${n.id}`, oneLine(n.title, 40)!];
  const doing = n.status === 'running' ? (n.beadStatus ?? 'running') : style.label;
  const run = n.runId ? n.runId.split('/').slice(1).join('/') : n.round ? `r${n.round}` : '';
  lines.push([doing, run, n.commit?.slice(0, 7)].filter(Boolean).join(' · '));
  if (n.reason) lines.push(oneLine(n.reason, 48)!);
  return lines;
}

function heading(g: ConvoyGraph): string {
  const c = g.counts;
  const counts = `${c.closed}/${c.total} merged, ${c.running} running${c.failed ? `, ${c.failed} failed` : ''}${c.blocked ? `, ${c.blocked} blocked` : ''}`;
  return `${g.convoyId ? `convoy ${g.convoyId}: ` : ''}${g.title} — ${g.status === 'spec' ? 'spec, not launched' : g.status} — ${counts}`;
}

const edgesOf = (g: ConvoyGraph) => g.nodes.flatMap((n) => n.dependsOn.map((d) => ({ from: d, to: n.id })));
const onCriticalPath = (g: ConvoyGraph) => {
  const steps = new Set(g.criticalPath.slice(1).map((id, i) => `${g.criticalPath[i]}→${id}`));
  return (e: { from: string; to: string }) => steps.has(`${e.from}→${e.to}`);
};

// --- Mermaid ---

/** Mermaid ids must be simple words; bead ids may hold dots and dashes. */
const mermaidId = (id: string) => `b_${id.replace(/[^A-Za-z0-9_]/g, (ch) => `_${ch.charCodeAt(0).toString(16)}_`)}`;
const mermaidText = (s: string) => s.replace(/"/g, '#quot;').replace(/</g, '#lt;').replace(/>/g, '#gt;');

export function toMermaid(g: ConvoyGraph): string {
  const out = ['---', `title: ${JSON.stringify(heading(g))}`, '---', 'flowchart TD'];
  for (const n of g.nodes) out.push(`  ${mermaidId(n.id)}["${labelLines(n).map(mermaidText).join('<br/>')}"]`);
  const edges = edgesOf(g);
  const critical = onCriticalPath(g);
  edges.forEach((e) => out.push(`  ${mermaidId(e.from)} ${critical(e) ? '==>' : '-->'} ${mermaidId(e.to)}`));
  for (const [status, s] of Object.entries(STATUS_STYLE)) {
    const members = g.nodes.filter((n) => n.status === status);
    if (!members.length) continue;
    out.push(`  classDef ${status} fill:${s.fill},stroke:${s.stroke},color:#111827`);
    out.push(`  class ${members.map((n) => mermaidId(n.id)).join(',')} ${status}`);
  }
  const criticalNodes = g.nodes.filter((n) => n.critical);
  if (criticalNodes.length)
    out.push(
      `  classDef critical stroke:${CRITICAL},stroke-width:3px`,
      `  class ${criticalNodes.map((n) => mermaidId(n.id)).join(',')} critical`,
    );
  const criticalEdges = edges.map((e, i) => (critical(e) ? i : -1)).filter((i) => i >= 0);
  if (criticalEdges.length) out.push(`  linkStyle ${criticalEdges.join(',')} stroke:${CRITICAL},stroke-width:3px`);
  for (const n of g.nodes)
    if (n.url)
      out.push(
        `  click ${mermaidId(n.id)} href "${n.url}" "bead ${mermaidText(n.beadId ?? n.id)} in the Web UI" _blank`,
      );
  return `${out.join('\n')}\n`;
}

// --- Graphviz DOT ---

const dotString = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

export function toDot(g: ConvoyGraph): string {
  const out = [
    `digraph ${dotString(g.convoyId ? `convoy ${g.convoyId}` : 'convoy')} {`,
    `  graph [label=${dotString(`${heading(g)}\ncritical path: ${g.criticalPath.join(' → ')}`)}, labelloc=t, fontname="Courier", fontsize=13, rankdir=TB, nodesep=0.3, ranksep=0.45, bgcolor="white"];`,
    '  node [shape=box, style="rounded,filled", fontname="Courier", fontsize=11, margin="0.12,0.06"];',
    '  edge [color="#6b7280", arrowsize=0.7, fontname="Courier"];',
  ];
  for (const n of g.nodes) {
    const s = STATUS_STYLE[n.status];
    const attrs = [
      `id=${dotString(`bead-${n.id}`)}`,
      `class=${dotString(`bead status-${n.status}${n.critical ? ' critical' : ''}`)}`,
      `label=${dotString(labelLines(n).join('\n'))}`,
      `fillcolor=${dotString(s.fill)}`,
      `color=${dotString(n.critical ? CRITICAL : s.stroke)}`,
      `penwidth=${n.critical ? 3 : 1.2}`,
      `tooltip=${dotString([`${n.beadId ?? n.id}: ${n.title}`, `status: ${s.label}${n.beadStatus && n.status === 'running' ? ` (${n.beadStatus})` : ''}`, n.runId ? `run ${n.runId}` : '', n.reason ? `reason: ${n.reason}` : '', n.dependsOn.length ? `after ${n.dependsOn.join(', ')}` : ''].filter(Boolean).join('\n'))}`,
    ];
    if (n.url) attrs.push(`URL=${dotString(n.url)}`, 'target="_blank"');
    out.push(`  ${dotString(n.id)} [${attrs.join(', ')}];`);
  }
  const critical = onCriticalPath(g);
  for (const e of edgesOf(g))
    out.push(
      `  ${dotString(e.from)} -> ${dotString(e.to)}${critical(e) ? ` [color=${dotString(CRITICAL)}, penwidth=2.5, class="critical"]` : ''};`,
    );
  out.push('}');
  return `${out.join('\n')}\n`;
}

// --- SVG and HTML ---

let viz: Promise<{ renderString(dot: string, options: { format: string }): string }> | undefined;

/** Lays the graph out with Graphviz (WebAssembly, loaded once per process). */
export async function toSvg(g: ConvoyGraph): Promise<string> {
  viz ??= import('@viz-js/viz').then((m) => m.instance());
  return (await viz).renderString(toDot(g), { format: 'svg' });
}

const html = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** One self-contained page: heading, legend, the SVG (nodes link to the Web UI), and the beads as a table. */
export async function toHtml(g: ConvoyGraph): Promise<string> {
  const svg = (await toSvg(g)).replace(/^[\s\S]*?(<svg\b)/, '$1');
  const legend = Object.entries(STATUS_STYLE)
    .map(
      ([status, s]) =>
        `<span class="key" data-status="${status}"><i style="background:${s.fill};border-color:${s.stroke}"></i>${s.symbol} ${s.label} (${g.counts[status as ConvoyBeadStatus]})</span>`,
    )
    .join('');
  const rows = g.nodes
    .map((n) => {
      const s = STATUS_STYLE[n.status];
      const id = n.url ? `<a href="${html(n.url)}" target="_blank">${html(n.id)}</a>` : html(n.id);
      return `<tr class="status-${n.status}"><td>${s.symbol}</td><td>${id}${n.critical ? ' ★' : ''}</td><td>${html(n.title)}</td><td>${s.label}${n.beadStatus && n.status === 'running' ? ` (${html(n.beadStatus)})` : ''}</td><td>${html(n.runId ?? '')}</td><td>${html(n.dependsOn.join(', '))}</td><td>${html(n.reason ?? '')}</td></tr>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${html(heading(g))}</title>
<style>
body{font-family:Helvetica,Arial,sans-serif;margin:1.5rem;color:#111827}
h1{font-size:1.2rem;margin:0 0 .3rem}p{margin:.2rem 0 .8rem;color:#374151}
.key{display:inline-block;margin-right:1rem;font-size:.9rem}.key i{display:inline-block;width:.9rem;height:.9rem;border:2px solid;border-radius:3px;vertical-align:middle;margin-right:.3rem}
.key.crit i{border-color:${CRITICAL};border-width:3px}
#graph{margin:1rem 0;overflow:auto}#graph a:hover polygon,#graph a:hover path{stroke-width:3}
table{border-collapse:collapse;font-size:.85rem}td,th{border-bottom:1px solid #e5e7eb;padding:.2rem .5rem;text-align:left}
</style></head>
<body>
<h1>${html(heading(g))}</h1>
<p>${html(g.waitingFor)} · critical path (★, purple): ${html(g.criticalPath.join(' → '))}${g.nodes.some((n) => n.url) ? ' · click a bead to open its workflow in the Temporal Web UI' : ''}</p>
<div class="legend">${legend}<span class="key crit"><i></i>critical path</span></div>
<div id="graph">${svg}</div>
<table><thead><tr><th></th><th>bead</th><th>title</th><th>status</th><th>run</th><th>after</th><th>reason</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}

export async function renderGraph(g: ConvoyGraph, format: GraphFormat): Promise<string> {
  if (format === 'mermaid') return toMermaid(g);
  if (format === 'dot') return toDot(g);
  if (format === 'svg') return toSvg(g);
  return toHtml(g);
}
