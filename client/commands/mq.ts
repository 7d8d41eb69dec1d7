/** `gt mq <rig> [show|pause|resume]`: a rig's merge queue, and holding it for maintenance. */
import type { Command } from 'commander';
import { z } from 'zod';
import { formatMs } from '../../domain/durations';
import { refineryWorkflowId } from '../../domain/ids';
import type { RefineryState } from '../../domain/refinery';
import { printJson, table } from '../output';
import type { Town } from '../town';
import { withTown } from './with-town';

const MqAction = z.enum(['show', 'pause', 'resume'], {
  error: (i) => `unknown action '${String(i.input)}': use show, pause or resume`,
});

export function describeQueue(q: RefineryState, now = Date.now()): string {
  const lines = [
    `refinery:${q.rig}  ${q.paused ? 'PAUSED  ' : ''}merged ${q.merged}, sent back ${q.rejected}, pull requests ${q.pullRequests}, gate runs ${q.gateRuns}${batchText(q)}`,
    q.section
      ? `merging  ${q.section.kind}: ${q.section.mrIds.join(', ')}${q.section.probe ? ` (gating the first ${q.section.probe})` : ''}, since ${q.section.startedAt}`
      : 'merging  (nothing)',
    '',
    'waiting, in the order they will be taken:',
    table(
      q.queue.map((t, i) => ({
        '#': i + 1,
        mr: t.mrId,
        priority: t.priority,
        retries: t.retries,
        score: Math.round(t.score),
        waiting: formatMs(Math.max(0, now - t.enqueuedAt)),
        convoy: t.convoyId,
        head: t.headSha.slice(0, 10),
        target: t.targetBranch,
      })),
    ),
  ];
  if (q.recent.length) {
    lines.push(
      '',
      'recent outcomes:',
      table(
        q.recent.slice(-10).map((r) => ({ mr: r.mrId, outcome: r.outcome, commit: r.commit?.slice(0, 10), at: r.at })),
      ),
    );
  }
  return lines.join('\n');
}

async function setPaused(town: Town, rig: string, paused: boolean): Promise<RefineryState> {
  const [{ pauseRefineryUpdate }] = await Promise.all([import('../../domain/messages'), town.getRig(rig)]);
  return town.client.workflow
    .getHandle(refineryWorkflowId(rig))
    .executeUpdate(pauseRefineryUpdate, { args: [{ paused }] });
}

export function registerMqCommands(program: Command): void {
  program
    .command('mq')
    .description(
      "a rig's merge queue: the running merge section, the MRs waiting (in the order they will be taken) and recent outcomes.\n`pause` holds the queue (MRs keep arriving; the running section finishes), `resume` lets it go again.",
    )
    .argument('<rig>', 'rig name')
    .argument('[action]', 'show | pause | resume', 'show')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  gt mq webapp\n  gt mq webapp --json\n  gt mq webapp pause')
    .action(async (rig: string, rawAction: string, o: { json?: boolean }) => {
      // Imported here, not by the group: ../town and domain/messages reach the Temporal packages (client/cli.ts).
      const { parseInput } = await import('../town');
      const action = parseInput(MqAction, rawAction, 'mq action');
      const q = await withTown((town) =>
        action === 'show' ? town.mergeQueue(rig) : setPaused(town, rig, action === 'pause'),
      );
      if (o.json) return printJson(q);
      if (action !== 'show')
        console.log(
          `merge queue of ${rig} ${q.paused ? 'paused: no new section starts until `gt mq ' + rig + ' resume`' : 'resumed'}`,
        );
      else console.log(describeQueue(q));
    });
}

/** A batching rig's batch size, and the adaptive limit while a failed batch holds it lower. */
function batchText(q: { batchSize: number; batchLimit?: number }): string {
  if (q.batchSize <= 1) return '';
  const limit = q.batchLimit ?? q.batchSize;
  return `  (batches of up to ${limit < q.batchSize ? `${limit} for now, ${q.batchSize} at most` : q.batchSize})`;
}
