/**
 * `gt` — the Gas Town CLI. Operators run the town with it; agents inside a run use `gt done`, `gt progress`,
 * `gt escalate` (through the gateway, with their run token).
 *
 * Start-up cost is what a command imports, so a command loads only its own group's module (each is a chunk of its
 * own in dist/gt-cli, see provisioning/cli-bundles.ts); `--version` loads none; help, `gt help …` and unknown commands
 * load every group so they list everything. Groups register in the order `gt --help` lists them. A group's module
 * loads no package but zod: what its commands run (the Temporal client above all) is imported by their actions, so
 * help and argument errors never wait for it (test/cli-bundle.test.ts).
 */
import type { Command } from 'commander';
import { AGENT_COMMANDS, baseProgram, runProgram } from './program';

type Register = (program: Command) => void;

/** Each group with the top-level commands it registers (test/cli-bundle.test.ts finds every command of `gt --help` through it). */
const GROUPS: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['up', 'worker'], load: async () => (await import('./commands/serve')).registerServeCommands },
  { commands: ['rig'], load: async () => (await import('./commands/rig')).registerRigCommands },
  { commands: ['sling', 'bead'], load: async () => (await import('./commands/bead')).registerBeadCommands },
  { commands: ['formula'], load: async () => (await import('./commands/formula')).registerFormulaCommands },
  { commands: ['step'], load: async () => (await import('./commands/formula')).registerStepCommands },
  { commands: ['mq'], load: async () => (await import('./commands/mq')).registerMqCommands },
  { commands: ['convoy'], load: async () => (await import('./commands/convoy')).registerConvoyCommands },
  {
    commands: ['escalations', 'escalation'],
    load: async () => (await import('./commands/escalation')).registerEscalationCommands,
  },
  { commands: ['logs', 'nudge'], load: async () => (await import('./commands/runs')).registerRunCommands },
  { commands: ['credential'], load: async () => (await import('./commands/credential')).registerCredentialCommands },
  { commands: [...AGENT_COMMANDS], load: async () => (await import('./commands/agent')).registerAgentCommands },
  { commands: ['mcp'], load: async () => (await import('./commands/mcp')).registerMcpCommand },
  {
    commands: ['codec-server'],
    load: async () => (await import('./commands/codec-server')).registerCodecServerCommand,
  },
  { commands: ['image'], load: async () => (await import('./commands/image')).registerImageCommands },
  { commands: ['status'], load: async () => (await import('./commands/status')).registerStatusCommand },
];

export async function buildProgram(argv: string[] = process.argv): Promise<Command> {
  const program = baseProgram();
  const first = argv[2] ?? '';
  if (first === '--version' || first === '-V') return program;
  const own = GROUPS.find((g) => g.commands.includes(first));
  for (const register of await Promise.all((own ? [own] : GROUPS).map((g) => g.load()))) register(program);
  return program;
}

export const main = (argv: string[]): Promise<number> => runProgram(() => buildProgram(argv), argv);

process.exitCode = await main(process.argv);
