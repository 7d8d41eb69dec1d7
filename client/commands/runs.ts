/** Operators talking to live runs: `gt logs <bead|run> [--follow]` and `gt nudge <bead> "<msg>"`. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { readTail } from '../../agents/process-runtime';
import { OUTPUT_LOG } from '../../agents/runtime';
import { RunId } from '../../domain/ids';
import { gtHome, hostId, paths } from '../../host/home';
import { printJson } from '../output';
import { UserError } from '../errors';
import type { Town } from '../town';
import { withTown } from './with-town';

const runOutput = (runId: string) => join(paths.runDir(runId, gtHome()), OUTPUT_LOG);
const beadOfRun = (runId: string) => runId.split('/')[0]!;

/** A bead id means its current run, or its last one when none is running. */
async function resolveRun(town: Town, target: string): Promise<{ runId: string; host?: string }> {
  if (RunId.safeParse(target).success) {
    const state = await town.beadState(beadOfRun(target)).catch(() => undefined);
    return { runId: target, host: state?.runs.find((r) => r.runId === target)?.host };
  }
  const state = await town.beadState(target);
  const run = state.runs.find((r) => r.runId === state.currentRunId) ?? state.runs[state.runs.length - 1];
  if (!run) throw new UserError(`bead ${target} has had no run yet (${state.status}: ${state.waitingFor})`);
  return { runId: run.runId, host: run.host };
}

async function isRunning(town: Town, runId: string): Promise<boolean> {
  const state = await town.beadState(beadOfRun(runId)).catch(() => undefined);
  return state?.runs.find((r) => r.runId === runId)?.outcome === 'running';
}

export function registerRunCommands(program: Command): void {
  program
    .command('logs')
    .description(
      "a run's output (stdout and stderr of the agent), read from GT_HOME/runs/<run>/output.log on the host that owns the run",
    )
    .argument('<bead|run>', 'a bead id (its current or last run) or a run id such as b1/r1/a2')
    .option('-f, --follow', 'keep printing new output until the run ends')
    .option('--json', 'print JSON ({ runId, host, path, output })')
    .action(async (target: string, o: { follow?: boolean; json?: boolean }) => {
      await withTown(async (town) => {
        const { runId, host } = await resolveRun(town, target);
        const path = runOutput(runId);
        if (!existsSync(path)) {
          const where = host && host !== hostId() ? `on host ${host}` : 'here';
          throw new UserError(
            `no output of run ${runId} ${where} (expected ${path}); run \`gt logs\` on the host that owns the run`,
          );
        }
        if (o.json) return printJson({ runId, host, path, output: readTail(path, 1024 * 1024) });
        let printed = 0;
        const flush = () => {
          const text = readTail(path, Number.MAX_SAFE_INTEGER);
          const bytes = Buffer.from(text, 'utf8');
          if (bytes.length > printed) process.stdout.write(bytes.subarray(printed));
          printed = bytes.length;
        };
        flush();
        while (o.follow && (await isRunning(town, runId))) {
          await new Promise((r) => setTimeout(r, 500));
          flush();
        }
        flush();
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
