/**
 * `gt mcp`: the town's tools over the Model Context Protocol (stdio), for MCP-capable agent CLIs and for a
 * coordinating agent (a "mayor") that runs the town from a conversation.
 *
 * - Agent tools speak for the run in GT_* (gateway URL, run token, run id) through the agent gateway, exactly as
 *   `gt done` & co. do, so an agent never needs Temporal credentials and can only speak for its own run.
 * - Operator tools go through the same Town operations as the CLI (same validation, same workflow starts).
 * Inside a run (GT_RUN_TOKEN_FILE or GT_RUN_TOKEN set) only the agent tools of its role are offered by default.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import {
  BeadSpec,
  BeadStatus,
  CheckpointRequest,
  HandoffRequest,
  NudgeRequest,
  RetryBeadRequest,
  StepDoneRequest,
} from '../domain/bead';
import { ConvoyBeadSpec, FailurePolicy, MergeMode } from '../domain/convoy';
import { StepId } from '../domain/formula';
import { FormulaName, FormulaVarValues } from '../domain/formula-ref';
import { BeadId, ConvoyId, RigName } from '../domain/ids';
import { SA } from '../domain/search-attributes';
import { retryBead } from './beads';
import { callGateway } from './gateway-client';
import { connectClient } from '../host/connection';
import { ConvoyClient } from './convoys';
import { formulaList, formulaShow, formulaValidate } from './formulas';
import { decideStep } from './steps';
import { ackEscalation } from './escalations';
import { Town, UserError } from './town';

export const McpToolset = z.enum(['agent', 'operator', 'all']);
export type McpToolset = z.infer<typeof McpToolset>;

export interface GtMcpServer {
  server: McpServer;
  /** Resolves once every tool call in flight has answered (so stdin closing never cuts an answer off). */
  drain(): Promise<void>;
  close(): Promise<void>;
}

/** The toolset when none is asked for: inside a run, the agent's; otherwise the operator's. */
export const defaultToolset = (env: NodeJS.ProcessEnv = process.env): McpToolset =>
  env.GT_RUN_TOKEN_FILE || env.GT_RUN_TOKEN ? 'agent' : 'operator';

const text = (value: unknown): CallToolResult => ({
  content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value, null, 2) }],
});

export function createGtMcpServer(toolset: McpToolset, env: NodeJS.ProcessEnv = process.env): GtMcpServer {
  const server = new McpServer({ name: 'gastown', version: '0.1.0' });
  let inFlight = 0;
  let idle: (() => void)[] = [];
  let town: Promise<{ town: Town; close: () => Promise<void> }> | undefined;

  const getTown = async () => {
    town ??= connectClient().then(({ client, connection }) => ({
      town: new Town(client),
      close: () => connection.close(),
    }));
    return (await town).town;
  };

  /** Runs a tool body; a failure becomes an error result with the same one-line reason the CLI prints. */
  const answer = async (body: () => Promise<unknown>): Promise<CallToolResult> => {
    inFlight++;
    try {
      return text(await body());
    } catch (err) {
      const message = err instanceof UserError ? err.message : `${(err as Error).message ?? String(err)}`;
      return { isError: true, content: [{ type: 'text', text: message.split('\n')[0]! }] };
    } finally {
      if (--inFlight === 0) for (const resolve of idle.splice(0)) resolve();
    }
  };

  if (toolset !== 'operator') registerAgentTools(server, answer, env.GT_ROLE);
  if (toolset !== 'agent') registerOperatorTools(server, answer, getTown);

  return {
    server,
    drain: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idle.push(resolve))),
    async close() {
      await server.close();
      if (town) await (await town).close();
      idle = [];
    },
  };
}

type Answer = (body: () => Promise<unknown>) => Promise<CallToolResult>;

