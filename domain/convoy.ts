/**
 * Convoys: a set of beads with dependencies (a DAG) that land together. The spec users write, the state the
 * convoy workflow keeps (small per bead, so a 1,000-bead convoy continues-as-new with little to carry), and the
 * messages clients send it. Workflow-safe: no Node built-ins.
 */
import { z } from 'zod';
import { BeadSpec, MAX_TEXT, MAX_TITLE } from './bead';
import { MergeOutcome } from './outcomes';
import { utf8Bytes } from './caps';
import { dagProblems } from './dag';
import { DurationMs } from './durations';
import { FormulaName, FormulaVarValues } from './formula-ref';
import { BeadId, CommitId, ConvoyId, MAX_AFTER_COMMITS, RigName } from './ids';

export const MAX_CONVOY_BEADS = 1000;
/** All text a convoy holds for beads not yet started; keeps workflow payloads far below Temporal's 2 MB limit. */
export const MAX_CONVOY_TEXT = 1_000_000;
/**
 * Bytes the convoy's plan (state and bead details: its continue-as-new input) may take as a payload. Characters are
 * not bytes (non-ASCII text takes up to 3, escapes up to 6, and dependencies count too); the rest of the 2 MB is room
 * for what the convoy learns while it runs.
 */
export const MAX_CONVOY_BYTES = 1_000_000;
const MAX_BEAD_ID = 63;

export const MergeMode = z.enum(['review-and-merge', 'review-then-land']);
export type MergeMode = z.infer<typeof MergeMode>;

/**
 * What a failed bead does to the rest of the convoy. Either way its dependents never start (a failed bead never
 * unblocks anything), an escalation names it, and the convoy ends `failed`, never `landed`.
 * - `stop-dependents`: beads that do not depend on it keep going, so independent work still merges.
 * - `stop-all`: nothing new starts anywhere in the convoy; beads already running finish.
 */
export const FailurePolicy = z.enum(['stop-dependents', 'stop-all']);
export type FailurePolicy = z.infer<typeof FailurePolicy>;

const unique = (ids: string[]) => [...new Set(ids)];

/** One bead of a spec: a bead (id local to the convoy) plus the beads that must merge before it starts. */
export const ConvoyBeadSpec = z.strictObject({
  ...BeadSpec.shape,
  dependsOn: z.array(BeadId).max(MAX_CONVOY_BEADS).default([]).transform(unique),
  /** The formula this bead runs (default: the convoy's, else the rig's, else `work`) and its variables. */
  formula: FormulaName.optional(),
  vars: FormulaVarValues.optional(),
});
export type ConvoyBeadSpec = z.infer<typeof ConvoyBeadSpec>;
export type ConvoyBeadSpecInput = z.input<typeof ConvoyBeadSpec>;

/** The bead's own id (its workflow is `bead:<id>`): unique per convoy, stable across retries of the start. */
export const convoyBeadId = (convoyId: string, localId: string) => `${convoyId}-${localId}`;
/** The landing merge request of review-then-land; `landing<n>` can never be a bead's numeric round. */
export const landingMergeRequestId = (convoyId: string, round: number) => `mr:${convoyId}:landing${round}`;

const beadText = (b: { title: string; description?: string; acceptance?: string }) =>
  b.title.length + (b.description?.length ?? 0) + (b.acceptance?.length ?? 0);

/** Problems that need the convoy id: every bead id derived from it must still be a valid bead id. */
export function beadIdProblems(convoyId: string, beads: readonly { id: string }[]): string[] {
  return beads
    .filter((b) => convoyBeadId(convoyId, b.id).length > MAX_BEAD_ID)
    .map(
      (b) =>
        `bead id '${b.id}' is too long for convoy '${convoyId}': '${convoyBeadId(convoyId, b.id)}' must be at most ${MAX_BEAD_ID} characters`,
    );
}

