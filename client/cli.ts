/**
 * `gt` — the Gas Town CLI. Operators run the town with it; agents inside a run use `gt done`, `gt progress`,
 * `gt escalate` (through the gateway, with their run token).
 */
import { Command, CommanderError } from 'commander';
import { registerAgentCommands } from './commands/agent';
import { registerCredentialCommands } from './commands/credential';
import { registerRunCommands } from './commands/runs';
import { registerBeadCommands } from './commands/bead';
import { registerConvoyCommands } from './commands/convoy';
import { registerCodecServerCommand } from './commands/codec-server';
import { registerEscalationCommands } from './commands/escalation';
import { registerMcpCommand } from './commands/mcp';
import { registerMqCommands } from './commands/mq';
import { registerRigCommands } from './commands/rig';
import { registerServeCommands } from './commands/serve';
import { UserError } from './town';

export function buildProgram(): Command {
  const program = new Command('gt')
    .description('Gas Town on Temporal: durable orchestration of AI coding agents.\nTemporal connection from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_PROFILE; local state in GT_HOME (~/.gastown).')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerServeCommands(program);
  registerRigCommands(program);
  registerBeadCommands(program);
  registerMqCommands(program);
  registerConvoyCommands(program);
  registerEscalationCommands(program);
  registerRunCommands(program);
  registerCredentialCommands(program);
  registerAgentCommands(program);
  registerMcpCommand(program);
  registerCodecServerCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
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
