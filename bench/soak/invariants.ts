/**
 * The soak's invariant checker: pure functions over what a soak leaves behind — the target branch's history, the
 * gate log, the agents' own marks, the beads' final states and the workflows still open — so each verdict can be
 * tested on hand-made evidence and the soak only collects. An invariant is a count that must be 0; a figure is a rate
 * reported as it is.
 */

/** One merge on the target's first-parent history. */
export interface TargetMerge {
  sha: string;
  tree: string;
  /** The merge request it came from (the Gt-Merge-Request trailer, `mr:<bead>:<round>@…`), if any. */
  mergeRequest?: string;
}

export interface GateVerdict {
  tree: string;
  result: 'pass' | 'fail';
  /** Why a tree failed: `broken` (it really is) or `flake` (the flaky gate failed a good tree). */
  why?: 'broken' | 'flake';
}

/** When one agent run ran, from its own marks (ms since the epoch); `end` is its last sign of life. */
export interface RunSpan {
  runId: string;
  beadId: string;
  start: number;
  end: number;
}

export interface BeadFinal {
  beadId: string;
  kind: string;
  /** The bead workflow's status, or `missing` when no workflow exists for it. */
  status: string;
  /** What the convoy recorded for it (`blocked`: a dependency failed, so it never started — not lost). */
  inConvoy: string;
  /** MR outcomes of its rounds, in order. */
  outcomes: string[];
  reason?: string;
}

export interface StaleReplay {
  runId: string;
  message: 'done' | 'checkpoint';
  /** Taken as new by the bead: a violation (a repeated gt done the run did send is answered, not accepted). */
  accepted: boolean;
  answer: string;
}

export interface SoakEvidence {
  merges: TargetMerge[];
  /** Every tree the target branch held (its reflog), initial commit excluded. */
  treesHeld: string[];
  gates: GateVerdict[];
  runs: RunSpan[];
  beads: BeadFinal[];
  staleReplays: StaleReplay[];
  /** Bead, merge-request and convoy workflows of the soak still running after it ended. */
  openWorkflows: { workflowId: string; pendingActivities: number }[];
}

export interface Invariants {
  beadsLost: string[];
  beadsMergedTwice: string[];
  concurrentRuns: { beadId: string; runs: [string, string] }[];
  ungatedTargetTrees: string[];
  staleMessagesAccepted: string[];
  stuckWorkflows: string[];
}

export interface Figures {
  beads: number;
  merged: number;
  /** Beads whose agents always meant to finish but that did not merge (chaos exhausted their attempts or rounds). */
  goodNotMerged: number;
  goodNotMergedPct: number;
  /** Beads never started because a dependency failed (counted in goodNotMerged too). */
  blocked: number;
  /** Gate runs that rejected a tree holding a BROKEN file (none of those may reach the target). */
  brokenTreesRejected: number;
  gateRuns: number;
  flakyRejections: number;
  flakyRejectionPct: number;
  runs: number;
  staleReplays: number;
}

const TERMINAL = new Set(['closed', 'failed', 'cancelled']);
/** Convoy bead states of beads the convoy rightly never started. */
const NEVER_STARTED = new Set(['blocked', 'skipped']);

/** The bead id of a run id (`<bead>/r<round>/a<attempt>`). */
export const beadOfRun = (runId: string) => runId.replace(/\/r\d+\/a\d+$/, '');

/** The bead of a merge request trailer (`mr:<bead>:<round>@<head>` or `mr:<bead>:<round>`). */
export const beadOfMergeRequest = (mr: string) => /^mr:(.+):\d+(?:@.*)?$/.exec(mr)?.[1];

export function checkInvariants(e: SoakEvidence): Invariants {
  const beadsLost = e.beads
    .filter((b) => !TERMINAL.has(b.status) && !(b.status === 'missing' && NEVER_STARTED.has(b.inConvoy)))
    .map((b) => b.beadId);

  const mergesPerBead = new Map<string, number>();
  for (const m of e.merges) {
    const bead = m.mergeRequest && beadOfMergeRequest(m.mergeRequest);
    if (bead) mergesPerBead.set(bead, (mergesPerBead.get(bead) ?? 0) + 1);
  }
  const beadsMergedTwice = [...mergesPerBead].filter(([, n]) => n > 1).map(([b]) => b);

  const concurrentRuns: Invariants['concurrentRuns'] = [];
  const byBead = new Map<string, RunSpan[]>();
  for (const r of e.runs) byBead.set(r.beadId, [...(byBead.get(r.beadId) ?? []), r]);
  for (const [beadId, spans] of byBead) {
    const sorted = [...spans].sort((a, b) => a.start - b.start);
    for (let i = 1; i < sorted.length; i++) {
      const earlier = sorted.slice(0, i).find((p) => p.end > sorted[i]!.start);
      if (earlier) concurrentRuns.push({ beadId, runs: [earlier.runId, sorted[i]!.runId] });
    }
  }

  const passed = new Set(e.gates.filter((g) => g.result === 'pass').map((g) => g.tree));
  const ungatedTargetTrees = [...new Set([...e.treesHeld, ...e.merges.map((m) => m.tree)])].filter(
    (t) => !passed.has(t),
  );

  return {
    beadsLost,
    beadsMergedTwice,
    concurrentRuns,
    ungatedTargetTrees,
    staleMessagesAccepted: e.staleReplays.filter((s) => s.accepted).map((s) => `${s.message} of ${s.runId}`),
    stuckWorkflows: e.openWorkflows.map((w) => w.workflowId),
  };
}

export function figures(e: SoakEvidence): Figures {
  const merged = e.beads.filter((b) => b.status === 'closed').length;
  const goodNotMerged = e.beads.filter((b) => b.status !== 'closed').length;
  const blocked = e.beads.filter((b) => b.inConvoy === 'blocked').length;
  const flaky = e.gates.filter((g) => g.why === 'flake').length;
  const brokenRuns = e.gates.filter((g) => g.why === 'broken').length;
  const pct = (n: number, of: number) => (of ? Math.round((1000 * n) / of) / 10 : 0);
  return {
    beads: e.beads.length,
    merged,
    goodNotMerged,
    goodNotMergedPct: pct(goodNotMerged, e.beads.length),
    blocked,
    brokenTreesRejected: brokenRuns,
    gateRuns: e.gates.length,
    flakyRejections: flaky,
    flakyRejectionPct: pct(flaky, e.gates.length),
    runs: e.runs.length,
    staleReplays: e.staleReplays.length,
  };
}

export const violations = (inv: Invariants) => Object.values(inv).reduce((n, list: unknown[]) => n + list.length, 0);

/** Parses the gate log (`<tree> pass` / `<tree> fail <why>` lines). */
export function parseGateLog(text: string): GateVerdict[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [tree, result, why] = line.split(' ');
      return { tree: tree!, result: result === 'pass' ? 'pass' : 'fail', why: why as GateVerdict['why'] };
    });
}

/** Parses one run's marks file (`start <ms> …`, `alive <ms>`, `end <ms>` lines) into its span. */
export function parseMarks(runId: string, text: string): RunSpan | undefined {
  let start: number | undefined;
  let end = 0;
  for (const line of text.split('\n')) {
    const [what, at] = line.split(' ');
    const ms = Number(at);
    if (!Number.isFinite(ms)) continue;
    if (what === 'start') start ??= ms;
    end = Math.max(end, ms);
  }
  return start === undefined ? undefined : { runId, beadId: beadOfRun(runId), start, end: Math.max(end, start) };
}