function textProblem(total: number): string | undefined {
  return total > MAX_CONVOY_TEXT
    ? `the convoy holds ${total} characters of text; at most ${MAX_CONVOY_TEXT} are allowed (keep long material in the repository and refer to it)`
    : undefined;
}

const ConvoySpecShape = z.strictObject({
  /** Default: generated from the title when the convoy starts. */
  id: ConvoyId.optional(),
  title: z
    .string()
    .trim()
    .min(1, 'title must not be empty')
    .max(MAX_TITLE, `title must be at most ${MAX_TITLE} characters`),
  description: z.string().max(MAX_TEXT, `description must be at most ${MAX_TEXT} characters`).default(''),
  rig: RigName,
  mergeMode: MergeMode.default('review-and-merge'),
  /** Beads in flight at once (further bounded by the rig's maxPolecats). */
  maxParallel: z.number().int().min(1).max(MAX_CONVOY_BEADS).optional(),
  onFailure: FailurePolicy.default('stop-dependents'),
  /** The formula of every bead that names none (default: the rig's), and its variables. */
  formula: FormulaName.optional(),
  vars: FormulaVarValues.optional(),
  beads: z
    .array(ConvoyBeadSpec)
    .min(1, 'a convoy needs at least one bead')
    .max(MAX_CONVOY_BEADS, `a convoy holds at most ${MAX_CONVOY_BEADS} beads`),
});

/** A convoy spec file (YAML or JSON), fully validated: shape, DAG, derived bead ids, total size. */
export const ConvoySpec = ConvoySpecShape.superRefine((spec, ctx) => {
  const problems = [...dagProblems(spec.beads), ...(spec.id ? beadIdProblems(spec.id, spec.beads) : [])];
  const size = textProblem(
    spec.title.length + spec.description.length + spec.beads.reduce((n, b) => n + beadText(b), 0),
  );
  if (size) problems.push(size);
  for (const message of problems) ctx.addIssue({ code: 'custom', message, path: [] });
});
export type ConvoySpec = z.infer<typeof ConvoySpec>;
export type ConvoySpecInput = z.input<typeof ConvoySpec>;

/** A spec whose id is known (what the workflow is started with). */
export const ResolvedConvoySpec = ConvoySpec.refine((s) => !!s.id, {
  message: 'the convoy id must be set',
  path: ['id'],
});
export type ResolvedConvoySpec = ConvoySpec & { id: string };

// --- state ---

export const ConvoyStatus = z.enum(['staged', 'running', 'landing', 'landed', 'failed', 'cancelled', 'closed']);
export type ConvoyStatus = z.infer<typeof ConvoyStatus>;
export const TERMINAL_CONVOY_STATUSES: readonly ConvoyStatus[] = ['landed', 'failed', 'cancelled', 'closed'];
export const isTerminalConvoy = (s: ConvoyStatus) => TERMINAL_CONVOY_STATUSES.includes(s);

/**
 * A bead as the convoy sees it. `running` covers everything between start and a terminal report (the bead's own
 * workflow knows whether it is in progress or in review); `blocked` beads can never start (a dependency failed).
 */
export const ConvoyBeadStatus = z.enum(['pending', 'blocked', 'running', 'closed', 'failed', 'cancelled']);
export type ConvoyBeadStatus = z.infer<typeof ConvoyBeadStatus>;

