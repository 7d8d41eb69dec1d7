import type { Command } from 'commander';
import type { BeadState } from '../../domain/bead';
import type { StepRecord } from '../../domain/formula';
import { formatMs } from '../../domain/durations';
import type { BeadCancellation, BeadList, BeadRetry } from '../beads';
import { endProgress, printJson, progress, table } from '../output';
import type { Town } from '../town';
import { collect, intArg, varFlags, withTown } from './with-town';

// Loaded when a command runs: ../beads imports the Temporal client, which `gt bead --help` should not wait for.
const beads = () => import('../beads');

/** Follows a bead until it is terminal, printing each change of status; resolves with the final state. */
export async function waitForBead(
  town: Town,
  beadId: string,
  onChange: (s: BeadState, elapsedMs: number) => void,
): Promise<BeadState> {
  const started = Date.now();
  let last = '';
  const result = town.beadResult(beadId).then(
    () => undefined,
    () => undefined,
  );
  let done = false;
  void result.then(() => (done = true));
  for (;;) {
    const state = await town.beadState(beadId);
    const line = `${state.status}|${state.waitingFor}`;
    if (line !== last) {
      last = line;
      onChange(state, Date.now() - started);
    }
    if (done || ['closed', 'failed', 'cancelled'].includes(state.status)) {
      await result;
      return town.beadState(beadId);
    }
    await Promise.race([result, new Promise((r) => setTimeout(r, 500))]);
  }
}

export function describeBead(s: BeadState): string {
  const lines = [
    `bead     ${s.beadId}  ${s.title}`,
    `rig      ${s.rig}${s.convoyId ? `  (convoy ${s.convoyId})` : ''} → ${s.targetBranch}`,
    `status   ${s.status} — ${s.waitingFor}`,
  ];
  if (s.formula) lines.push(`formula  ${s.formula}`);
  if (s.mergedCommit) lines.push(`merged   ${s.mergedCommit}`);
  if (s.failureReason) lines.push(`reason   ${s.failureReason}`);
  if (s.cancellation)
    lines.push(`cancel   by ${s.cancellation.by} at ${s.cancellation.requestedAt}: ${s.cancellation.reason}`);
  if (s.steps?.length) lines.push('', 'steps:', describeSteps(s.steps));
  const lastRetry = s.retries?.at(-1);
  if (lastRetry)
    lines.push(
      `retried  ${s.retries!.length}×; last by ${lastRetry.by} at ${lastRetry.at} after it ${lastRetry.after}${lastRetry.fresh ? ' (fresh)' : ''}${lastRetry.note ? `: ${lastRetry.note}` : ''}`,
    );
  if (s.runs.length) {
    lines.push(
      '',
      table(
        s.runs.map((r) => ({
          run: r.runId,
          outcome: r.outcome,
          host: r.host,
          exit: r.exitCode,
          summary: r.summary ?? r.lastProgress,
        })),
      ),
    );
  }
  if (s.rounds.length) {
    lines.push(
      '',
      table(
        s.rounds.map((r) => ({
          round: r.round,
          mr: r.mergeRequest,
          head: r.headSha?.slice(0, 10),
          outcome: r.outcome?.kind ?? 'pending',
        })),
      ),
    );
  }
  return lines.join('\n');
}

/** A formula bead's steps, one line each (legs under their step). */
function describeSteps(steps: readonly StepRecord[]): string {
  return steps
    .map((s, i) => {
      const took =
        s.startedAt && s.endedAt ? ` ${Math.round((Date.parse(s.endedAt) - Date.parse(s.startedAt)) / 100) / 10}s` : '';
      const again = s.iterations > 1 ? ` ×${s.iterations}` : '';
      const out = s.output ? `  ${s.output.split('\n')[0]!.slice(0, 100)}` : '';
      const legs = (s.legs ?? []).map(
        (l) =>
          `\n      leg ${l.leg} ${l.state.padEnd(7)} ${l.branch}${l.output ? `  ${l.output.split('\n')[0]!.slice(0, 80)}` : ''}`,
      );
      return `  ${String(i + 1).padStart(2)}. ${s.id.padEnd(14)} ${s.kind.padEnd(8)} ${s.state.padEnd(7)}${again}${took}${out}${legs.join('')}`;
    })
    .join('\n');
}

