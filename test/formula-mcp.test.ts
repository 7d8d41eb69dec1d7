/**
 * Issue 15: the MCP equivalents of the formula commands, through a real MCP client spawning `gt mcp` against a real
 * town: list and validate formulas, sling a bead with a formula (a bad variable refused with the CLI's one line,
 * nothing started), and approve its approval step.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { beadExists } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, gtBin, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
let mcp: Client;
beforeAll(async () => {
  t = await startTestTown();
  mcp = new Client({ name: 'gt-formula-mcp-test', version: '1.0.0' });
  const env = Object.fromEntries(
    Object.entries(t.cliEnv()).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
  await mcp.connect(new StdioClientTransport({ command: gtBin, args: ['mcp'], env, stderr: 'pipe' }));
});
afterAll(async () => {
  await mcp?.close();
  await t?.stop();
});

const ToolResult = z.object({
  isError: z.boolean().optional(),
  content: z.array(z.object({ type: z.literal('text'), text: z.string() })).min(1),
});
const call = async (name: string, args: Record<string, unknown>) => {
  const r = ToolResult.parse(await mcp.callTool({ name, arguments: args }));
  return { error: r.isError === true, text: r.content[0]!.text };
};

describe('formula tools over MCP', () => {
  it('list, validate, sling with a formula and approve its step', async () => {
    const tools = (await mcp.listTools()).tools.map((x) => x.name);
    for (const name of [
      'gt_formula_list',
      'gt_formula_show',
      'gt_formula_validate',
      'gt_step_approve',
      'gt_step_reject',
    ])
      expect(tools).toContain(name);
    const list = await call('gt_formula_list', {});
    expect((JSON.parse(list.text) as { name: string }[]).map((f) => f.name)).toEqual([
      'careful',
      'explore',
      'review-only',
      'work',
    ]);
    const bad = join(mkdtempSync(join(tmpdir(), 'gt-formula-mcp-')), 'bad.toml');
    writeFileSync(
      bad,
      `name = "b"\nversion = 1\n[[steps]]\nid = "a"\ntitle = "a"\nkind = "agent"\nprompt = "{{vars.x}}"\n`,
    );
    expect(await call('gt_formula_validate', { path: bad })).toEqual({
      error: true,
      text: `${bad}: step 'a': the prompt refers to unknown variable 'x' (declare it under [vars.x])`,
    });

    const repo = await createRepo();
    const marks = mkdtempSync(join(tmpdir(), 'gt-formula-marks-'));
    await t.addRig({
      name: 'fmcp',
      repo: repo.origin,
      agent: agentScript('formula-step'),
      env: { FORMULA_MARKS: marks },
    });
    expect(
      await call('gt_sling', {
        rig: 'fmcp',
        title: 'T',
        id: 'fmcp-bad',
        formula: 'review-only',
        vars: { colour: 'red' },
      }),
    ).toEqual({ error: true, text: "formula review-only has no variable 'colour' (it has: report)" });
    expect(await beadExists(t.client, 'fmcp-bad')).toBe(false);

    const slung = await call('gt_sling', { rig: 'fmcp', title: 'Review it', id: 'fmcp-1', formula: 'review-only' });
    expect(slung.error).toBe(false);
    await eventually(
      async () => (await t.town.beadState('fmcp-1')).steps?.find((s) => s.id === 'accept')?.state === 'waiting',
      90_000,
      'waiting for approval',
    );
    const approved = await call('gt_step_approve', { beadId: 'fmcp-1', stepId: 'accept', note: 'fine' });
    expect(approved.error).toBe(false);
    expect(JSON.parse(approved.text)).toMatchObject({ id: 'accept' });
    expect((await t.town.beadResult('fmcp-1')).status).toBe('closed');
    expect((await t.town.beadState('fmcp-1')).steps!.at(-1)).toMatchObject({
      state: 'done',
      output: 'approved by mcp: fine',
    });
  }, 240_000);
});
