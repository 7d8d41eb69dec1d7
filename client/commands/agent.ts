/** Commands an agent runs inside its run: they read GT_* and speak to the gateway with the run token. */
import type { Command } from 'commander';
import type { InboxReply } from '../../domain/bead';
import { printJson } from '../output';
import { callGateway } from '../gateway-client';

const say = async (path: string, body: Record<string, unknown>) =>
  console.log((await callGateway(path, body)).message ?? 'ok');

export function registerAgentCommands(program: Command): void {
  program
    .command('done')
    .description('(agent) report this run finished: its committed branch goes to the merge queue')
    .option('--summary <text>', 'one line about what was done', '')
    .option('--json', 'print the gateway answer as JSON')
    .action(async (opts: { summary: string; json?: boolean }) => {
      const r = await callGateway('/v1/done', { summary: opts.summary });
      if (opts.json) printJson(r);
      else console.log(r.message);
    });
  program
    .command('progress')
    .description('(agent) report progress; keeps the run from being taken for stalled')
    .argument('[message...]', 'what the agent is doing')
    .action((message: string[]) => say('/v1/progress', { message: message.join(' ') }));
  program
    .command('checkpoint')
    .description('(agent) save a note about where the work stands; the next run of this bead gets it in its prompt')
    .argument('<note...>', 'what is done and what is next')
    .action((note: string[]) => say('/v1/checkpoint', { note: note.join(' ') }));
  program
    .command('handoff')
    .description(
      '(agent) end this run on purpose and hand the bead to a fresh run that starts at once from your checkpoint\n' +
        '(no failed attempt, no backoff; bounded per bead by the rig policy maxHandoffs). Exit after it.',
    )
    .requiredOption('--checkpoint <text>', 'what is done and exactly what the next run should do')
    .action((opts: { checkpoint: string }) => say('/v1/handoff', { checkpoint: opts.checkpoint }));
  program
    .command('inbox')
    .description('(agent) read messages operators sent to this bead (`gt nudge`); shown messages are marked read')
    .option('--all', 'show every message, read or not')
    .option('--peek', 'do not mark the messages read')
    .option('--json', 'print JSON')
    .action(async (opts: { all?: boolean; peek?: boolean; json?: boolean }) => {
      const r = await callGateway<InboxReply>('/v1/inbox', { all: !!opts.all, peek: !!opts.peek });
      if (opts.json) return printJson(r);
      if (!r.messages.length) return console.log('(no new messages)');
      for (const m of r.messages) console.log(`[${m.sentAt}] ${m.from}: ${m.message}`);
    });
  program
    .command('escalate')
    .description('(agent) ask a human for help')
    .requiredOption('--reason <text>', 'what is wrong')
    .option('--severity <level>', 'low | medium | high | critical', 'medium')
    .action((opts: { reason: string; severity: string }) =>
      say('/v1/escalate', { reason: opts.reason, severity: opts.severity }),
    );
  program
    .command('approve')
    .description('(reviewer) approve the merge request under review')
    .option('--feedback <text>', 'optional notes', '')
    .action((opts: { feedback: string }) => say('/v1/review', { verdict: 'approve', feedback: opts.feedback }));
  program
    .command('request-changes')
    .description('(reviewer) send the merge request back to a polecat with feedback')
    .requiredOption('--feedback <text>', 'what must change')
    .action((opts: { feedback: string }) => say('/v1/review', { verdict: 'request_changes', feedback: opts.feedback }));
}
