/** `gt rig pause|resume|dispatch`: the rig's dispatch gate (capacity, operator pause, circuit breaker). */
import type { Command } from 'commander';
import type { DispatchGateState } from '../../domain/dispatch';
import { formatMs } from '../../domain/durations';
import { printJson, table } from '../output';
import { UserError } from '../errors';
import { withTown } from './with-town';

/** `--env KEY=VALUE` flags → record (the rig schema validates the names). */
export function parseEnvFlags(flags: string[]): Record<string, string> {
  return Object.fromEntries(
    flags.map((f) => {
      const i = f.indexOf('=');
      if (i <= 0) throw new UserError(`--env takes KEY=VALUE, got '${f}'`);
      return [f.slice(0, i), f.slice(i + 1)];
    }),
  );
}

export function describeGate(g: DispatchGateState): string {
  const b = g.breaker;
  const lines = [
    `rig       ${g.rig}`,
    `dispatch  ${g.paused ? `paused by ${g.paused.by} since ${g.paused.since}: ${g.paused.reason}` : 'open'}`,
    `breaker   ${b.state}; ${b.consecutiveFailures} consecutive start failures (opens at ${g.settings.breakerThreshold}; probe every ${formatMs(g.settings.breakerProbeInterval)}); tripped ${b.trips}×`,
    `capacity  ${g.running.length}/${g.settings.maxPolecats} running, ${g.waiting.length} waiting`,
  ];
  if (b.lastFailure) lines.push(`last      ${b.lastFailure}`);
  const slots = [
    ...g.running.map((s) => ({ run: s.runId, state: 'running', since: s.since })),
    ...g.waiting.map((s) => ({ run: s.runId, state: 'waiting', since: s.since })),
  ];
  if (slots.length) lines.push('', table(slots));
  return lines.join('\n');
}

export function registerRigDispatchCommands(rig: Command): void {
  rig
    .command('pause')
    .description('stop dispatching new agent runs on the rig (running ones finish; beads wait)')
    .argument('<name>', 'rig name')
    .option('--reason <text>', 'why (shown by `gt rig dispatch`)')
    .option('--by <name>', 'who pauses', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { reason?: string; by: string; json?: boolean }) => {
      const g = await withTown((town) => town.pauseRig(name, o.reason, o.by));
      if (o.json) printJson(g);
      else console.log(`dispatch on rig ${name} paused; \`gt rig resume ${name}\` lifts it`);
    });
  rig
    .command('resume')
    .description("resume dispatch on the rig: lifts an operator's pause and closes a tripped circuit breaker")
    .argument('<name>', 'rig name')
    .option('--by <name>', 'who resumes', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { by: string; json?: boolean }) => {
      const g = await withTown((town) => town.resumeRig(name, o.by));
      if (o.json) printJson(g);
      else console.log(`dispatch on rig ${name} resumed (${g.waiting.length} waiting run(s) may start)`);
    });
  rig
    .command('dispatch')
    .description("the rig's dispatch gate: pause, circuit breaker, running and waiting runs")
    .argument('<name>', 'rig name')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const g = await withTown((town) => town.dispatchState(name));
      if (o.json) printJson(g);
      else console.log(describeGate(g));
    });
}
