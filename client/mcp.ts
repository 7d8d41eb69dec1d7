/**
 * `gt mcp`: the town's tools over the Model Context Protocol (stdio), for MCP-capable agent CLIs and for a
 * coordinating agent (a "mayor") that runs the town from a conversation.
 *
 * - Agent tools speak for the run in GT_* (gateway URL, run token, run id) through the agent gateway, exactly as
 *   `gt done` & co. do, so an agent never needs Temporal credentials and can only speak for its own run.
 * - Operator tools go through the same Town operations as the CLI (same validation, same workflow starts).
 * Inside a run (GT_RUN_TOKEN set) only the agent tools of its role are offered by default.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { BeadSpec, BeadStatus } from '../domain/bead';
import { BeadId, ConvoyId, RigName } from '../domain/ids';
import { SA } from '../domain/search-attributes';
import { callGateway } from './commands/agent';
import { connectClient } from './connection';
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
export const defaultToolset = (env: NodeJS.ProcessEnv = process.env): McpToolset => (env.GT_RUN_TOKEN ? 'agent' : 'operator');

const text = (value: unknown): CallToolResult => ({
  content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value, null, 2) }],
});

export function createGtMcpServer(toolset: McpToolset, env: NodeJS.ProcessEnv = process.env): GtMcpServer {
  const server = new McpServer({ name: 'gastown', version: '0.1.0' });
  let inFlight = 0;
  let idle: (() => void)[] = [];
  let town: Promise<{ town: Town; close: () => Promise<void> }> | undefined;

  const getTown = async () => {
    town ??= connectClient().then(({ client, connection }) => ({ town: new Town(client), close: () => connection.close() }));
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
        description: 'Report that this run has finished: commit your work first; the branch then goes to the merge queue. Only the current run of the bead may call it; a repeated call is harmless.',
        inputSchema: { summary: z.string().max(20_000).default('').describe('one line about what was done') },
      },
      ({ summary }) => answer(() => callGateway('/v1/done', { summary })),
    );
  }
  server.registerTool(
    'gt_progress',
    {
      title: 'Report progress',
      description: 'Tell the town what you are doing. Keeps the run from being taken for stalled and shows in `gt bead status`.',
      inputSchema: { message: z.string().max(2000).describe('what you are doing now') },
    },
    ({ message }) => answer(() => callGateway('/v1/progress', { message })),
  );
  server.registerTool(
    'gt_escalate',
    {
      title: 'Ask a human for help',
      description: 'Raise an escalation for this bead when you are blocked (missing access, unclear requirements, broken environment).',
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
  const rows: { beadId: string; rig?: string; status?: string; convoyId?: string; title?: unknown; startTime: string }[] = [];
  for await (const wf of town.client.workflow.list({ query: clauses.join(' AND '), pageSize: filter.limit })) {
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

function registerOperatorTools(server: McpServer, answer: Answer, town: () => Promise<Town>): void {
  const readOnly = { readOnlyHint: true };
  server.registerTool(
    'gt_rig_list',
    { title: 'List rigs', description: 'The rigs (repositories under management) and their configuration.', inputSchema: {}, annotations: readOnly },
    () => answer(async () => (await town()).listRigs()),
  );
  server.registerTool(
    'gt_rig_show',
    { title: 'Show a rig', description: "A rig's configuration: repository, target branch, gates, agent command, policies.", inputSchema: { name: RigName }, annotations: readOnly },
    ({ name }) => answer(async () => (await town()).getRig(name)),
  );
  server.registerTool(
    'gt_sling',
    {
      title: 'Sling a bead',
      description: 'Hand one unit of work (outside any convoy) to a polecat on a rig. Returns the bead id to follow with gt_bead_status.',
      inputSchema: {
        rig: RigName.describe('rig name'),
        title: BeadSpec.shape.title.describe('what to do, in one line'),
        description: BeadSpec.shape.description.describe('details for the agent'),
        acceptance: BeadSpec.shape.acceptance.describe('how to tell it is done'),
        priority: BeadSpec.shape.priority.describe('merge priority, 0 = most urgent … 4'),
        id: BeadId.optional().describe('bead id (default: generated)'),
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
    { title: 'Merge queue', description: "A rig's merge queue: what is merging now, what waits, merged and sent-back counts.", inputSchema: { rig: RigName }, annotations: readOnly },
    ({ rig }) => answer(async () => (await town()).mergeQueue(rig)),
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
      description: 'Mark an escalation as handled, with a note of what was decided.',
      inputSchema: { id: z.string().min(1).max(200), note: z.string().max(20_000).default(''), by: z.string().max(100).default('mcp') },
    },
    ({ id, note, by }) => answer(async () => (await town()).ackEscalation(id, { by, note })),
  );
}