export function describeBeadList(list: BeadList): string {
  const rows = list.beads.map((b) => ({
    bead: b.beadId,
    status: b.status,
    rig: b.rig,
    convoy: b.convoyId,
    round: b.round || undefined,
    run: b.currentRunId?.split('/').slice(1).join('/'),
    age: formatMs(Math.floor(b.ageMs / 1000) * 1000),
    title: b.title.slice(0, 50),
  }));
  const lines = [table(rows, ['bead', 'status', 'rig', 'convoy', 'round', 'run', 'age', 'title'])];
  if (list.nextPageToken)
    lines.push('', `more beads: \`gt bead list --page-token ${list.nextPageToken}\` (same filters), or --all`);
  return lines.join('\n');
}

export function describeCancellation(c: BeadCancellation): string {
  const lines = [
    `bead ${c.bead.beadId} cancelled by ${c.bead.cancellation?.by ?? 'operator'}: ${c.bead.cancellation?.reason ?? ''}`,
  ];
  if (c.stoppedRuns.length) lines.push(`stopped  ${c.stoppedRuns.join(', ')}`);
  if (c.mergeRequest) lines.push(`mr       ${c.mergeRequest.mrId}: ${c.mergeRequest.note}`);
  if (c.convoy) lines.push(`convoy   ${c.convoy.convoyId} records it ${c.convoy.beadStatus}`);
  return lines.join('\n');
}

export function describeRetry(r: BeadRetry): string {
  const lines = [
    `bead ${r.beadId} retried by ${r.by} (retry ${r.retry}, after it ${r.after}${r.fresh ? '; fresh: nothing carried' : '; its history, feedback and checkpoints carried'})`,
    `status   ${r.bead.status} — ${r.bead.waitingFor}`,
  ];
  if (r.note) lines.push(`note     ${r.note}`);
  if (r.convoy)
    lines.push(
      `convoy   ${r.convoy.convoyId} counts it running again${r.convoy.reopened ? ' (the convoy had ended failed: reopened)' : ''}`,
    );
  lines.push(`follow it with \`gt bead status ${r.beadId}\``);
  return lines.join('\n');
}