export const ConvoyBeadRecord = z.object({
  id: BeadId,
  beadId: BeadId,
  title: z.string(),
  priority: z.number().int().min(0).max(4),
  dependsOn: z.array(BeadId),
  status: ConvoyBeadStatus,
  commit: z.string().optional(),
  reason: z.string().optional(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
  /** Times an operator retried the bead; its reports must carry the same number (older runs' reports are stale). */
  retries: z.number().int().min(1).optional(),
  /** A retry accepted but not started yet: the convoy's loop starts the bead's new workflow run and clears it. */
  restart: z.object({ fresh: z.boolean(), note: z.string(), by: z.string() }).optional(),
  /** An operator skipped the failed bead: it counts as done (its dependents start), with nothing merged. */
  skipped: z.object({ by: z.string(), reason: z.string(), at: z.string() }).optional(),
});
export type ConvoyBeadRecord = z.infer<typeof ConvoyBeadRecord>;

export const LandingRecord = z.object({
  round: z.number().int().min(1),
  mrId: z.string(),
  headSha: z.string().optional(),
  outcome: MergeOutcome.optional(),
});
export type LandingRecord = z.infer<typeof LandingRecord>;

export const ConvoyState = z.object({
  convoyId: ConvoyId,
  title: z.string(),
  description: z.string(),
  rig: RigName,
  mergeMode: MergeMode,
  onFailure: FailurePolicy,
  maxParallel: z.number().int().optional(),
  status: ConvoyStatus,
  waitingFor: z.string(),
  /** The rig's branch, known once the convoy is launched. */
  targetBranch: z.string().optional(),
  /** review-then-land: where beads merge (`convoy/<id>`), created from the target at launch. */
  convoyBranch: z.string().optional(),
  beads: z.array(ConvoyBeadRecord),
  landing: LandingRecord.optional(),
  /** The commit that landed the convoy on the target (the last bead's merge, or the landing merge). */
  landedCommit: z.string().optional(),
  reason: z.string().optional(),
  escalations: z.array(z.string()),
  createdAt: z.string(),
  launchedAt: z.string().optional(),
  endedAt: z.string().optional(),
  continuedAsNew: z.number().int().nonnegative(),
  /** Failed beads whose `stop-all` an operator lifted (`gt convoy resume`): they block only their own dependents. */
  stopAllLifted: z.array(BeadId).optional(),
  /** Times the convoy was reopened after it had ended `failed` (a retry, skip or resume of an ended convoy). */
  reopened: z.number().int().min(1).optional(),
});
export type ConvoyState = z.infer<typeof ConvoyState>;

/** Text of beads not started yet; dropped once a bead starts (its own workflow holds it from then on). */
export const BeadDetails = z.record(
  z.string(),
  z.object({
    description: z.string(),
    acceptance: z.string(),
    /** The bead's formula as the spec chose it (resolved when the bead starts); absent: the rig's. */
    formula: FormulaName.optional(),
    vars: FormulaVarValues.optional(),
  }),
);
export type BeadDetails = z.infer<typeof BeadDetails>;

/** Operational knobs of the convoy workflow (not part of the spec). */
export const ConvoyOptions = z.object({
  /** Continue-as-new after this many history events even if the server has not suggested it yet. */
  continueAsNewAfterEvents: z.number().int().min(50).optional(),
  /** How often running beads are checked directly, in case a report was lost (a terminated bead never reports). */
  reconcileEvery: DurationMs.default(300_000),
  /** How long stopped beads get to confirm their cancellation before they are recorded as cancelled anyway. */
  stopGrace: DurationMs.default(120_000),
});
export type ConvoyOptions = z.infer<typeof ConvoyOptions>;
export type ConvoyOptionsInput = z.input<typeof ConvoyOptions>;

export const ConvoyCheckpoint = z.object({
  state: ConvoyState,
  details: BeadDetails,
  /** The rig's maxPolecats as last seen. */
  capacity: z.number().int().min(1).optional(),
});
export type ConvoyCheckpoint = z.infer<typeof ConvoyCheckpoint>;

/** A new convoy (`spec`), or one continuing as new (`checkpoint`). */
export const ConvoyWorkflowInput = z.union([
  z.strictObject({
    spec: ResolvedConvoySpec,
    staged: z.boolean().default(false),
    options: ConvoyOptions.default(ConvoyOptions.parse({})),
  }),
  z.strictObject({ checkpoint: ConvoyCheckpoint, options: ConvoyOptions.default(ConvoyOptions.parse({})) }),
]);
export type ConvoyWorkflowInput = z.input<typeof ConvoyWorkflowInput>;

export interface ConvoyCounts {
  total: number;
  pending: number;
  blocked: number;
  running: number;
  closed: number;
  failed: number;
  cancelled: number;
}

export function countBeads(beads: readonly { status: ConvoyBeadStatus }[]): ConvoyCounts {
  const counts: ConvoyCounts = {
    total: beads.length,
    pending: 0,
    blocked: 0,
    running: 0,
    closed: 0,
    failed: 0,
    cancelled: 0,
  };
  for (const b of beads) counts[b.status]++;
  return counts;
}

/**
 * What a bead's first run needs its target to hold: the merges of its dependencies (BeadWorkflowInput's
 * `convoy.after`). None when one is unknown or not a commit id (a merge through a pull request may report none), or
 * when there are too many to hand on: the run then fetches, as every other run does.
 */
export function dependencyMerges(
  bead: { dependsOn: readonly string[] },
  commitOf: (id: string) => string | undefined,
): string[] | undefined {
  const commits = bead.dependsOn.map(commitOf);
  if (commits.length === 0 || commits.length > MAX_AFTER_COMMITS) return undefined;
  return commits.every((c) => CommitId.safeParse(c).success) ? [...new Set(commits as string[])] : undefined;
}

export function describeCounts(c: ConvoyCounts): string {
  const parts = [`${c.closed}/${c.total} merged`, `${c.running} running`];
  if (c.pending) parts.push(`${c.pending} waiting`);
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.blocked) parts.push(`${c.blocked} blocked`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  return parts.join(', ');
}

export interface ConvoyResult {
  convoyId: string;
  status: ConvoyStatus;
  reason?: string;
  landedCommit?: string;
  counts: ConvoyCounts;
}

/** The plan of a new convoy: every bead pending, its text kept until it starts. */
export function planConvoy(spec: ResolvedConvoySpec, staged: boolean, now: string): ConvoyCheckpoint {
  const details: BeadDetails = {};
  for (const b of spec.beads)
    details[b.id] = { description: b.description, acceptance: b.acceptance, ...beadFormula(spec, b) };
  return {
    details,
    state: {
      convoyId: spec.id,
      title: spec.title,
      description: spec.description,
      rig: spec.rig,
      mergeMode: spec.mergeMode,
      onFailure: spec.onFailure,
      maxParallel: spec.maxParallel,
      status: staged ? 'staged' : 'running',
      waitingFor: staged ? 'launch (`gt convoy launch`); beads can still be added, removed or edited' : 'launch',
      beads: spec.beads.map((b) => ({
        id: b.id,
        beadId: convoyBeadId(spec.id, b.id),
        title: b.title,
        priority: b.priority,
        dependsOn: b.dependsOn,
        status: 'pending' as const,
      })),
      escalations: [],
      createdAt: now,
      continuedAsNew: 0,
    },
  };
}

/**
 * A bead's formula choice: its own, else the convoy's (with the convoy's variables under its own). Nothing when
 * neither names one, so plans without formulas stay exactly as they were.
 */
export function beadFormula(
  convoy: { formula?: string; vars?: Record<string, string> },
  bead: { formula?: string; vars?: Record<string, string> },
): { formula?: string; vars?: Record<string, string> } {
  const formula = bead.formula ?? convoy.formula;
  if (!formula) return bead.vars ? { vars: bead.vars } : {};
  const vars = { ...(formula === convoy.formula ? convoy.vars : {}), ...bead.vars };
  return Object.keys(vars).length ? { formula, vars } : { formula };
}

/**
 * Why a plan is too large to carry, or undefined. Checked before a convoy starts and by the edit validator (never
 * in replayed code: a plan accepted before this check existed must still replay).
 */
export function convoySizeProblem(plan: { state: ConvoyState; details: BeadDetails }): string | undefined {
  const bytes = utf8Bytes(JSON.stringify(plan));
  return bytes > MAX_CONVOY_BYTES
    ? `the convoy's plan takes ${bytes} bytes; at most ${MAX_CONVOY_BYTES} are allowed (non-ASCII text takes up to 3 bytes a character; keep long material in the repository and refer to it)`
    : undefined;
}

// --- edits (staged: add/remove/edit; running: add) ---

export const BeadPatch = z.strictObject({
  id: BeadId,
  title: ConvoyBeadSpec.shape.title.optional(),
  description: ConvoyBeadSpec.shape.description.unwrap().optional(),
  acceptance: ConvoyBeadSpec.shape.acceptance.unwrap().optional(),
  priority: ConvoyBeadSpec.shape.priority.unwrap().optional(),
  dependsOn: z.array(BeadId).max(MAX_CONVOY_BEADS).transform(unique).optional(),
});

export const ConvoyEdit = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('add'),
    beads: z.array(ConvoyBeadSpec).min(1, 'add at least one bead').max(MAX_CONVOY_BEADS),
  }),
  z.strictObject({ op: z.literal('remove'), ids: z.array(BeadId).min(1, 'name at least one bead to remove') }),
  z.strictObject({ op: z.literal('edit'), bead: BeadPatch }),
]);
export type ConvoyEdit = z.infer<typeof ConvoyEdit>;
export type ConvoyEditInput = z.input<typeof ConvoyEdit>;

