/** `gt mcp`: the town's tools for MCP clients, over stdio. */
import type { Command } from 'commander';

export function registerMcpCommand(program: Command): void {
  program
    .command('mcp')
    .description(
      "serve the town's tools over MCP (stdio). Inside a run: the agent's tools (gt_done, gt_progress, gt_checkpoint, gt_inbox, gt_step_done,\n" +
        'gt_escalate; reviewers gt_approve, gt_request_changes). Outside: operator tools (gt_sling, gt_bead_status, gt_bead_list,\n' +
        'gt_nudge, gt_mq, gt_rig_list, gt_rig_show, gt_convoy_start/add_beads/launch/status/list/cancel, gt_escalations, gt_escalation_ack)',
    )
    .option(
      '--tools <set>',
      'agent | operator | all (default: agent inside a run, i.e. when GT_RUN_TOKEN_FILE or GT_RUN_TOKEN is set; operator otherwise)',
    )
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
      // Imported when it runs: the MCP SDK and the tools (the Temporal client among them) would slow `gt mcp --help`.
      const [{ StdioServerTransport }, { createGtMcpServer, defaultToolset, McpToolset }, { parseInput }] =
        await Promise.all([import('@modelcontextprotocol/sdk/server/stdio.js'), import('../mcp'), import('../town')]);
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
