/**
 * `gt` — the Gas Town CLI. Operators run the town with it; agents inside a run use `gt done`, `gt progress`,
 * `gt escalate` (through the gateway, with their run token).
 */
import type { Command } from 'commander';
import { AGENT_COMMANDS, baseProgram, runProgram } from './program';

export async function buildProgram(argv: string[] = process.argv): Promise<Command> {
  const program = baseProgram();
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
  (await import('./commands/image')).registerImageCommands(program);
  (await import('./commands/status')).registerStatusCommand(program);
  return program;
}

export const main = (argv: string[]): Promise<number> => runProgram(() => buildProgram(argv), argv);

process.exitCode = await main(process.argv);