export type EditResult = { ok: true; beads: ConvoyBeadRecord[]; details: BeadDetails } | { ok: false; error: string };

/**
 * Applies an edit to a convoy's plan without touching the originals: the update's validator runs it to reject bad
 * edits (nothing changes), the handler runs it again to apply. Started beads are never edited or removed.
 */
export function applyEdit(state: ConvoyState, details: BeadDetails, edit: ConvoyEdit): EditResult {
  const fail = (error: string): EditResult => ({ ok: false, error });
  if (edit.op === 'add' && state.status !== 'staged' && state.status !== 'running') {
    return fail(
      `beads can be added only while the convoy is staged or running; convoy ${state.convoyId} is ${state.status}`,
    );
  }
  if (edit.op !== 'add' && state.status !== 'staged') {
    return fail(
      `beads can be ${edit.op === 'remove' ? 'removed' : 'edited'} only while the convoy is staged; convoy ${state.convoyId} is ${state.status} (add new beads instead)`,
    );
  }
  let beads = state.beads.map((b) => ({ ...b, dependsOn: [...b.dependsOn] }));
  const nextDetails: BeadDetails = { ...details };
  const byId = new Map(beads.map((b) => [b.id, b] as const));

  if (edit.op === 'add') {
    for (const b of edit.beads) {
      if (byId.has(b.id)) return fail(`bead '${b.id}' is already in convoy ${state.convoyId}`);
    }
    for (const b of edit.beads) {
      for (const d of b.dependsOn) {
        const dep = byId.get(d);
        if (dep && (dep.status === 'failed' || dep.status === 'cancelled' || dep.status === 'blocked')) {
          return fail(`bead '${b.id}' depends on '${d}', which is ${dep.status}; it could never start`);
        }
      }
      beads.push({
        id: b.id,
        beadId: convoyBeadId(state.convoyId, b.id),
        title: b.title,
        priority: b.priority,
        dependsOn: b.dependsOn,
        status: 'pending',
      });
      nextDetails[b.id] = { description: b.description, acceptance: b.acceptance, ...beadFormula({}, b) };
    }
    const idProblems = beadIdProblems(state.convoyId, edit.beads);
    if (idProblems.length) return fail(idProblems[0]!);
  } else if (edit.op === 'remove') {
    const removing = new Set(edit.ids);
    for (const id of edit.ids) if (!byId.has(id)) return fail(`bead '${id}' is not in convoy ${state.convoyId}`);
    for (const b of beads) {
      const dep = b.dependsOn.find((d) => removing.has(d));
      if (!removing.has(b.id) && dep)
        return fail(`cannot remove '${dep}': '${b.id}' depends on it (remove or edit '${b.id}' too)`);
    }
    beads = beads.filter((b) => !removing.has(b.id));
    for (const id of removing) delete nextDetails[id];
  } else {
    const { id, description, acceptance, ...fields } = edit.bead;
    const bead = byId.get(id);
    if (!bead) return fail(`bead '${id}' is not in convoy ${state.convoyId}`);
    Object.assign(bead, Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)));
    const current = nextDetails[id] ?? { description: '', acceptance: '' };
    nextDetails[id] = { description: description ?? current.description, acceptance: acceptance ?? current.acceptance };
  }

  if (beads.length === 0) return fail('a convoy needs at least one bead');
  if (beads.length > MAX_CONVOY_BEADS)
    return fail(`a convoy holds at most ${MAX_CONVOY_BEADS} beads (this edit would make ${beads.length})`);
  const problems = dagProblems(beads);
  if (problems.length) return fail(problems[0]!);
  const text =
    state.title.length +
    state.description.length +
    beads.reduce((n, b) => n + b.title.length, 0) +
    Object.values(nextDetails).reduce((n, d) => n + d.description.length + d.acceptance.length, 0);
  const size = textProblem(text);
  if (size) return fail(size);
  return { ok: true, beads, details: nextDetails };
}

