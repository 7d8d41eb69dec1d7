/**
 * The live terminal view of `gt convoy watch` on a TTY: the convoy's beads as a tree (indented under what they wait
 * for), progress counts with a bar, elapsed time, and the convoy's beads in the rig's merge queue, redrawn in place.
 *
 * Invariants:
 * - A frame is a pure function of what was read (`watchFrame`): the loop only reads, draws and waits.
 * - It never grows past the terminal: when beads do not fit, merged and waiting beads give way first and one
 *   line says how many are not shown, so running, failed and blocked beads stay on screen.
 * - It draws on the alternate screen and always leaves it (end, error or Ctrl-C), so the shell is as it was and
 *   the final status printed afterwards stays in the scrollback.
 */
import type { BeadState } from '../domain/bead';
import {
  countBeads,
  describeCounts,
  isTerminalConvoy,
  type ConvoyBeadStatus,
  type ConvoyState,
} from '../domain/convoy';
import { depths } from '../domain/dag';
import { formatMs } from '../domain/durations';
import type { RefineryState } from '../domain/refinery';
import { STATUS_STYLE } from './convoy-graph';
import type { ConvoyClient } from './convoys';

/** Time since launch (or creation, while staged) until the end, or until now. */
export const convoyElapsed = (s: ConvoyState, now = Date.now()) =>
  Math.max(0, Date.parse(s.endedAt ?? new Date(now).toISOString()) - Date.parse(s.launchedAt ?? s.createdAt));

/** The convoy's beads in the rig's merge queue: being merged now, and waiting in queue order. */
export interface QueueView {
  merging: string[];
  waiting: string[];
}

export function convoyQueue(state: ConvoyState, refinery: RefineryState | undefined): QueueView {
  const local = new Map(state.beads.map((b) => [b.beadId, b.id] as const));
  const mine = (beadIds: string[]) => beadIds.filter((id) => local.has(id)).map((id) => local.get(id)!);
  const sectionBeads = refinery?.section
    ? refinery.section.mrIds.map((mr) => mr.replace(/^mr:/, '').replace(/:\d+$/, ''))
    : [];
  return {
    merging: mine(sectionBeads.length ? sectionBeads : refinery?.merging ? [refinery.merging.beadId] : []),
    waiting: mine((refinery?.queue ?? []).map((t) => t.beadId)),
  };
}

const COLOR: Record<ConvoyBeadStatus, number> = {
  closed: 32,
  running: 34,
  pending: 90,
  blocked: 33,
  failed: 31,
  cancelled: 90,
};
/** Beads that give way first when the tree does not fit (lower goes first). */
const KEEP: Record<ConvoyBeadStatus, number> = {
  closed: 0,
  pending: 1,
  cancelled: 2,
  blocked: 3,
  running: 4,
  failed: 5,
};

const fit = (s: string, cols: number) =>
  [...s].length > cols ? `${[...s].slice(0, Math.max(0, cols - 1)).join('')}…` : s;

