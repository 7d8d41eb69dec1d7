/**
 * `gt mcp` through a real MCP client (SDK Client + stdio transport spawning bin/gt mcp): operator tools run the
 * town; an agent inside a run finishes its bead through the agent tools. Real server, worker, git, processes.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, repoRoot, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
const clients: Client[] = [];
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await t?.stop();
});

async function mcpClient(args: string[], env: NodeJS.ProcessEnv): Promise<Client> {
  const client = new Client({ name: 'gt-mcp-test', version: '1.0.0' });
  const stringEnv = Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
  await client.connect(
    new StdioClientTransport({ command: gtBin, args: ['mcp', ...args], env: stringEnv, stderr: 'pipe' }),
  );
  clients.push(client);
  return client;
}

const ToolResult = z.object({
  isError: z.boolean().optional(),
  content: z.array(z.object({ type: z.literal('text'), text: z.string() })).min(1),
});

/** Calls a tool and returns its JSON answer, failing the test with the tool's message if it reported an error. */
async function call<S extends z.ZodType>(
  client: Client,
  name: string,
  args: Record<string, unknown>,
  schema: S,
): Promise<z.output<S>> {
  const result = ToolResult.parse(await client.callTool({ name, arguments: args }));
  if (result.isError) throw new Error(`${name} failed: ${result.content[0]!.text}`);
  return schema.parse(JSON.parse(result.content[0]!.text));
}

async function callError(client: Client, name: string, args: Record<string, unknown>): Promise<string> {
  const result = ToolResult.parse(await client.callTool({ name, arguments: args }));
  expect(result.isError, `${name} should fail`).toBe(true);
  return result.content[0]!.text;
}

const Bead = z.object({
  beadId: z.string(),
  title: z.string(),
  status: z.string(),
  runs: z.array(z.object({ runId: z.string(), summary: z.string().optional(), lastProgress: z.string().optional() })),
});

