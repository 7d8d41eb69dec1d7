/**
 * `gt` for agents: only the commands they run inside their runs. scripts/build-agent-cli.ts bundles this into one
 * plain-JavaScript file, so `gt done` starts in bare node (about 70 ms) instead of through the TypeScript loader
 * (about 250 ms, and as much CPU, for every call of every agent); bin/gt uses the bundle while it is current.
 */
import { registerAgentCommands } from './commands/agent';
import { baseProgram, runProgram } from './program';

process.exitCode = await runProgram(() => {
  const program = baseProgram();
  registerAgentCommands(program);
  return Promise.resolve(program);
}, process.argv);
