/**
 * Convoys through the Temporal client: read and validate spec files, start (or stage) convoys, edit, launch,
 * follow, cancel and close them. The CLI and the MCP server both go through here, so every entry point
 * rejects the same bad input with the same one-line message, before anything starts.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowHandle,
} from '@temporalio/client';
import { parse as parseYaml } from 'yaml';
import type { BeadState } from '../domain/bead';
import { checkRetryable } from '../activities/bead-retry';
import {
  applyRecovery,
  ConvoyBeadSpec,
  ConvoyRecovery,
  ConvoySpec,
  convoySizeProblem,
  countBeads,
  isTerminalConvoy,
  MAX_CONVOY_TEXT,
  planConvoy,
  beadFormula,
  beadIdProblems,
  type ConvoyBeadRecord,
  type ConvoyCounts,
  type ConvoyBeadSpecInput,
  type ConvoyEditInput,
  type ConvoyOptionsInput,
  type ConvoyRecoveryInput,
  type ConvoyResult,
  type ConvoyState,
  type ConvoyStatus,
  type ResolvedConvoySpec,
} from '../domain/convoy';
import { beadWorkflowId, ConvoyId, convoyWorkflowId } from '../domain/ids';
import {
  beadStateQuery,
  convoyCheckpointQuery,
  convoyStateQuery,
  editConvoyUpdate,
  closeConvoyUpdate,
  launchConvoyUpdate,
  recoverConvoyUpdate,
  retryLandingUpdate,
} from '../domain/messages';
import type { RigConfig } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import { convoyReopenStart, convoyStart } from '../domain/starts';
import { describeZodError } from '../domain/validation';
import type { convoyWorkflow } from '../workflows/convoy';
import { graphOfConvoy, graphOfSpec, type ConvoyGraph } from './convoy-graph';
import { formulaOf, parseInput, UserError, type Town } from './town';

/** Spec files are read whole; this bounds them before parsing (the convoy itself holds at most MAX_CONVOY_TEXT). */
const MAX_SPEC_FILE_BYTES = MAX_CONVOY_TEXT * 2;

export interface ConvoyBeadView extends ConvoyBeadRecord {
  /** The bead's own state (runs, merge requests, commits), for beads that have started. */
  bead?: BeadState;
}

export interface ConvoyStatusView {
  convoy: ConvoyState;
  counts: ConvoyCounts;
  beads: ConvoyBeadView[];
}

export interface ConvoySummary {
  convoyId: string;
  title: string;
  rig: string;
  status: ConvoyStatus;
  mergeMode?: string;
  counts?: ConvoyCounts;
  startedAt: string;
  endedAt?: string;
}

const notFound = (err: unknown) =>
  err instanceof WorkflowNotFoundError || (err instanceof Error && /not found|NOT_FOUND/i.test(err.message));

/** Reads a spec file (YAML, or JSON by extension); malformed files are a one-line UserError naming the file. */
export function readSpecFile(path: string): unknown {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new UserError(`cannot read spec file ${path}: no such file`);
  }
  if (size > MAX_SPEC_FILE_BYTES)
    throw new UserError(`spec file ${path} is ${size} bytes; at most ${MAX_SPEC_FILE_BYTES} are allowed`);
  const text = readFileSync(path, 'utf8');
  try {
    return extname(path).toLowerCase() === '.json'
      ? (JSON.parse(text) as unknown)
      : (parseYaml(text, { maxAliasCount: 100 }) as unknown);
  } catch (err) {
    const what = extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML';
    const detail = (err as Error).message.split('\n')[0]!.replace(/:$/, '');
    throw new UserError(`spec file ${path} is not valid ${what}: ${detail}`);
  }
}

/**
 * The graph of a spec file before launch: the spec is checked as `gt convoy start` checks it, except that the rig
 * is not looked up (no town is needed to draw a plan).
 */
export function graphOfSpecFile(path: string): ConvoyGraph {
  const raw = readSpecFile(path);
  const parsed = ConvoySpec.safeParse(raw);
  if (!parsed.success) throw new UserError(`invalid convoy spec: ${describeZodError(parsed.error)}`);
  return graphOfSpec(parsed.data);
}

/** A convoy id from the title: readable in lists and the Web UI, with a random suffix so titles can repeat. */
export function newConvoyId(title: string): string {
  const slug = title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 24)
    .replace(/-+$/, '');
  return `${slug || 'convoy'}-${randomBytes(2).toString('hex')}`;
}

export class ConvoyClient {
  constructor(readonly town: Town) {}

  private get client() {
    return this.town.client;
  }

