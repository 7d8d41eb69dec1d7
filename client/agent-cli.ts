/**
 * `gt` for agents: only the commands they run inside their runs. provisioning/cli-bundles.ts bundles this into one
 * plain-JavaScript file, so `gt done` starts in bare node (`gt done --help`: 0.11 s here) instead of through the
 * TypeScript loader (0.25 s, and as much CPU, for every call of every agent); bin/gt uses the bundle while it is current.
 */
import { registerAgentCommands } from './commands/agent';
import { baseProgram, runProgram } from './program';

// No top-level await: the bundle is CommonJS (provisioning/cli-bundles.ts).
void runProgram(() => {
  const program = baseProgram();
  registerAgentCommands(program);
  return Promise.resolve(program);
}, process.argv).then((code) => {
  process.exitCode = code;
});