describe('gt mcp for operators', () => {
  it('lists operator tools only, and runs a bead from sling to merge', async () => {
    const client = await mcpClient([], t.cliEnv());
    const names = (await client.listTools()).tools.map((tool) => tool.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'gt_sling',
        'gt_bead_status',
        'gt_bead_list',
        'gt_nudge',
        'gt_mq',
        'gt_rig_list',
        'gt_rig_show',
        'gt_escalations',
        'gt_escalation_ack',
        'gt_convoy_start',
        'gt_convoy_add_beads',
        'gt_convoy_launch',
        'gt_convoy_status',
        'gt_convoy_list',
        'gt_convoy_cancel',
      ]),
    );
    expect(names).not.toContain('gt_done');

    const repo = await createRepo();
    await t.addRig({ name: 'mcp-ops', repo: repo.origin });
    const rigs = await call(client, 'gt_rig_list', {}, z.array(z.object({ name: z.string(), repo: z.string() })));
    expect(rigs.map((r) => r.name)).toContain('mcp-ops');

    const slung = await call(
      client,
      'gt_sling',
      { rig: 'mcp-ops', title: 'Add a file through MCP', id: 'b-mcp-ops' },
      z.object({ beadId: z.string(), workflowId: z.string() }),
    );
    expect(slung).toEqual({ beadId: 'b-mcp-ops', workflowId: 'bead:b-mcp-ops' });
    const closed = await eventually(
      async () => {
        const s = await call(client, 'gt_bead_status', { beadId: 'b-mcp-ops' }, Bead);
        return ['closed', 'failed'].includes(s.status) ? s : undefined;
      },
      60_000,
      'bead to finish',
    );
    expect(closed.status).toBe('closed');
    expect(closed.title).toBe('Add a file through MCP');

    const listed = await eventually(
      async () => {
        const rows = await call(
          client,
          'gt_bead_list',
          { rig: 'mcp-ops' },
          z.array(z.object({ beadId: z.string(), status: z.string().optional(), title: z.unknown() })),
        );
        return rows.find((r) => r.beadId === 'b-mcp-ops' && r.status === 'closed');
      },
      30_000,
      'bead listed as closed',
    );
    expect(listed.title).toBe('Add a file through MCP');
    const mq = await call(
      client,
      'gt_mq',
      { rig: 'mcp-ops' },
      z.object({ rig: z.string(), merged: z.number(), queue: z.array(z.unknown()) }),
    );
    expect(mq).toMatchObject({ rig: 'mcp-ops', merged: 1, queue: [] });
  });

  it('answers bad requests with the same one-line reasons as the CLI, and starts nothing', async () => {
    const client = await mcpClient([], t.cliEnv());
    expect(await callError(client, 'gt_sling', { rig: 'no-such-rig', title: 'Something' })).toBe(
      "unknown rig 'no-such-rig' (see `gt rig list`, or add it with `gt rig add`)",
    );
    expect(await callError(client, 'gt_sling', { rig: 'mcp-ops', title: '   ' })).toMatch(/title must not be empty/);
    expect(await callError(client, 'gt_bead_status', { beadId: 'no-such-bead' })).toBe("unknown bead 'no-such-bead'");
    expect((await t.client.workflow.count(`GtRig = 'no-such-rig'`)).count).toBe(0);
  });

  it('offers the agent tools but refuses them outside a run', async () => {
    const client = await mcpClient(
      ['--tools', 'agent'],
      t.cliEnv({ GT_RUN_TOKEN: '', GT_RUN_ID: '', GT_GATEWAY_URL: '' }),
    );
    expect((await client.listTools()).tools.map((tool) => tool.name).sort()).toEqual([
      'gt_approve',
      'gt_checkpoint',
      'gt_done',
      'gt_escalate',
      'gt_handoff',
      'gt_inbox',
      'gt_progress',
      'gt_request_changes',
      'gt_step_done',
    ]);
    expect(await callError(client, 'gt_done', { summary: 'x' })).toBe(
      'not inside a Gas Town run: GT_GATEWAY_URL, GT_RUN_TOKEN_FILE (or GT_RUN_TOKEN) and GT_RUN_ID must be set',
    );
  });
});

describe('gt mcp for a coordinating agent', () => {
  it('starts a convoy from a task list with dependencies and follows it until every bead merged', async () => {
    const client = await mcpClient([], t.cliEnv());
    const repo = await createRepo();
    await t.addRig({ name: 'mcp-convoy', repo: repo.origin });
    const started = await call(
      client,
      'gt_convoy_start',
      {
        id: 'mcpc',
        title: 'Two steps',
        rig: 'mcp-convoy',
        beads: [
          { id: 'api', title: 'Add the endpoint' },
          { id: 'ui', title: 'Use the endpoint', dependsOn: ['api'] },
        ],
      },
      z.object({ convoyId: z.string(), staged: z.boolean() }),
    );
    expect(started).toMatchObject({ convoyId: 'mcpc', staged: false });
    const Status = z.object({
      convoy: z.object({ status: z.string() }),
      beads: z.array(z.object({ id: z.string(), status: z.string() })),
    });
    const final = await eventually(
      async () => {
        const s = await call(client, 'gt_convoy_status', { convoyId: 'mcpc' }, Status);
        return ['landed', 'failed', 'cancelled', 'closed'].includes(s.convoy.status) ? s : undefined;
      },
      90_000,
      'convoy to end',
    );
    expect(final.convoy.status).toBe('landed');
    expect(final.beads.map((b) => [b.id, b.status])).toEqual([
      ['api', 'closed'],
      ['ui', 'closed'],
    ]);
    const listed = await call(
      client,
      'gt_convoy_list',
      {},
      z.array(z.object({ convoyId: z.string(), status: z.string() })),
    );
    expect(listed).toContainEqual(expect.objectContaining({ convoyId: 'mcpc', status: 'landed' }));
  });

  it('rejects a cyclic task list before anything starts', async () => {
    const client = await mcpClient([], t.cliEnv());
    const message = await callError(client, 'gt_convoy_start', {
      id: 'mcp-cycle',
      title: 'Cycle',
      rig: 'mcp-convoy',
      beads: [
        { id: 'a', title: 'A', dependsOn: ['b'] },
        { id: 'b', title: 'B', dependsOn: ['a'] },
      ],
    });
    expect(message).toMatch(/cycle/i);
    expect((await t.client.workflow.count(`GtConvoyId = 'mcp-cycle'`)).count).toBe(0);
  });

  it('sends a message to the run working on a bead', async () => {
    const client = await mcpClient([], t.cliEnv());
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-mcp-nudge-'));
    await t.addRig({
      name: 'mcp-nudge',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: testDir },
    });
    await t.town.sling('mcp-nudge', { id: 'b-mcp-nudge', title: 'Wait for a message' });
    const sent = await call(
      client,
      'gt_nudge',
      { beadId: 'b-mcp-nudge', message: 'please also update the docs' },
      z.object({ seq: z.number(), from: z.string(), message: z.string() }),
    );
    expect(sent).toMatchObject({ from: 'mayor', message: 'please also update the docs' });
    const state = await call(
      client,
      'gt_bead_status',
      { beadId: 'b-mcp-nudge' },
      z.object({ inbox: z.array(z.object({ message: z.string() })) }),
    );
    expect(state.inbox.map((m) => m.message)).toEqual(['please also update the docs']);
    writeFileSync(join(testDir, 'release'), '');
  });
});

