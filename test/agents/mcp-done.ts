/**
 * Scripted polecat that finishes through MCP, as an MCP-capable agent CLI does: it commits its work, then calls
 * the gt_progress, gt_checkpoint, gt_inbox and gt_done tools of `gt mcp` (found on PATH, speaking for this run through GT_*).
 * Records the tools it was offered and the answers in $TEST_DIR.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const { GT_BEAD_ID: beadId, GT_RUN_ID: runId, TEST_DIR: testDir } = process.env;
if (!beadId || !runId || !testDir) throw new Error('mcp-done runs inside a Gas Town run with TEST_DIR set');

mkdirSync('work', { recursive: true });
writeFileSync(join('work', `${beadId}.txt`), `done by ${runId} via mcp\n`);
execFileSync('git', ['add', '-A']);
execFileSync('git', [
  '-c',
  'user.name=Polecat',
  '-c',
  'user.email=polecat@test',
  'commit',
  '-q',
  '-m',
  `work for ${beadId}`,
]);

const env = Object.fromEntries(
  Object.entries(process.env).filter((e): e is [string, string] => typeof e[1] === 'string'),
);
const client = new Client({ name: 'scripted-mcp-agent', version: '1.0.0' });
await client.connect(new StdioClientTransport({ command: 'gt', args: ['mcp'], env, stderr: 'inherit' }));
const { tools } = await client.listTools();
writeFileSync(join(testDir, 'tools.json'), JSON.stringify(tools.map((t) => t.name).sort()));
const progress = await client.callTool({ name: 'gt_progress', arguments: { message: 'committed; finishing via mcp' } });
const checkpoint = await client.callTool({
  name: 'gt_checkpoint',
  arguments: { note: 'file committed, calling gt_done next' },
});
const inbox = await client.callTool({ name: 'gt_inbox', arguments: { peek: true } });
const done = await client.callTool({ name: 'gt_done', arguments: { summary: 'finished via MCP' } });
writeFileSync(join(testDir, 'answers.json'), JSON.stringify({ progress, checkpoint, inbox, done }));
await client.close();
process.exitCode = done.isError ? 1 : 0;