// --- messages ---

/** A bead's terminal report, as received (beadReportSignal); validated because it crosses a workflow boundary. */
export const BeadReportMessage = z.object({
  beadId: BeadId,
  status: z.enum(['closed', 'failed', 'cancelled']),
  commit: z.string().optional(),
  reason: z.string().optional(),
  /** The bead's retry number, on a retried run's report. */
  retry: z.number().int().min(1).optional(),
  /** The workflow that reported it, when the signal came from its local activity (the refinery's). */
  reportedBy: z.string().max(300).optional(),
});

// --- recovery: retry, skip, resume (docs/operations.md) ---

/** An operator's decision about beads that failed: run them again, skip them, or lift `stop-all`. */
export const ConvoyRecovery = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('retry'),
    /** Ids as in the spec (or the beads' own ids); empty: every failed bead. */
    ids: z.array(BeadId).max(MAX_CONVOY_BEADS).default([]),
    fresh: z.boolean().default(false),
    note: z.string().trim().max(4000, 'note must be at most 4000 characters').default(''),
    by: z.string().trim().min(1).max(200).default('operator'),
  }),
  z.strictObject({
    op: z.literal('skip'),
    ids: z.array(BeadId).min(1, 'name the bead to skip').max(MAX_CONVOY_BEADS),
    reason: z.string().trim().min(1, 'say why the bead is skipped').max(2000, 'reason must be at most 2000 characters'),
    by: z.string().trim().min(1).max(200).default('operator'),
  }),
  z.strictObject({ op: z.literal('resume'), by: z.string().trim().min(1).max(200).default('operator') }),
]);
export type ConvoyRecovery = z.infer<typeof ConvoyRecovery>;
export type ConvoyRecoveryInput = z.input<typeof ConvoyRecovery>;

