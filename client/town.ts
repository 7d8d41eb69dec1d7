/**
 * Operations on a town through the Temporal client: the one place the CLI, the demo, the MCP server and the
 * tests go through, so every entry point validates the same way and starts workflows the same way.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Client,
  type WorkflowHandle,
} from '@temporalio/client';
import { z } from 'zod';
import { BeadSpec, type BeadState } from '../domain/bead';
import {
  ackEscalationUpdate,
  type AckRequest,
  EscalationId,
  escalationStateQuery,
  escalationWorkflowId,
  type EscalationState,
} from '../domain/escalation';
import { BeadId, beadWorkflowId, refineryWorkflowId } from '../domain/ids';
import { beadStateQuery, refineryStateQuery, rigConfigQuery, updateRigUpdate } from '../domain/messages';
import type { RefineryState } from '../domain/refinery';
import { RigConfig, type RigConfigInput } from '../domain/rig';
import { beadStart, dispatchGateStart, refineryStart } from '../domain/starts';
import { taskQueue } from '../host/connection';
import { parseOr } from '../domain/validation';
import type { BeadResult } from '../domain/bead';
import type { beadWorkflow } from '../workflows/bead';
import type { dispatchGateWorkflow } from '../workflows/dispatch-gate';
import {
  dispatchGateWorkflowId,
  dispatchStateQuery,
  gateSettingsOf,
  pauseDispatchUpdate,
  PauseRequest,
  resumeDispatchUpdate,
  ResumeRequest,
  rigChangedSignal,
  type DispatchGateState,
} from '../domain/dispatch';
import { NudgeRequest, type InboxMessage } from '../domain/bead';
import { nudgeUpdate } from '../domain/messages';
import type { refineryWorkflow } from '../workflows/refinery';

import { FormulaError, formulaForBead } from '../activities/formulas';
import { localRepositoryProblem } from '../activities/git';
import type { ResolvedFormula } from '../domain/formula';
import { UserError } from './errors';

export { UserError };

/** A CLI/MCP input parsed, or refused with a UserError saying what was wrong (domain/validation.ts). */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  return parseOr(schema, value, (problem) => new UserError(`invalid ${what}: ${problem}`));
}

/** The formula of a bead on `rig` (activities/formulas.ts), its one-line refusal as a UserError. */
export function formulaOf(...args: Parameters<typeof formulaForBead>): ResolvedFormula {
  try {
    return formulaForBead(...args);
  } catch (err) {
    if (err instanceof FormulaError) throw new UserError(err.message);
    throw err;
  }
}

const notFound = (err: unknown) =>
  err instanceof WorkflowNotFoundError || (err instanceof Error && /not found|NOT_FOUND/i.test(err.message));

export class Town {
  constructor(
    readonly client: Client,
    readonly queue = taskQueue(),
  ) {}

  /**
   * A visibility query limited to this town. A town is its task queue: several towns (or test runs) may share a
   * namespace, and querying another town's workflows would block on queries no worker of ours can answer.
   */
  scoped(query: string): string {
    return `(${query}) AND TaskQueue = '${this.queue.replace(/'/g, "\\'")}'`;
  }

  // --- rigs ---

