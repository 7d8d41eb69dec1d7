/** Operators talking to live runs: `gt logs <bead|run> [--follow]` and `gt nudge <bead> "<msg>"`. */
import type { Command } from 'commander';
import { HostId, MAX_LOG_CHUNK } from '../../domain/logs';
import { printJson } from '../output';
import { UserError } from '../errors';
import { withTown } from './with-town';

export function registerRunCommands(program: Command): void {
  program
    .command('logs')
    .description(
      "a run's output (stdout and stderr of the agent), read on the host that owns the run through Temporal: works from any machine that reaches the town",
    )
    .argument('<bead|run>', 'a bead id (its current or last run) or a run id such as b1/r1/a2')
    .option('-f, --follow', 'keep printing new output until the run ends')
    .option('--host <id>', "the host that owns the run, when the bead does not say (a reviewer run's host)")
    .option('--json', `print JSON ({ runId, host, offset, size, output }): the last ${MAX_LOG_CHUNK / 1024} KiB`)
    .addHelpText(
      'after',
      `\nThe output is the agent's own text, shown without terminal control characters. Without --follow, the last ${MAX_LOG_CHUNK / 1024} KiB.`,
    )
    .action(async (target: string, o: { follow?: boolean; host?: string; json?: boolean }) => {
      const { resolveRun, printRunLog, readRunLog } = await import('../run-logs');
      await withTown(async (town) => {
        const resolved = await resolveRun(town, target);
        const host = o.host ?? resolved.host;
        if (!host)
          throw new UserError(
            `run ${resolved.runId} has no host on record yet (it has not been prepared); give --host <id> if you know it`,
          );
        const hostOk = HostId.safeParse(host);
        if (!hostOk.success) throw new UserError(`--host: ${hostOk.error.issues[0]?.message ?? 'invalid host id'}`);
        const runId = resolved.runId;
        if (o.json) {
          const c = await readRunLog(town, { runId, host });
          if (!c.exists) throw new UserError(`no output of run ${runId} on host ${host} (the run wrote nothing yet)`);
          return printJson({ runId, host, offset: c.offset, size: c.size, output: c.text });
        }
        const printed = await printRunLog(town, {
          runId,
          host,
          follow: !!o.follow,
          write: (text) => void process.stdout.write(text),
          onSkipped: (bytes) => console.error(`gt: (${bytes} earlier bytes of ${runId} not shown)`),
        });
        if (!printed.exists && !o.follow)
          throw new UserError(`no output of run ${runId} on host ${host} (the run wrote nothing yet)`);
      });
    });

  program
    .command('nudge')
    .description(
      "send a message to a bead's running agent (it reads it with `gt inbox`; later runs get it in their prompt)",
    )
    .argument('<bead>', 'bead id')
    .argument('<message...>', 'the message')
    .option('--from <name>', 'who is asking', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (beadId: string, message: string[], o: { from: string; json?: boolean }) => {
      const sent = await withTown((town) => town.nudge(beadId, message.join(' '), o.from));
      if (o.json) printJson(sent);
      else console.log(`message #${sent.seq} queued for bead ${beadId}; its agent reads it with \`gt inbox\``);
    });
}