function registerAgentTools(server: McpServer, answer: Answer, role: string | undefined): void {
  const polecat = role !== 'reviewer';
  const reviewer = role !== 'polecat';
  if (polecat) {
    server.registerTool(
      'gt_done',
      {
        title: 'Finish this run',
        description:
          'Report that this run has finished: commit your work first; the branch then goes to the merge queue. Only the current run of the bead may call it; a repeated call is harmless.',
        inputSchema: { summary: z.string().max(20_000).default('').describe('one line about what was done') },
      },
      ({ summary }) => answer(() => callGateway('/v1/done', { summary })),
    );
  }
  server.registerTool(
    'gt_progress',
    {
      title: 'Report progress',
      description:
        'Tell the town what you are doing. Keeps the run from being taken for stalled and shows in `gt bead status`.',
      inputSchema: { message: z.string().max(2000).describe('what you are doing now') },
    },
    ({ message }) => answer(() => callGateway('/v1/progress', { message })),
  );
  server.registerTool(
    'gt_checkpoint',
    {
      title: 'Save a checkpoint',
      description:
        'Save a note about where the work stands; if this run ends early, the next run of the bead gets it in its prompt.',
      inputSchema: { note: CheckpointRequest.shape.note.describe('what is done and what is next') },
    },
    ({ note }) => answer(() => callGateway('/v1/checkpoint', { note })),
  );
  if (polecat)
    server.registerTool(
      'gt_handoff',
      {
        title: 'Hand off to a fresh run',
        description:
          'End this run on purpose (e.g. when your context is full): the checkpoint is saved and the next run of the bead ' +
          'starts at once with it in its prompt, without counting as a failed attempt. Stop working after calling it.',
        inputSchema: {
          checkpoint: HandoffRequest.shape.checkpoint.describe('what is done and exactly what the next run should do'),
        },
      },
      ({ checkpoint }) => answer(() => callGateway('/v1/handoff', { checkpoint })),
    );
  if (polecat)
    server.registerTool(
      'gt_step_done',
      {
        title: 'Report a formula step done',
        description:
          'In a formula whose one run walks the steps (session = "single"; your prompt is a checklist): report the next ' +
          'step finished, with its output. Steps are reported in order; after the last, commit and call gt_done.',
        inputSchema: {
          step: StepDoneRequest.shape.stepId.describe('the step id, as the checklist names it'),
          output: StepDoneRequest.shape.output.describe("the step's output: what was done, decided or found"),
        },
      },
      ({ step, output }) => answer(() => callGateway('/v1/step-done', { stepId: step, output })),
    );
  server.registerTool(
    'gt_inbox',
    {
      title: 'Read messages',
      description:
        'Messages operators sent to this bead (gt nudge). Returned messages are marked read unless peek is set.',
      inputSchema: {
        all: z.boolean().default(false).describe('every message, read or not'),
        peek: z.boolean().default(false).describe('do not mark them read'),
      },
      annotations: { readOnlyHint: false },
    },
    ({ all, peek }) => answer(() => callGateway('/v1/inbox', { all, peek })),
  );
  server.registerTool(
    'gt_escalate',
    {
      title: 'Ask a human for help',
      description:
        'Raise an escalation for this bead when you are blocked (missing access, unclear requirements, broken environment).',
      inputSchema: {
        reason: z.string().trim().min(1).max(20_000).describe('what is wrong and what you need'),
        severity: z.enum(['low', 'medium', 'high', 'critical']).default('medium'),
      },
    },
    ({ reason, severity }) => answer(() => callGateway('/v1/escalate', { reason, severity })),
  );
  if (reviewer) {
    server.registerTool(
      'gt_approve',
      {
        title: 'Approve the merge request',
        description: '(reviewer) Approve the merge request under review; it proceeds to the gates and the merge.',
        inputSchema: { feedback: z.string().max(20_000).default('').describe('optional notes') },
      },
      ({ feedback }) => answer(() => callGateway('/v1/review', { verdict: 'approve', feedback })),
    );
    server.registerTool(
      'gt_request_changes',
      {
        title: 'Request changes',
        description: '(reviewer) Send the merge request back to a polecat with feedback saying what must change.',
        inputSchema: { feedback: z.string().trim().min(1).max(20_000).describe('what must change') },
      },
      ({ feedback }) => answer(() => callGateway('/v1/review', { verdict: 'request_changes', feedback })),
    );
  }
}

const BeadListFilter = z.object({
  rig: RigName.optional(),
  status: BeadStatus.optional(),
  convoyId: ConvoyId.optional(),
  limit: z.number().int().min(1).max(500).default(50),
});

/** One row per bead workflow, from the visibility store (search attributes + memo): cheap for many beads. */
async function listBeads(town: Town, filter: z.output<typeof BeadListFilter>) {
  const clauses = [`${SA.kind.name} = 'bead'`];
  if (filter.rig) clauses.push(`${SA.rig.name} = '${filter.rig}'`);
  if (filter.status) clauses.push(`${SA.status.name} = '${filter.status}'`);
  if (filter.convoyId) clauses.push(`${SA.convoyId.name} = '${filter.convoyId}'`);
  const rows: {
    beadId: string;
    rig?: string;
    status?: string;
    convoyId?: string;
    title?: unknown;
    startTime: string;
  }[] = [];
  for await (const wf of town.client.workflow.list({
    query: town.scoped(clauses.join(' AND ')),
    pageSize: filter.limit,
  })) {
    const sa = wf.typedSearchAttributes;
    rows.push({
      beadId: sa.get(SA.beadId) ?? wf.workflowId.replace(/^bead:/, ''),
      rig: sa.get(SA.rig),
      status: sa.get(SA.status),
      convoyId: sa.get(SA.convoyId),
      title: wf.memo?.title,
      startTime: wf.startTime.toISOString(),
    });
    if (rows.length >= filter.limit) break;
  }
  return rows;
}

