/** `gt mcp`: the town's tools for MCP clients, over stdio. */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Command } from 'commander';
import { createGtMcpServer, defaultToolset, McpToolset } from '../mcp';
import { parseInput } from '../town';

export function registerMcpCommand(program: Command): void {
  program
    .command('mcp')
    .description('serve the town\'s tools over MCP (stdio): agent tools (gt_done, gt_progress, gt_escalate, gt_approve,\ngt_request_changes) inside a run, operator tools (gt_sling, gt_bead_status, gt_bead_list, gt_mq, gt_rig_list, …) outside')
    .option('--tools <set>', 'agent | operator | all (default: agent inside a run, i.e. when GT_RUN_TOKEN is set; operator otherwise)')
    .addHelpText(
      'after',
      [
        '',
        'Register it with an MCP-capable agent CLI, e.g. a JSON config entry:',
        '  { "mcpServers": { "gastown": { "command": "gt", "args": ["mcp"] } } }',
        'Agents get `gt` on PATH and their GT_* run variables, which the agent tools use.',
      ].join('\n'),
    )
    .action(async (o: { tools?: string }) => {
      const toolset = parseInput(McpToolset, o.tools ?? defaultToolset(), '--tools');
      // stdout carries the protocol: anything else printed there would corrupt it.
      console.log = console.error;
      const mcp = createGtMcpServer(toolset);
      const closed = new Promise<void>((resolve) => process.stdin.once('end', resolve).once('close', resolve));
      await mcp.server.connect(new StdioServerTransport());
      await closed;
      await mcp.drain();
      await mcp.close();
    });
}
