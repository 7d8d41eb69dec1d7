/** What both `gt` entry points share: the program's frame, and how a run ends (one line on failure, an exit code). */
import { Command, CommanderError } from 'commander';
import { UserError } from './errors';

/** Commands agents run from inside their runs, often: they need only the gateway client, so they start fast. */
export const AGENT_COMMANDS: ReadonlySet<string> = new Set([
  'done',
  'progress',
  'checkpoint',
  'handoff',
  'inbox',
  'escalate',
  'approve',
  'request-changes',
]);

export function baseProgram(): Command {
  return new Command('gt')
    .description(
      'Gas Town on Temporal: durable orchestration of AI coding agents.\nTemporal connection from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_PROFILE; local state in GT_HOME (~/.gastown).',
    )
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
}

export async function runProgram(build: () => Promise<Command>, argv: string[]): Promise<number> {
  try {
    const program = await build();
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
