/** `gt status`: the town at a glance, once or (`--watch`) redrawn until Ctrl-C. */
import type { Command } from 'commander';
import { z } from 'zod';
import { DurationMs, formatMs } from '../../domain/durations';
import { printJson } from '../output';
import type { TownStatus } from '../town-status';
import { withTown } from './with-town';

const Interval = DurationMs.pipe(z.number().min(200, 'must be at least 200ms'));

const fit = (line: string, cols: number) =>
  [...line].length > cols ? `${[...line].slice(0, Math.max(0, cols - 1)).join('')}…` : line;

/** What changes the picture when not on a terminal: everything but the clock (ages grow on every read). */
const signature = (s: TownStatus) =>
  JSON.stringify({ ...s, at: undefined }, (k, v: unknown) => (k === 'ageMs' || k === 'quietMs' ? undefined : v));

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'the town at a glance: rigs (dispatch paused? breaker open?), running agents per rig with their age and last progress, merge queue depths, convoys in flight, open escalations',
    )
    .option('--watch', 'redraw until Ctrl-C (on a terminal in place; otherwise the picture again whenever it changes)')
    .option('--interval <duration>', 'how often --watch reads the town', '2s')
    .option('--json', 'print JSON (with --watch: one JSON document per line, whenever it changes)')
    .addHelpText(
      'after',
      `
Examples:
  gt status
  gt status --watch
  gt status --json | jq '.rigs[] | {name, dispatch, queue: .mergeQueue.depth}'`,
    )
    .action(async (o: { watch?: boolean; interval: string; json?: boolean }) => {
      // Imported here, not by the group: they reach the Temporal client (client/cli.ts).
      const [{ parseInput }, { describeTownStatus, townStatus }, { redrawLive }] = await Promise.all([
        import('../town'),
        import('../town-status'),
        import('../convoy-watch'),
      ]);
      const interval = parseInput(Interval, o.interval, '--interval');
      await withTown(async (town) => {
        if (!o.watch) {
          const s = await townStatus(town);
          if (o.json) printJson(s);
          else console.log(describeTownStatus(s, formatMs).join('\n'));
          return;
        }
        if (!o.json && process.stdout.isTTY) {
          await redrawLive<never>(
            process.stdout,
            async (size) => {
              const lines = describeTownStatus(await townStatus(town), formatMs);
              const frame =
                lines.length > size.rows
                  ? [...lines.slice(0, size.rows - 1), `… ${lines.length - size.rows + 1} more lines`]
                  : lines;
              return { frame: frame.map((l) => fit(l, size.cols)) };
            },
            interval,
          );
          return;
        }
        let last = '';
        for (;;) {
          const s = await townStatus(town);
          if (signature(s) !== last) {
            last = signature(s);
            if (o.json) process.stdout.write(`${JSON.stringify(s)}\n`);
            else console.log(`${describeTownStatus(s, formatMs).join('\n')}\n`);
          }
          await new Promise((r) => setTimeout(r, interval));
        }
      });
    });
}