export type RecoveryResult =
  { ok: true; beads: ConvoyBeadRecord[]; stopAllLifted?: string[]; changed: string[] } | { ok: false; error: string };

const STOP_ALL_MARK = '(onFailure: stop-all)';

/**
 * Applies a recovery to a copy of the convoy's beads (the update's validator runs it to refuse, the handler and the
 * reopening of an ended convoy to apply). Retried beads become `running` with a `restart` the convoy's loop carries out;
 * skipped beads become `closed` with a `skipped` record. Either way, beads blocked only because of them (their
 * dependents, and with `stop-all` everything held back) go back to `pending`; the failure policy blocks again whatever
 * another failure still blocks. Pure: safe in workflow code and in clients.
 */
export function applyRecovery(state: ConvoyState, recovery: ConvoyRecovery, now: string): RecoveryResult {
  const fail = (error: string): RecoveryResult => ({ ok: false, error });
  if (isTerminalConvoy(state.status) && state.status !== 'failed')
    return fail(`convoy ${state.convoyId} was ${state.status}: it cannot be reopened`);
  if (state.status === 'staged') return fail(`convoy ${state.convoyId} is staged: launch it first`);
  if (state.status === 'landing')
    return fail(
      `convoy ${state.convoyId} is landing: every bead already merged (retry the landing with \`gt convoy land\`)`,
    );
  const beads = state.beads.map((b) => ({ ...b }));
  const find = (id: string) => beads.find((b) => b.id === id || b.beadId === id);
  const broken = (b: ConvoyBeadRecord) => b.status === 'failed' || b.status === 'cancelled';
  let lifted = state.stopAllLifted ? [...state.stopAllLifted] : undefined;
  const changed: string[] = [];

  if (recovery.op === 'resume') {
    const held = beads.filter((b) => b.status === 'blocked' && b.reason?.endsWith(STOP_ALL_MARK));
    if (state.onFailure !== 'stop-all' || held.length === 0)
      return fail(`convoy ${state.convoyId} has no beads held back by onFailure: stop-all; nothing to resume`);
    lifted = [...new Set([...(lifted ?? []), ...beads.filter(broken).map((b) => b.id)])];
    changed.push(...held.map((b) => b.id));
  } else {
    const targets = recovery.ids.length
      ? recovery.ids.map((id) => find(id) ?? id)
      : recovery.op === 'retry'
        ? beads.filter((b) => b.status === 'failed')
        : [];
    if (targets.length === 0) return fail(`convoy ${state.convoyId} has no failed bead to retry`);
    for (const t of targets) {
      if (typeof t === 'string') return fail(`bead '${t}' is not in convoy ${state.convoyId}`);
      if (!broken(t)) {
        const what = t.status === 'closed' ? (t.skipped ? 'skipped' : 'merged') : t.status;
        return fail(
          `bead ${t.id} of convoy ${state.convoyId} is ${what}: only a failed or cancelled bead can be ${recovery.op === 'retry' ? 'retried' : 'skipped'}`,
        );
      }
    }
    for (const t of targets as ConvoyBeadRecord[]) {
      changed.push(t.id);
      if (lifted) lifted = lifted.filter((id) => id !== t.id);
      if (recovery.op === 'retry') {
        Object.assign(t, { status: 'running', startedAt: now, retries: (t.retries ?? 0) + 1 });
        t.restart = { fresh: recovery.fresh, note: recovery.note, by: recovery.by };
        delete t.reason;
        delete t.endedAt;
        delete t.commit;
      } else {
        Object.assign(t, { status: 'closed', endedAt: now, reason: `skipped by ${recovery.by}: ${recovery.reason}` });
        t.skipped = { by: recovery.by, reason: recovery.reason, at: now };
      }
    }
  }
  // Release what was blocked: a blocked bead whose dependencies are no longer broken (nor blocked) goes back to
  // pending, and so do beads stop-all held back (the loop's failure policy blocks again what still must be).
  const byId = new Map(beads.map((b) => [b.id, b] as const));
  for (let again = true; again;) {
    again = false;
    for (const b of beads) {
      if (b.status !== 'blocked') continue;
      const stuck = b.dependsOn.some((d) => {
        const dep = byId.get(d);
        return !dep || broken(dep) || dep.status === 'blocked';
      });
      if (stuck) continue;
      b.status = 'pending';
      delete b.reason;
      again = true;
    }
  }
  return { ok: true, beads, stopAllLifted: lifted, changed };
}

export const CloseRequest = z.strictObject({
  reason: z.string().trim().max(2000, 'reason must be at most 2000 characters').default(''),
  /** Required when beads are still running: they are stopped. */
  force: z.boolean().default(false),
});
export type CloseRequest = z.input<typeof CloseRequest>;

/** One bead of a start batch, as the convoy's start activity reports it. */
export interface StartedBead {
  beadId: string;
  /** `started` now, or found `existing` (a retry of an earlier start); `error` means it could not be started. */
  outcome: 'started' | 'existing' | 'error';
  error?: string;
}
