/**
 * `gt` — the Gas Town CLI. Operators run the town with it; agents inside a run use `gt done`, `gt progress`,
 * `gt escalate` (through the gateway, with their run token).
 */
import { Command, CommanderError } from 'commander';
import { UserError } from './errors';

/** Commands agents run from inside their runs, often: they load only the gateway client, so they start fast. */
const AGENT_COMMANDS = new Set(['done', 'progress', 'checkpoint', 'inbox', 'escalate', 'approve', 'request-changes']);

export async function buildProgram(argv: string[] = process.argv): Promise<Command> {
  const program = new Command('gt')
    .description('Gas Town on Temporal: durable orchestration of AI coding agents.\nTemporal connection from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_PROFILE; local state in GT_HOME (~/.gastown).')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  if (AGENT_COMMANDS.has(argv[2] ?? '')) {
    (await import('./commands/agent')).registerAgentCommands(program);
    return program;
  }
  const [serve, rig, bead, mq, convoy, escalation, runs, credential, agent, mcp, codecServer] = await Promise.all([
    import('./commands/serve'),
    import('./commands/rig'),
    import('./commands/bead'),
    import('./commands/mq'),
    import('./commands/convoy'),
    import('./commands/escalation'),
    import('./commands/runs'),
    import('./commands/credential'),
    import('./commands/agent'),
    import('./commands/mcp'),
    import('./commands/codec-server'),
  ]);
  serve.registerServeCommands(program);
  rig.registerRigCommands(program);
  bead.registerBeadCommands(program);
  mq.registerMqCommands(program);
  convoy.registerConvoyCommands(program);
  escalation.registerEscalationCommands(program);
  runs.registerRunCommands(program);
  credential.registerCredentialCommands(program);
  agent.registerAgentCommands(program);
  mcp.registerMcpCommand(program);
  codecServer.registerCodecServerCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    const message = err instanceof UserError ? err.message : `${(err as Error).message ?? String(err)}`;
    process.stderr.write(`gt: ${message.split('\n')[0]}\n`);
    if (!(err instanceof UserError) && process.env.GT_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
