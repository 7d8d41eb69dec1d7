import type { Command } from 'commander';
import { printJson, table } from '../output';
import { withTown } from './with-town';

export function registerEscalationCommands(program: Command): void {
  program
    .command('escalations')
    .description('work that needs a human: failed beads, agents asking for help, tripped breakers')
    .option('--all', 'include acknowledged escalations')
    .option('--json', 'print JSON')
    .action(async (o: { all?: boolean; json?: boolean }) => {
      const list = await withTown((town) => town.listEscalations({ all: o.all }));
      if (o.json) return printJson(list);
      console.log(
        table(
          list.map((e) => ({
            id: e.id,
            severity: e.severity,
            status: e.status,
            source: e.source,
            bead: e.beadId,
            convoy: e.convoyId,
            reason: e.reason.split('\n')[0]!.slice(0, 80),
          })),
        ),
      );
    });
  program
    .command('escalation')
    .description('act on one escalation')
    .command('ack')
    .description('acknowledge an escalation (it stops being open)')
    .argument('<id>', 'escalation id, as listed by `gt escalations`')
    .option('--note <text>', 'what was decided', '')
    .option('--by <name>', 'who acknowledges', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { note: string; by: string; json?: boolean }) => {
      const e = await withTown((town) => town.ackEscalation(id, { by: o.by, note: o.note }));
      if (o.json) printJson(e);
      else console.log(`escalation ${e.id} acknowledged by ${e.acknowledgedBy}`);
    });
}