describe('gt mcp inside a run', () => {
  it('gives a polecat its tools, and its gt_done through MCP finishes the bead it belongs to', async () => {
    const repo = await createRepo();
    const testDir = mkdtempSync(join(tmpdir(), 'gt-mcp-agent-'));
    const agent = `node --import ${join(repoRoot, 'node_modules/tsx/dist/loader.mjs')} ${join(repoRoot, 'test/agents/mcp-done.ts')}`;
    await t.addRig({ name: 'mcp-agent', repo: repo.origin, agent, env: { TEST_DIR: testDir } });
    const { handle } = await t.town.sling('mcp-agent', { id: 'b-mcp-agent', title: 'Finish through MCP' });
    const result = await handle.result();
    expect(result.status).toBe('closed');

    expect(JSON.parse(readFileSync(join(testDir, 'tools.json'), 'utf8'))).toEqual([
      'gt_checkpoint',
      'gt_done',
      'gt_escalate',
      'gt_handoff',
      'gt_inbox',
      'gt_progress',
      'gt_step_done',
    ]);
    const answers = z
      .object({ progress: ToolResult, checkpoint: ToolResult, inbox: ToolResult, done: ToolResult })
      .parse(JSON.parse(readFileSync(join(testDir, 'answers.json'), 'utf8')));
    for (const [tool, answer] of Object.entries(answers))
      expect(answer.isError, `${tool}: ${answer.content[0]!.text}`).toBeFalsy();
    expect(JSON.parse(answers.inbox.content[0]!.text)).toMatchObject({ runId: 'b-mcp-agent/r1/a1', messages: [] });
    expect(answers.done.content[0]!.text).toMatch(/done recorded/);
    const state = await t.town.beadState('b-mcp-agent');
    expect(state.runs).toEqual([
      expect.objectContaining({
        runId: 'b-mcp-agent/r1/a1',
        outcome: 'done',
        summary: 'finished via MCP',
        lastProgress: 'committed; finishing via mcp',
      }),
    ]);
    expect(state.checkpoints).toEqual([
      expect.objectContaining({ runId: 'b-mcp-agent/r1/a1', note: 'file committed, calling gt_done next' }),
    ]);
    expect(await repo.show('work/b-mcp-agent.txt')).toBe('done by b-mcp-agent/r1/a1 via mcp\n');
  });
});
