import type { Command } from 'commander';
import type { EscalationState } from '../../domain/escalation';
import { UserError } from '../errors';
import { printJson, table } from '../output';
import { withTown } from './with-town';

/** The webhook delivery as one word (a dead letter with its reason in `--json`). */
const notified = (e: EscalationState) =>
  !e.notification
    ? ''
    : e.notification.status === 'delivered'
      ? `sent${e.notification.attempts && e.notification.attempts > 1 ? ` (${e.notification.attempts} tries)` : ''}`
      : e.notification.status === 'dead-letter'
        ? 'DEAD LETTER'
        : '';

export function registerEscalationCommands(program: Command): void {
  program
    .command('escalations')
    .description(
      'work that needs a human: failed beads, agents asking for help, tripped breakers (and whether the town webhook got them)',
    )
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
            webhook: notified(e),
            reason: e.reason.split('\n')[0]!.slice(0, 80),
          })),
        ),
      );
      for (const e of list.filter((x) => x.notification?.status === 'dead-letter'))
        console.log(`dead letter  ${e.id}: ${e.notification!.error ?? 'undelivered'}`);
    });
  program
    .command('escalation')
    .description('act on one escalation')
    .command('ack')
    .description(
      'acknowledge an escalation (it stops being open), optionally acting on the bead or convoy behind it first',
    )
    .argument('<id>', 'escalation id, as listed by `gt escalations`')
    .option('--retry', "retry its bead (`gt bead retry`), or its convoy's failed landing")
    .option('--fresh', 'with --retry: the bead starts without what earlier runs left')
    .option('--skip', "its bead's convoy goes on without the bead (it counts as done; its dependents start)")
    .option('--close <reason>', 'end the work for good: close its convoy, or cancel its bead if still running')
    .option('--note <text>', 'what was decided', '')
    .option('--by <name>', 'who acknowledges', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Examples:
  gt escalation ack bead-webapp-1a2b3c --retry --note "CI fixed"
  gt escalation ack convoy-login.bead.api --skip --note "done by hand"
  gt escalation ack convoy-login.bead.api --close "feature dropped"`,
    )
    .action(
      async (
        id: string,
        o: {
          retry?: boolean;
          fresh?: boolean;
          skip?: boolean;
          close?: string;
          note: string;
          by: string;
          json?: boolean;
        },
      ) => {
        const actions = [o.retry && 'retry', o.skip && 'skip', o.close !== undefined && 'close'].filter(Boolean);
        if (actions.length > 1) throw new UserError('choose one of --retry, --skip, --close');
        if (o.fresh && !o.retry) throw new UserError('--fresh goes with --retry');
        // Loaded when it runs: registering the command (and `gt --help`) stays free of the Temporal client.
        const { ackEscalation } = await import('../escalations');
        const r = await withTown((town) =>
          ackEscalation(town, id, {
            by: o.by,
            note: o.note,
            action: (actions[0] || undefined) as 'retry' | 'skip' | 'close' | undefined,
            reason: o.close,
            fresh: !!o.fresh,
          }),
        );
        if (o.json) printJson(r);
        else
          console.log(
            `escalation ${r.escalation.id} acknowledged by ${r.escalation.acknowledgedBy}${r.action ? `: ${r.action.detail}` : ''}`,
          );
      },
    );
}