export function registerBeadCommands(program: Command): void {
  program
    .command('sling')
    .description('hand one bead (outside any convoy) to a polecat on a rig')
    .argument('<rig>', 'rig name')
    .argument('<title>', 'what to do, in one line')
    .option('--description <text>', 'details for the agent', '')
    .option('--acceptance <text>', 'how to tell it is done', '')
    .option('--priority <0-4>', 'merge priority (0 = most urgent)', intArg('--priority'), 2)
    .option('--id <beadId>', 'bead id (default: generated)')
    .option('--formula <name>', "the formula the bead runs (default: the rig's, else work); see `gt formula list`")
    .option('--var <name=value>', 'a variable of the formula (repeatable)', collect, [])
    .option('--wait', 'follow the bead until it is closed or failed; exit 0 only if merged')
    .option('--json', 'print JSON')
    .action(
      async (
        rig: string,
        title: string,
        o: {
          description: string;
          acceptance: string;
          priority: number;
          id?: string;
          formula?: string;
          var: string[];
          wait?: boolean;
          json?: boolean;
        },
      ) => {
        const vars = varFlags(o.var);
        await withTown(async (town) => {
          const { beadId, workflowId } = await town.sling(rig, {
            id: o.id,
            title,
            description: o.description,
            acceptance: o.acceptance,
            priority: o.priority,
            formula: o.formula,
            vars,
          });
          if (!o.wait) {
            if (o.json) printJson({ beadId, workflowId });
            else
              console.log(
                `bead ${beadId} slung to ${rig} (workflow ${workflowId}); follow it with \`gt bead status ${beadId}\``,
              );
            return;
          }
          if (!o.json) console.error(`bead ${beadId} slung to ${rig}; waiting…`);
          const final = await waitForBead(town, beadId, (s, ms) => {
            if (!o.json) progress(`[${formatMs(ms)}] ${beadId}: ${s.status} — ${s.waitingFor}`);
          });
          if (!o.json) endProgress();
          if (o.json) printJson(final);
          else console.log(describeBead(final));
          if (final.status !== 'closed') process.exitCode = 1;
        });
      },
    );

  const bead = program.command('bead').description('beads: units of work');
  bead
    .command('status')
    .description("a bead's status, runs, merge requests and merged commit")
    .argument('<id>', 'bead id')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const s = await withTown((town) => town.beadState(id));
      if (o.json) printJson(s);
      else console.log(describeBead(s));
    });
  bead
    .command('list')
    .description(
      'beads of the town from Temporal visibility (running first, then the most recently ended): status, rig, convoy, round, current run, age',
    )
    .option('--rig <name>', 'only beads of this rig')
    .option('--convoy <id>', 'only beads of this convoy')
    .option(
      '--status <status>',
      'only beads in this status: open | in_progress | in_review | closed | failed | cancelled',
    )
    .option('--limit <n>', 'beads per page', intArg('--limit'), 50)
    .option('--page-token <token>', 'the next page, as the previous page printed')
    .option('--all', 'every page')
    .option('--json', 'print JSON: { beads: [...], nextPageToken? }')
    .addHelpText(
      'after',
      `
Examples:
  gt bead list                                # the newest 50
  gt bead list --rig webapp --status in_progress
  gt bead list --convoy login-3f2a --all --json`,
    )
    .action(
      async (o: {
        rig?: string;
        convoy?: string;
        status?: string;
        limit: number;
        pageToken?: string;
        all?: boolean;
        json?: boolean;
      }) => {
        const { listBeads } = await beads();
        const list = await withTown((town) =>
          listBeads(town, {
            rig: o.rig,
            convoy: o.convoy,
            status: o.status as never,
            limit: o.limit,
            pageToken: o.pageToken,
            all: o.all,
          }),
        );
        if (o.json) printJson(list);
        else console.log(describeBeadList(list));
      },
    );
  bead
    .command('retry')
    .description(
      "run a failed or cancelled bead again: a new run of the same bead id, in its convoy's place (the convoy counts it running again and releases its dependents when it merges)",
    )
    .argument('<id>', 'bead id')
    .option(
      '--fresh',
      'start from the spec alone: drop earlier runs, feedback, checkpoints and messages (a formula starts over)',
    )
    .option('--note <text>', 'a note for the new run (heads its feedback) and the record', '')
    .option('--by <name>', 'who retries', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Refused (exit 1, nothing changed) for an unknown bead, a bead still running or merged, a bead whose merge request
may still merge, or one terminated from outside. A bead running a formula with steps resumes at the step it stopped
at; the steps before it are not run again (docs/formulas.md). See docs/operations.md.

Examples:
  gt bead retry webapp-1a2b3c --note "the test database is back"
  gt bead retry webapp-1a2b3c --fresh --json`,
    )
    .action(async (id: string, o: { fresh?: boolean; note: string; by: string; json?: boolean }) => {
      const { retryBead } = await beads();
      const r = await withTown((town) => retryBead(town, id, { fresh: !!o.fresh, note: o.note, by: o.by }));
      if (o.json) printJson(r);
      else console.log(describeRetry(r));
    });
  bead
    .command('cancel')
    .description(
      'cancel a bead: stops its agent, withdraws its merge request from the queue, tells its convoy; the reason shows in `gt bead status`',
    )
    .argument('<id>', 'bead id')
    .option('--reason <text>', 'why (recorded in the bead and its convoy)', 'cancelled by an operator')
    .option('--by <name>', 'who cancels', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Examples:
  gt bead cancel webapp-1a2b3c --reason "superseded by webapp-9f8e7d"
  gt bead cancel webapp-1a2b3c --json`,
    )
    .action(async (id: string, o: { reason: string; by: string; json?: boolean }) => {
      const { cancelBead } = await beads();
      const c = await withTown((town) => cancelBead(town, id, { reason: o.reason, by: o.by }));
      if (o.json) printJson(c);
      else console.log(describeCancellation(c));
    });
}