  /**
   * Everything checkable before a convoy starts: the spec's shape and sizes, its DAG (duplicates, dangling
   * dependencies, cycles), the bead ids derived from the convoy id, the plan's size in bytes, and that the rig exists.
   */
  async validate(raw: unknown, overrides: { id?: string } = {}): Promise<{ spec: ResolvedConvoySpec; rig: RigConfig }> {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new UserError('invalid convoy spec: expected a mapping with title, rig and beads');
    const withId = { ...(raw as Record<string, unknown>), ...(overrides.id ? { id: overrides.id } : {}) };
    const parsed = ConvoySpec.safeParse(withId);
    if (!parsed.success) throw new UserError(`invalid convoy spec: ${describeZodError(parsed.error)}`);
    const id = parsed.data.id ?? newConvoyId(parsed.data.title);
    const idProblems = beadIdProblems(id, parsed.data.beads);
    if (idProblems.length) throw new UserError(`invalid convoy spec: ${idProblems[0]}`);
    const size = convoySizeProblem(planConvoy({ ...parsed.data, id }, false, new Date().toISOString()));
    if (size) throw new UserError(`invalid convoy spec: ${size}`);
    const rig = await this.town.getRig(parsed.data.rig);
    // Every bead's formula and variables must resolve now, so a bad one starts nothing (the worker resolves them
    // again when each bead starts).
    const checked = new Set<string>();
    for (const b of parsed.data.beads) {
      const choice = beadFormula(parsed.data, b);
      const key = JSON.stringify(choice);
      if (checked.has(key)) continue;
      checked.add(key);
      try {
        formulaOf(rig, choice.formula, choice.vars);
      } catch (err) {
        throw new UserError(`invalid convoy spec: bead '${b.id}': ${(err as Error).message}`);
      }
    }
    return { spec: { ...parsed.data, id }, rig };
  }