const ConvoyBeads = z
  .array(ConvoyBeadSpec)
  .min(1)
  .describe(
    'the tasks: id (local to the convoy), title, description, acceptance, priority, dependsOn (ids of beads that must merge first), formula and vars (optional)',
  );

function registerOperatorTools(server: McpServer, answer: Answer, town: () => Promise<Town>): void {
  const readOnly = { readOnlyHint: true };
  const convoys = async () => new ConvoyClient(await town());
  server.registerTool(
    'gt_formula_list',
    {
      title: 'List formulas',
      description:
        "The formulas beads can run (multi-step agent work: plan, implement, review, gates, approvals, parallel legs): built-in, the town's and, with rig, the rig's.",
      inputSchema: { rig: RigName.optional().describe("include this rig's formulas and overlays") },
      annotations: readOnly,
    },
    ({ rig }) => answer(() => Promise.resolve(formulaList({ rig }))),
  );
  server.registerTool(
    'gt_formula_show',
    {
      title: 'Show a formula',
      description: 'A formula: its variables, its steps in the order they run, and whether this version can run it.',
      inputSchema: { name: FormulaName, rig: RigName.optional().describe("with this rig's overlays") },
      annotations: readOnly,
    },
    ({ name, rig }) => answer(() => Promise.resolve(formulaShow(name, { rig }))),
  );
  for (const verdict of ['approve', 'reject'] as const) {
    server.registerTool(
      `gt_step_${verdict}`,
      {
        title: verdict === 'approve' ? 'Approve a formula step' : 'Reject a formula step',
        description:
          verdict === 'approve'
            ? 'Approve the approval step a bead is waiting on (see gt_bead_status); its formula goes on.'
            : 'Reject the approval step a bead is waiting on: the work goes back to the step its loop names, with the note as feedback.',
        inputSchema: {
          beadId: BeadId,
          stepId: StepId,
          note: z.string().max(4000).default('').describe('for the record, or what must change'),
        },
      },
      ({ beadId, stepId, note }) =>
        answer(async () => decideStep(await town(), beadId, { stepId, verdict, note, by: 'mcp' })),
    );
  }
  server.registerTool(
    'gt_formula_validate',
    {
      title: 'Validate a formula file',
      description:
        'Check a formula (.toml) or overlay (.overlay.toml) file on the machine running this server: one line saying what is wrong, if anything.',
      inputSchema: { path: z.string().min(1).max(4096).describe('path of the file') },
      annotations: readOnly,
    },
    ({ path }) => answer(() => Promise.resolve(formulaValidate(path))),
  );
  server.registerTool(
    'gt_rig_list',
    {
      title: 'List rigs',
      description: 'The rigs (repositories under management) and their configuration.',
      inputSchema: {},
      annotations: readOnly,
    },
    () => answer(async () => (await town()).listRigs()),
  );
  server.registerTool(
    'gt_rig_show',
    {
      title: 'Show a rig',
      description: "A rig's configuration: repository, target branch, gates, agent command, policies.",
      inputSchema: { name: RigName },
      annotations: readOnly,
    },
    ({ name }) => answer(async () => (await town()).getRig(name)),
  );
  server.registerTool(
    'gt_sling',
    {
      title: 'Sling a bead',
      description:
        'Hand one unit of work (outside any convoy) to a polecat on a rig. Returns the bead id to follow with gt_bead_status.',
      inputSchema: {
        rig: RigName.describe('rig name'),
        title: BeadSpec.shape.title.describe('what to do, in one line'),
        description: BeadSpec.shape.description.describe('details for the agent'),
        acceptance: BeadSpec.shape.acceptance.describe('how to tell it is done'),
        priority: BeadSpec.shape.priority.describe('merge priority, 0 = most urgent … 4'),
        id: BeadId.optional().describe('bead id (default: generated)'),
        formula: FormulaName.optional().describe(
          "the formula the bead runs (default: the rig's, else work); see gt_formula_list",
        ),
        vars: FormulaVarValues.optional().describe('variables of the formula, name → value'),
      },
    },
    ({ rig, ...bead }) =>
      answer(async () => {
        const { beadId, workflowId } = await (await town()).sling(rig, bead);
        return { beadId, workflowId };
      }),
  );
  server.registerTool(
    'gt_bead_status',
    {
      title: 'Bead status',
      description: "A bead's status, what it waits for, its runs, merge requests and merged commit.",
      inputSchema: { beadId: BeadId },
      annotations: readOnly,
    },
    ({ beadId }) => answer(async () => (await town()).beadState(beadId)),
  );
  server.registerTool(
    'gt_bead_list',
    {
      title: 'List beads',
      description: 'Beads of the town, newest first, optionally filtered by rig, status or convoy.',
      inputSchema: BeadListFilter.shape,
      annotations: readOnly,
    },
    (filter) => answer(async () => listBeads(await town(), BeadListFilter.parse(filter))),
  );
  server.registerTool(
    'gt_mq',
    {
      title: 'Merge queue',
      description: "A rig's merge queue: what is merging now, what waits, merged and sent-back counts.",
      inputSchema: { rig: RigName },
      annotations: readOnly,
    },
    ({ rig }) => answer(async () => (await town()).mergeQueue(rig)),
  );
  server.registerTool(
    'gt_nudge',
    {
      title: 'Message a run',
      description:
        'Send a message to whichever run works on a bead now (and the runs after it); the agent reads it with gt inbox / gt_inbox.',
      inputSchema: {
        beadId: BeadId,
        message: NudgeRequest.shape.message,
        from: z.string().trim().min(1).max(200).default('mayor'),
      },
    },
    ({ beadId, message, from }) => answer(async () => (await town()).nudge(beadId, message, from)),
  );
  server.registerTool(
    'gt_convoy_start',
    {
      title: 'Start a convoy',
      description:
        'Start a convoy: a set of beads on one rig with dependencies (a DAG) that land together. Each bead starts when the beads it depends on have merged. ' +
        'With staged=true nothing starts until gt_convoy_launch (add beads meanwhile with gt_convoy_add_beads). The whole spec is validated first (cycles, unknown dependencies, sizes); nothing starts if it is invalid.',
      inputSchema: {
        title: z.string().describe('what the convoy delivers'),
        rig: RigName.describe('rig name'),
        description: z.string().optional(),
        mergeMode: MergeMode.optional().describe(
          'review-and-merge (each bead merges to the target) or review-then-land (beads merge to a convoy branch that lands at the end)',
        ),
        onFailure: FailurePolicy.optional(),
        maxParallel: z.number().int().min(1).optional().describe('beads in flight at once'),
        formula: FormulaName.optional().describe("the formula of every bead that names none (default: the rig's)"),
        vars: FormulaVarValues.optional().describe('variables of that formula'),
        id: ConvoyId.optional().describe('convoy id (default: from the title)'),
        beads: ConvoyBeads,
        staged: z.boolean().default(false).describe('create it without starting any bead'),
      },
    },
    ({ staged, ...spec }) =>
      answer(async () => {
        const { convoyId, workflowId } = await (await convoys()).start(spec, { staged });
        return { convoyId, workflowId, staged };
      }),
  );
  server.registerTool(
    'gt_convoy_add_beads',
    {
      title: 'Add beads to a convoy',
      description: 'Add beads to a staged or running convoy; dependencies may name beads already in it.',
      inputSchema: { convoyId: ConvoyId, beads: ConvoyBeads },
    },
    ({ convoyId, beads }) => answer(async () => (await convoys()).addBeads(convoyId, beads)),
  );
  server.registerTool(
    'gt_convoy_launch',
    {
      title: 'Launch a staged convoy',
      description: 'Start the beads of a staged convoy whose dependencies allow it.',
      inputSchema: { convoyId: ConvoyId },
    },
    ({ convoyId }) => answer(async () => (await convoys()).launch(convoyId)),
  );
  server.registerTool(
    'gt_convoy_status',
    {
      title: 'Convoy status',
      description: "A convoy's status, counts, and each bead's state (pending, blocked, running, closed, failed).",
      inputSchema: { convoyId: ConvoyId },
      annotations: readOnly,
    },
    ({ convoyId }) => answer(async () => (await convoys()).status(convoyId)),
  );
  server.registerTool(
    'gt_convoy_list',
    {
      title: 'List convoys',
      description: 'Convoys of the town with their status and counts.',
      inputSchema: {},
      annotations: readOnly,
    },
    () => answer(async () => (await convoys()).list()),
  );
  server.registerTool(
    'gt_convoy_cancel',
    {
      title: 'Cancel a convoy',
      description: 'Cancel a running convoy: it stops its beads and ends; returns its final state.',
      inputSchema: { convoyId: ConvoyId },
      annotations: { destructiveHint: true },
    },
    ({ convoyId }) => answer(async () => (await convoys()).cancel(convoyId)),
  );
  server.registerTool(
    'gt_escalations',
    {
      title: 'List escalations',
      description: 'Work that needs a human: failed beads, agents asking for help, tripped breakers.',
      inputSchema: { all: z.boolean().default(false).describe('include acknowledged escalations') },
      annotations: readOnly,
    },
    ({ all }) => answer(async () => (await town()).listEscalations({ all })),
  );
  server.registerTool(
    'gt_escalation_ack',
    {
      title: 'Acknowledge an escalation',
      description:
        'Mark an escalation as handled, with a note of what was decided; optionally act on the work behind it first: retry its bead (or landing), skip its bead in its convoy, or close (reason required).',
      inputSchema: {
        id: z.string().min(1).max(200),
        note: z.string().max(20_000).default(''),
        by: z.string().max(100).default('mcp'),
        action: z.enum(['retry', 'skip', 'close']).optional(),
        reason: z.string().max(2000).optional().describe('why (required with close)'),
        fresh: z.boolean().default(false).describe('with retry: nothing carried from earlier runs'),
      },
    },
    ({ id, note, by, action, reason, fresh }) =>
      answer(async () => ackEscalation(await town(), id, { by, note, action, reason, fresh })),
  );
  server.registerTool(
    'gt_bead_retry',
    {
      title: 'Retry a bead',
      description:
        "Run a failed or cancelled bead again: a new run of the same bead id, carrying its history, feedback and checkpoints unless fresh (a formula bead resumes at the step it stopped at; fresh starts the formula over). A convoy's bead is retried in its convoy's place (the convoy reopens if it had ended failed). Refused for a running or merged bead.",
      inputSchema: {
        beadId: BeadId,
        fresh: RetryBeadRequest.shape.fresh.describe('drop what earlier runs left'),
        note: RetryBeadRequest.shape.note.describe('a note for the new run'),
        by: z.string().trim().min(1).max(200).default('mcp'),
      },
    },
    ({ beadId, fresh, note, by }) => answer(async () => retryBead(await town(), beadId, { fresh, note, by })),
  );
  server.registerTool(
    'gt_convoy_retry',
    {
      title: "Retry a convoy's failed beads",
      description:
        'Retry every failed bead of a convoy (or those named); a convoy that ended failed reopens. Their dependents start when they merge.',
      inputSchema: {
        convoyId: ConvoyId,
        beads: z.array(BeadId).default([]).describe('bead ids as in the spec; empty: every failed bead'),
        fresh: z.boolean().default(false),
        note: z.string().max(4000).default(''),
        by: z.string().trim().min(1).max(200).default('mcp'),
      },
    },
    ({ convoyId, beads, fresh, note, by }) =>
      answer(async () => (await convoys()).recover(convoyId, { op: 'retry', ids: beads, fresh, note, by })),
  );
  server.registerTool(
    'gt_convoy_resume',
    {
      title: 'Resume a convoy after stop-all',
      description:
        'Start again the beads onFailure: stop-all held back (beads depending on a failed bead stay blocked: retry or skip it).',
      inputSchema: { convoyId: ConvoyId, by: z.string().trim().min(1).max(200).default('mcp') },
    },
    ({ convoyId, by }) => answer(async () => (await convoys()).recover(convoyId, { op: 'resume', by })),
  );
  server.registerTool(
    'gt_convoy_skip',
    {
      title: 'Skip a failed bead of a convoy',
      description:
        'The convoy goes on without a failed bead: it counts as done (its dependents start, the convoy can land), nothing of it merges.',
      inputSchema: {
        convoyId: ConvoyId,
        bead: BeadId.describe('bead id as in the spec'),
        reason: z.string().trim().min(1).max(2000),
        by: z.string().trim().min(1).max(200).default('mcp'),
      },
      annotations: { destructiveHint: true },
    },
    ({ convoyId, bead, reason, by }) =>
      answer(async () => (await convoys()).recover(convoyId, { op: 'skip', ids: [bead], reason, by })),
  );
}