/** One frame: header lines, then the tree, at most `rows` lines of at most `cols` characters (colour codes aside). */
export function watchFrame(
  state: ConvoyState,
  beads: ReadonlyMap<string, BeadState>,
  queue: QueueView,
  size: { rows: number; cols: number; color: boolean; now?: number },
): string[] {
  const paint = (code: number, s: string) => (size.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const counts = countBeads(state.beads);
  const barWidth = Math.max(10, Math.min(40, size.cols - 60));
  const filled = counts.total ? Math.round((counts.closed / counts.total) * barWidth) : 0;
  const elapsed = formatMs(Math.floor(convoyElapsed(state, size.now) / 1000) * 1000);
  const inQueue = new Set([...queue.merging, ...queue.waiting]);
  const header = [
    fit(`convoy ${state.convoyId}  ${state.title}   elapsed ${elapsed}`, size.cols),
    fit(`status ${state.status} — ${state.waitingFor}`, size.cols),
    `${paint(32, '█'.repeat(filled))}${paint(90, '░'.repeat(barWidth - filled))} ${fit(describeCounts(counts), size.cols - barWidth - 1)}`,
    fit(
      `merge queue  ${queue.merging.length ? `merging ${queue.merging.join(', ')}` : 'nothing merging'}; waiting ${queue.waiting.length ? `${queue.waiting.length}: ${queue.waiting.join(', ')}` : 'none'}`,
      size.cols,
    ),
    '',
  ];

  const depth = depths(state.beads);
  const order = state.beads
    .map((b, i) => ({ b, i }))
    .sort((x, y) => depth.get(x.b.id)! - depth.get(y.b.id)! || x.i - y.i);
  const room = Math.max(1, size.rows - header.length);
  let shown = order;
  if (order.length > room) {
    const keep = new Set(
      [...order]
        .sort((x, y) => KEEP[y.b.status] - KEEP[x.b.status] || x.i - y.i)
        .slice(0, room - 1)
        .map((x) => x.b.id),
    );
    shown = order.filter((x) => keep.has(x.b.id));
  }
  const idWidth = Math.min(32, Math.max(...shown.map(({ b }) => depth.get(b.id)! * 2 + [...b.id].length + 2)));
  const lines = shown.map(({ b }) => {
    const style = STATUS_STYLE[b.status];
    const bead = beads.get(b.beadId);
    const what = b.status === 'running' ? (bead?.status ?? 'running') : style.label;
    // The agent run while one works on it, else its round (in review or the merge queue no run is current).
    const run =
      b.status !== 'running' || !bead
        ? ''
        : bead.currentRunId
          ? bead.currentRunId.split('/').slice(1).join('/')
          : `r${bead.round}`;
    const note = inQueue.has(b.id)
      ? queue.merging.includes(b.id)
        ? 'merging now'
        : `in merge queue (#${queue.waiting.indexOf(b.id) + 1})`
      : b.status === 'closed'
        ? (b.commit?.slice(0, 10) ?? '')
        : (b.reason ?? (b.status === 'running' ? bead?.waitingFor : '') ?? '').split('\n')[0]!;
    const name = `${'  '.repeat(depth.get(b.id)!)}${style.symbol} ${b.id}`.padEnd(idWidth);
    const text = fit(`${name}  ${what.padEnd(11)} ${run.padEnd(6)} ${note}`.trimEnd(), size.cols);
    return paint(COLOR[b.status], text.slice(0, name.length)) + text.slice(name.length);
  });
  if (shown.length < order.length) {
    const hidden = countBeads(order.filter((x) => !shown.includes(x)).map((x) => x.b));
    lines.push(
      paint(
        90,
        fit(
          `… ${order.length - shown.length} more not shown (${describeCounts(hidden).replace(/, 0 running/, '')})`,
          size.cols,
        ),
      ),
    );
  }
  return [...header, ...lines];
}

/**
 * Draws the frames `read` returns on the alternate screen, in place, until it returns a result; always leaves the
 * alternate screen (end, error or Ctrl-C). Shared by `gt convoy watch` and `gt status --watch`.
 */
export async function redrawLive<T>(
  out: NodeJS.WriteStream,
  read: (size: { rows: number; cols: number }) => Promise<{ frame: string[]; result?: T }>,
  pollMs: number,
): Promise<T> {
  const leave = () => out.write('\x1b[?25h\x1b[?1049l');
  const onSigint = () => {
    leave();
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  out.write('\x1b[?1049h\x1b[?25l');
  try {
    for (;;) {
      const { frame, result } = await read({ rows: out.rows ?? 24, cols: out.columns ?? 80 });
      out.write(`\x1b[H${frame.map((l) => `${l}\x1b[K`).join('\n')}\x1b[J`);
      if (result !== undefined) return result;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  } finally {
    process.off('SIGINT', onSigint);
    leave();
  }
}

/** Reads the convoy, its running beads and the merge queue, and redraws until the convoy ends; resolves with its last state. */
export function watchLive(
  convoys: ConvoyClient,
  convoyId: string,
  out: NodeJS.WriteStream,
  pollMs = 500,
): Promise<ConvoyState> {
  return redrawLive(
    out,
    async (size) => {
      const state = await convoys.state(convoyId);
      const running = state.beads.filter((b) => b.status === 'running');
      const [beads, refinery] = await Promise.all([
        convoys.beadStates(running.map((b) => b.beadId)),
        convoys.town.mergeQueue(state.rig).catch(() => undefined),
      ]);
      const frame = watchFrame(state, beads, convoyQueue(state, refinery), { ...size, color: true });
      return { frame, result: isTerminalConvoy(state.status) ? state : undefined };
    },
    pollMs,
  );
}