  async addRig(input: RigConfigInput): Promise<RigConfig> {
    const repo = input.repo && !/^[a-z+]+:\/\/|^[^/]+@[^:]+:/.test(input.repo) ? resolve(input.repo) : input.repo;
    const rig = parseInput(RigConfig, { ...input, repo }, 'rig');
    // The rig's default formula must resolve (with its variables) before the rig exists, as at every sling.
    if (rig.formula) formulaOf(rig, undefined, undefined);
    if (isAbsolute(rig.repo)) {
      if (!existsSync(rig.repo)) throw new UserError(`repository ${rig.repo} does not exist`);
      const problem = await localRepositoryProblem(rig.repo, rig.branch);
      if (problem) throw new UserError(problem);
    }
    try {
      const start = refineryStart({ taskQueue: this.queue, input: { rig } });
      await this.client.workflow.start<typeof refineryWorkflow>(start.workflowType, start.options);
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError)
        throw new UserError(`rig '${rig.name}' already exists (see \`gt rig show ${rig.name}\`)`);
      throw err;
    }
    return rig;
  }

  async getRig(name: string): Promise<RigConfig> {
    const handle = this.client.workflow.getHandle(refineryWorkflowId(name));
    try {
      // A removed rig's refinery has ended but still answers queries: only a running one is a rig.
      const [description, rig] = await Promise.all([handle.describe(), handle.query(rigConfigQuery)]);
      if (description.status.name !== 'RUNNING')
        throw new UserError(`unknown rig '${name}': it was removed (add it again with \`gt rig add\`)`);
      return rig;
    } catch (err) {
      if (notFound(err))
        throw new UserError(`unknown rig '${name}' (see \`gt rig list\`, or add it with \`gt rig add\`)`);
      throw err;
    }
  }

  /**
   * Changes a rig's settings (name, repository and target branch stay: they are what the rig is). The refinery
   * keeps the new configuration; beads slung from now on and every later merge use it, and work already slung follows
   * its capacity, breaker, reviewer and pull-request settings (docs/operations.md says which settings are fixed at
   * sling time): the rig's dispatch gate is told here and reads the new configuration from the refinery.
   */
  async updateRig(name: string, patch: Partial<RigConfigInput>): Promise<RigConfig> {
    const current = await this.getRig(name);
    if (
      (patch.repo !== undefined && patch.repo !== current.repo) ||
      (patch.branch !== undefined && patch.branch !== current.branch)
    ) {
      throw new UserError(
        `a rig's repository and target branch cannot change; add another rig for ${patch.repo ?? current.repo} → ${patch.branch ?? current.branch}`,
      );
    }
    // Variables belong to the formula they were given for: a new default formula starts from none of the old ones.
    if (patch.formula !== undefined && patch.formula !== current.formula && patch.formulaVars === undefined)
      patch = { ...patch, formulaVars: {} };
    const next = parseInput(RigConfig, { ...current, ...patch, name }, 'rig update');
    if (patch.formula !== undefined || patch.formulaVars !== undefined) formulaOf(next, undefined, undefined);
    let updated: RigConfig;
    try {
      updated = await this.client.workflow
        .getHandle(refineryWorkflowId(name))
        .executeUpdate(updateRigUpdate, { args: [patch] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) throw new UserError(err.cause?.message ?? err.message);
      throw err;
    }
    // A rig without a gate yet has nothing to tell: its gate reads the configuration when it starts.
    await this.client.workflow
      .getHandle(dispatchGateWorkflowId(name))
      .signal(rigChangedSignal)
      .catch((err: unknown) => {
        if (!notFound(err)) throw err;
      });
    return updated;
  }

  async listRigs(): Promise<RigConfig[]> {
    const names: string[] = [];
    for await (const wf of this.client.workflow.list({
      query: this.scoped(`WorkflowType = 'refineryWorkflow' AND ExecutionStatus = 'Running'`),
    })) {
      names.push(wf.workflowId.replace(/^refinery:/, ''));
    }
    const rigs = await Promise.all([...new Set(names)].map((n) => this.getRig(n).catch(() => undefined)));
    return rigs.filter((r): r is RigConfig => !!r).sort((a, b) => a.name.localeCompare(b.name));
  }

  async mergeQueue(rig: string): Promise<RefineryState> {
    await this.getRig(rig);
    return this.client.workflow.getHandle(refineryWorkflowId(rig)).query(refineryStateQuery);
  }

  // --- beads ---

  newBeadId(rig: string): string {
    return `${rig.slice(0, 20)}-${randomBytes(4).toString('hex').slice(0, 6)}`.toLowerCase();
  }

  /**
   * Starts one bead outside any convoy. Its formula (`formula`, else the rig's, else `work`) is resolved here, with the
   * town's and the rig's overlays and the variables (`vars` over the rig's `formulaVars`): a bad formula or variable
   * is refused in one line before anything starts.
   */
  async sling(
    rigName: string,
    bead: {
      id?: string;
      title: string;
      description?: string;
      acceptance?: string;
      priority?: number;
      formula?: string;
      vars?: Record<string, string>;
    },
  ): Promise<{ beadId: string; workflowId: string; handle: WorkflowHandle<typeof beadWorkflow> }> {
    const { formula: formulaName, vars, ...fields } = bead;
    const spec = parseInput(BeadSpec, { ...fields, id: bead.id ?? this.newBeadId(rigName) }, 'bead');
    const rig = await this.getRig(rigName);
    const formula = formulaOf(rig, formulaName, vars);
    try {
      const start = beadStart({ taskQueue: this.queue, input: { bead: spec, rig, formula } });
      const handle = await this.client.workflow.start<typeof beadWorkflow>(start.workflowType, start.options);
      return { beadId: spec.id, workflowId: start.options.workflowId, handle };
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) throw new UserError(`bead '${spec.id}' already exists`);
      throw err;
    }
  }

  beadHandle(beadId: string) {
    return this.client.workflow.getHandle<typeof beadWorkflow>(beadWorkflowId(parseInput(BeadId, beadId, 'bead id')));
  }

  async beadState(beadId: string): Promise<BeadState> {
    try {
      return await this.beadHandle(beadId).query(beadStateQuery);
    } catch (err) {
      if (notFound(err)) throw new UserError(`unknown bead '${beadId}'`);
      throw err;
    }
  }

  async beadResult(beadId: string): Promise<BeadResult> {
    return this.beadHandle(beadId).result();
  }

  // --- talking to runs, dispatch ---

  /** Sends a message to the bead's current (and later) runs; the agent reads it with `gt inbox`. */
  async nudge(beadId: string, message: string, from = 'operator'): Promise<InboxMessage> {
    const req = parseInput(NudgeRequest, { message, from }, 'nudge');
    try {
      return await this.beadHandle(beadId).executeUpdate(nudgeUpdate, { args: [req] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) throw new UserError(err.cause?.message ?? err.message);
      if (notFound(err)) {
        const finished = await this.beadState(beadId);
        throw new UserError(`bead ${beadId} is ${finished.status}: no run will read the message`);
      }
      throw err;
    }
  }

  /** The rig's dispatch gate, started with the rig's settings if it is not running yet. */
  private async dispatchGate(rigName: string) {
    const rig = await this.getRig(rigName);
    const start = dispatchGateStart({ taskQueue: this.queue, input: { rig: rig.name, settings: gateSettingsOf(rig) } });
    return this.client.workflow.start<typeof dispatchGateWorkflow>(start.workflowType, start.options);
  }

  async pauseRig(rig: string, reason?: string, by?: string): Promise<DispatchGateState> {
    const req = parseInput(PauseRequest, { reason, by }, 'pause');
    return (await this.dispatchGate(rig)).executeUpdate(pauseDispatchUpdate, { args: [req] });
  }

  /** Lifts an operator pause and closes a tripped breaker. */
  async resumeRig(rig: string, by?: string): Promise<DispatchGateState> {
    const req = parseInput(ResumeRequest, { by }, 'resume');
    return (await this.dispatchGate(rig)).executeUpdate(resumeDispatchUpdate, { args: [req] });
  }

  async dispatchState(rig: string): Promise<DispatchGateState> {
    return (await this.dispatchGate(rig)).query(dispatchStateQuery);
  }

  // --- escalations ---

  async listEscalations(options: { all?: boolean } = {}): Promise<EscalationState[]> {
    const query = `GtKind = 'escalation'${options.all ? '' : ` AND GtStatus = 'open'`}`;
    const ids: string[] = [];
    for await (const wf of this.client.workflow.list({ query: this.scoped(query) })) ids.push(wf.workflowId);
    const states = await Promise.all(
      [...new Set(ids)].map((id) =>
        this.client.workflow
          .getHandle(id)
          .query(escalationStateQuery)
          .catch(() => undefined),
      ),
    );
    return states.filter((s): s is EscalationState => !!s).sort((a, b) => a.raisedAt.localeCompare(b.raisedAt));
  }

  /** Acknowledges only; `ackEscalation` in client/escalations.ts also acts on the work behind it (--retry & co.). */
  async ackEscalation(id: string, ack: AckRequest = {}): Promise<EscalationState> {
    const handle = this.client.workflow.getHandle(escalationWorkflowId(parseInput(EscalationId, id, 'escalation id')));
    try {
      return await handle.executeUpdate(ackEscalationUpdate, { args: [ack] });
    } catch (err) {
      if (notFound(err)) {
        const closed = await handle.query(escalationStateQuery).catch(() => undefined);
        if (closed?.status === 'acknowledged') return closed;
        throw new UserError(`unknown escalation '${id}' (see \`gt escalations\`)`);
      }
      throw err;
    }
  }
}