  /** Validates, then starts the convoy workflow (staged: plan recorded, nothing dispatched until launch). */
  async start(
    raw: unknown,
    opts: { id?: string; staged?: boolean; options?: ConvoyOptionsInput } = {},
  ): Promise<{ convoyId: string; workflowId: string; spec: ResolvedConvoySpec }> {
    const { spec } = await this.validate(raw, { id: opts.id });
    const workflowId = convoyWorkflowId(spec.id);
    try {
      const start = convoyStart({
        taskQueue: this.town.queue,
        spec,
        staged: opts.staged ?? false,
        options: opts.options ?? {},
      });
      await this.client.workflow.start<typeof convoyWorkflow>(start.workflowType, start.options);
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError)
        throw new UserError(
          `convoy '${spec.id}' already exists (see \`gt convoy status ${spec.id}\`); give the spec another id`,
        );
      throw err;
    }
    return { convoyId: spec.id, workflowId, spec };
  }

  handle(convoyId: string): WorkflowHandle<typeof convoyWorkflow> {
    const parsed = ConvoyId.safeParse(convoyId);
    if (!parsed.success) throw new UserError(`invalid convoy id '${convoyId}': ${describeZodError(parsed.error)}`);
    return this.client.workflow.getHandle<typeof convoyWorkflow>(convoyWorkflowId(parsed.data));
  }

  async state(convoyId: string): Promise<ConvoyState> {
    try {
      return await this.handle(convoyId).query(convoyStateQuery);
    } catch (err) {
      if (notFound(err)) throw new UserError(`unknown convoy '${convoyId}' (see \`gt convoy list\`)`);
      throw err;
    }
  }

  /** The convoy and, for each started bead, the bead's own state (runs, merge request outcomes, commits). */
  async status(convoyId: string): Promise<ConvoyStatusView> {
    const convoy = await this.state(convoyId);
    const started = convoy.beads.filter((b) => b.status !== 'pending' && b.status !== 'blocked' && b.startedAt);
    const states = await this.beadStates(started.map((b) => b.beadId));
    return {
      convoy,
      counts: countBeads(convoy.beads),
      beads: convoy.beads.map((b) => ({ ...b, bead: states.get(b.beadId) })),
    };
  }

  /** Bead states by bead id, 16 queries at a time; a bead that does not answer is left out rather than failing the view. */
  async beadStates(beadIds: readonly string[]): Promise<Map<string, BeadState>> {
    const states = new Map<string, BeadState>();
    for (let i = 0; i < beadIds.length; i += 16) {
      const batch = beadIds.slice(i, i + 16);
      const answers = await Promise.all(
        batch.map((id) =>
          this.client.workflow
            .getHandle(beadWorkflowId(id))
            .query(beadStateQuery)
            .catch(() => undefined),
        ),
      );
      answers.forEach((s, j) => s && states.set(batch[j]!, s));
    }
    return states;
  }

  /** The convoy's graph as it is now (staged, running or ended); nodes link to `uiUrl` when given. */
  async graph(convoyId: string, uiUrl?: string): Promise<ConvoyGraph> {
    const view = await this.status(convoyId);
    const beads = new Map(view.beads.flatMap((b) => (b.bead ? [[b.beadId, b.bead] as const] : [])));
    return graphOfConvoy(view.convoy, beads, {
      ui: uiUrl ? { url: uiUrl, namespace: this.client.options.namespace } : undefined,
    });
  }

  /** Every convoy, newest first: running ones as they are now, ended ones as they ended. */
  async list(): Promise<ConvoySummary[]> {
    const rows: (ConvoySummary & { closedAs?: string })[] = [];
    const seen = new Set<string>();
    for await (const wf of this.client.workflow.list({ query: this.town.scoped(`GtKind = 'convoy'`) })) {
      if (seen.has(wf.workflowId)) continue;
      seen.add(wf.workflowId);
      const memo = (wf.memo ?? {}) as { title?: string; mergeMode?: string };
      rows.push({
        convoyId: wf.workflowId.replace(/^convoy:/, ''),
        title: memo.title ?? '',
        rig: String(wf.typedSearchAttributes.get(SA.rig) ?? ''),
        status:
          (wf.typedSearchAttributes.get(SA.status) as ConvoyStatus | undefined) ??
          (wf.status.name === 'RUNNING' ? 'running' : 'failed'),
        mergeMode: memo.mergeMode,
        startedAt: wf.startTime.toISOString(),
        endedAt: wf.closeTime?.toISOString(),
        closedAs: wf.status.name,
      });
    }
    await Promise.all(
      rows.map(async (row) => {
        const handle = this.client.workflow.getHandle<typeof convoyWorkflow>(convoyWorkflowId(row.convoyId));
        if (row.endedAt) {
          const result = await handle.result().catch(() => undefined);
          if (result) Object.assign(row, { status: result.status, counts: result.counts });
          else row.status = row.closedAs === 'CANCELLED' ? 'cancelled' : 'failed';
          return;
        }
        const state = await handle.query(convoyStateQuery).catch(() => undefined);
        if (state) Object.assign(row, { status: state.status, counts: countBeads(state.beads) });
      }),
    );
    return rows.map(({ closedAs: _closedAs, ...row }) => row).sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  }

  private async update<T>(
    convoyId: string,
    call: (h: WorkflowHandle<typeof convoyWorkflow>) => Promise<T>,
  ): Promise<T> {
    const handle = this.handle(convoyId);
    try {
      return await call(handle);
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) throw new UserError(err.cause?.message ?? err.message);
      if (notFound(err)) {
        const ended = await handle.describe().catch(() => undefined);
        if (ended) throw new UserError(`convoy '${convoyId}' has already ended (${ended.status.name.toLowerCase()})`);
        throw new UserError(`unknown convoy '${convoyId}' (see \`gt convoy list\`)`);
      }
      throw err;
    }
  }

  launch(convoyId: string): Promise<ConvoyState> {
    return this.update(convoyId, (h) => h.executeUpdate(launchConvoyUpdate, { args: [] }));
  }

  edit(convoyId: string, edit: ConvoyEditInput): Promise<ConvoyState> {
    return this.update(convoyId, (h) => h.executeUpdate(editConvoyUpdate, { args: [edit] }));
  }

  /** Adds beads from a list (a spec's `beads:` or a bare list); allowed while staged or running. */
  async addBeads(convoyId: string, raw: unknown): Promise<ConvoyState> {
    const list = Array.isArray(raw) ? raw : (raw as { beads?: unknown } | null)?.beads;
    if (!Array.isArray(list)) throw new UserError('expected a list of beads (or a mapping with `beads:`)');
    const problems = list.map((b, i) => [i, ConvoyBeadSpec.safeParse(b)] as const).filter(([, r]) => !r.success);
    if (problems.length) {
      const [i, r] = problems[0]!;
      throw new UserError(`invalid bead beads.${i}: ${describeZodError(r.error!)}`);
    }
    const beads = list as ConvoyBeadSpecInput[];
    if (beads.some((b) => b.formula !== undefined || b.vars !== undefined)) {
      const rig = await this.town.getRig((await this.state(convoyId)).rig);
      for (const b of beads) {
        try {
          formulaOf(rig, b.formula, b.vars);
        } catch (err) {
          throw new UserError(`invalid bead '${b.id}': ${(err as Error).message}`);
        }
      }
    }
    return this.edit(convoyId, { op: 'add', beads });
  }

  close(convoyId: string, req: { reason?: string; force?: boolean }): Promise<ConvoyState> {
    return this.update(convoyId, (h) =>
      h.executeUpdate(closeConvoyUpdate, { args: [{ reason: req.reason ?? '', force: req.force ?? false }] }),
    );
  }

  retryLanding(convoyId: string): Promise<ConvoyState> {
    return this.update(convoyId, (h) => h.executeUpdate(retryLandingUpdate, { args: [] }));
  }

  /**
   * Retry, skip or resume (domain/convoy.ts applyRecovery). A running convoy takes it as an update (retried beads
   * start from its loop); a convoy that ended `failed` is reopened: a new run of `convoy:<id>` from its last
   * checkpoint with the recovery applied. Checked first (every bead to retry must be retryable), so a refusal
   * changes nothing.
   */
  async recover(convoyId: string, raw: ConvoyRecoveryInput): Promise<{ state: ConvoyState; reopened: boolean }> {
    const recovery = parseInput(ConvoyRecovery, raw, 'convoy recovery');
    const handle = this.handle(convoyId);
    const description = await handle.describe().catch((err: unknown) => {
      if (notFound(err)) throw new UserError(`unknown convoy '${convoyId}' (see \`gt convoy list\`)`);
      throw err;
    });
    const { checkpoint, options } = await handle.query(convoyCheckpointQuery);
    const dry = applyRecovery(checkpoint.state, recovery, new Date().toISOString());
    if (!dry.ok) throw new UserError(dry.error);
    if (recovery.op === 'retry') {
      for (const id of dry.changed) {
        const beadId = checkpoint.state.beads.find((b) => b.id === id)!.beadId;
        const check = await checkRetryable(this.client, beadId);
        if (!check.ok) throw new UserError(check.error);
      }
    }
    const status = description.status.name;
    if (status === 'RUNNING') {
      const state = await this.update(convoyId, (h) => h.executeUpdate(recoverConvoyUpdate, { args: [recovery] }));
      return { state, reopened: false };
    }
    if (status !== 'COMPLETED' || checkpoint.state.status !== 'failed')
      throw new UserError(
        `convoy ${convoyId} ended ${checkpoint.state.status === 'running' ? status.toLowerCase() : checkpoint.state.status}: only a failed convoy can be reopened`,
      );
    const state: ConvoyState = {
      ...checkpoint.state,
      beads: dry.beads,
      stopAllLifted: dry.stopAllLifted,
      status: 'running',
      waitingFor: `reopened by ${recovery.by} (${recovery.op})`,
      reopened: (checkpoint.state.reopened ?? 0) + 1,
    };
    delete state.reason;
    delete state.endedAt;
    try {
      const start = convoyReopenStart({
        taskQueue: description.taskQueue,
        checkpoint: { state, details: checkpoint.details, capacity: checkpoint.capacity },
        options,
        op: recovery.op,
      });
      await this.client.workflow.start<typeof convoyWorkflow>(start.workflowType, start.options);
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      const raced = await this.update(convoyId, (h) => h.executeUpdate(recoverConvoyUpdate, { args: [recovery] }));
      return { state: raced, reopened: false };
    }
    return { state, reopened: true };
  }

  /** Requests cancellation and waits until the convoy has stopped its beads and ended. */
  async cancel(convoyId: string): Promise<ConvoyState> {
    const handle = this.handle(convoyId);
    const description = await handle.describe().catch((err: unknown) => {
      if (notFound(err)) throw new UserError(`unknown convoy '${convoyId}' (see \`gt convoy list\`)`);
      throw err;
    });
    if (description.status.name !== 'RUNNING')
      throw new UserError(`convoy '${convoyId}' has already ended (${description.status.name.toLowerCase()})`);
    await handle.cancel();
    await handle.result().catch(() => undefined);
    return this.state(convoyId);
  }

  /** The convoy's result once it has ended (cancelled convoys end without one: their state says why). */
  async result(convoyId: string): Promise<ConvoyResult | undefined> {
    return this.handle(convoyId)
      .result()
      .catch(() => undefined);
  }

  /** Follows a convoy until it ends, calling `onChange` with each new state; resolves with the final state. */
  async wait(
    convoyId: string,
    onChange: (state: ConvoyState, previous: ConvoyState | undefined, elapsedMs: number) => void,
    pollMs = 1000,
  ): Promise<ConvoyState> {
    const started = Date.now();
    let previous: ConvoyState | undefined;
    let ended = false;
    const result = this.result(convoyId).then(() => void (ended = true));
    for (;;) {
      const state = await this.state(convoyId);
      if (JSON.stringify(state) !== JSON.stringify(previous)) {
        onChange(state, previous, Date.now() - started);
        previous = state;
      }
      if (ended || isTerminalConvoy(state.status)) {
        await result;
        return this.state(convoyId);
      }
      await Promise.race([result, new Promise((r) => setTimeout(r, pollMs))]);
    }
  }
}
