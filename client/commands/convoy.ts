import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import type { Command } from 'commander';
import { countBeads, describeCounts, type ConvoyBeadSpecInput, type ConvoyState } from '../../domain/convoy';
import { depths } from '../../domain/dag';
import { formatMs } from '../../domain/durations';
import { GRAPH_FORMATS, renderGraph, STATUS_STYLE, type ConvoyGraph, type GraphFormat } from '../convoy-graph';
import { convoyElapsed, watchLive } from '../convoy-watch';
import type { ConvoyClient, ConvoyStatusView } from '../convoys';
import { printJson, table } from '../output';
import { UserError } from '../errors';
import { intArg, withTown } from './with-town';

// The convoy client reaches the Temporal client: loaded when a command runs, so `gt convoy --help` and argument
// errors do not wait for it.
const convoysModule = () => import('../convoys');

/** Runs `fn` with a convoy client of the town (withTown). */
async function withConvoys<T>(fn: (convoys: ConvoyClient) => Promise<T>): Promise<T> {
  const { ConvoyClient } = await convoysModule();
  return withTown((town) => fn(new ConvoyClient(town)));
}

const SYMBOL: Record<string, string> = Object.fromEntries(
  Object.entries(STATUS_STYLE).map(([status, s]) => [status, s.symbol]),
);

/** The convoy as a tree: beads indented under what they wait for, with runs, merge request outcomes and commits. */
export function describeConvoy(view: ConvoyStatusView): string {
  const c = view.convoy;
  const lines = [
    `convoy   ${c.convoyId}  ${c.title}`,
    `rig      ${c.rig} → ${c.targetBranch ?? '(set at launch)'}  (${c.mergeMode}${c.convoyBranch ? ` via ${c.convoyBranch}` : ''}, onFailure ${c.onFailure}${c.maxParallel ? `, maxParallel ${c.maxParallel}` : ''})`,
    `status   ${c.status} — ${c.waitingFor}`,
    `beads    ${describeCounts(view.counts)}   elapsed ${formatMs(convoyElapsed(c))}`,
  ];
  if (c.landing)
    lines.push(
      `landing  ${c.landing.mrId} ${c.landing.headSha ? `@ ${c.landing.headSha.slice(0, 10)} ` : ''}→ ${c.landing.outcome?.kind ?? 'pending'}`,
    );
  if (c.landedCommit) lines.push(`landed   ${c.landedCommit}`);
  if (c.reason && c.reason !== c.waitingFor) lines.push(`reason   ${c.reason}`);
  if (c.escalations.length) lines.push(`escalated ${c.escalations.join(', ')}`);
  const depth = depths(c.beads);
  const order = [...view.beads].sort(
    (a, b) => depth.get(a.id)! - depth.get(b.id)! || c.beads.indexOf(a) - c.beads.indexOf(b),
  );
  const rows = order.map((b) => ({
    bead: `${'  '.repeat(depth.get(b.id) ?? 0)}${SYMBOL[b.status] ?? ' '} ${b.id}`,
    status: b.bead && b.status === 'running' ? b.bead.status : b.status,
    after: b.dependsOn.join(','),
    runs: b.bead?.runs.map((r) => `${r.runId.split('/').slice(1).join('/')} ${r.outcome}`).join(', '),
    mr: b.bead?.rounds.map((r) => `r${r.round} ${r.outcome?.kind ?? 'pending'}`).join(', '),
    commit: b.commit?.slice(0, 10),
    note: (b.reason ?? (b.status === 'running' ? b.bead?.waitingFor : '') ?? '').split('\n')[0]!.slice(0, 80),
  }));
  lines.push('', table(rows));
  return lines.join('\n');
}

/** One line per bead that changed, plus the convoy's own changes: what `--wait` prints while following. */
export function progressLines(state: ConvoyState, previous: ConvoyState | undefined, elapsedMs: number): string[] {
  const stamp = `[${formatMs(elapsedMs)}]`;
  const counts = describeCounts(countBeads(state.beads));
  const before = new Map(previous?.beads.map((b) => [b.id, b.status]) ?? []);
  const lines = state.beads
    .filter((b) => before.get(b.id) !== b.status && (previous || b.status !== 'pending'))
    .map(
      (b) =>
        `${stamp} ${b.id}: ${b.status}${b.commit ? ` (${b.commit.slice(0, 10)})` : ''}${b.reason && b.status !== 'closed' ? ` — ${b.reason.split('\n')[0]!.slice(0, 100)}` : ''}  · ${counts}`,
    );
  if (!previous || previous.status !== state.status || previous.waitingFor !== state.waitingFor)
    lines.push(`${stamp} convoy ${state.status}: ${state.waitingFor}  · ${counts}`);
  return lines;
}

async function follow(convoys: ConvoyClient, convoyId: string, json: boolean | undefined): Promise<void> {
  await convoys.wait(convoyId, (state, previous, ms) => {
    if (!json) for (const line of progressLines(state, previous, ms)) console.error(line);
  });
  const view = await convoys.status(convoyId);
  if (json) printJson(view);
  else console.log(describeConvoy(view));
  if (view.convoy.status !== 'landed') process.exitCode = 1;
}

/** A spec file is drawn as planned, without a town; anything else names a convoy. */
const isSpecPath = (target: string) => /\.(ya?ml|json)$/i.test(target);

/** The format asked for, else the one the output file's extension names, else Mermaid. */
export function graphFormat(format: string | undefined, output: string | undefined): GraphFormat {
  const chosen =
    format ??
    { '.dot': 'dot', '.gv': 'dot', '.svg': 'svg', '.html': 'html', '.htm': 'html', '.mmd': 'mermaid' }[
      extname(output ?? '').toLowerCase()
    ] ??
    'mermaid';
  if (!(GRAPH_FORMATS as readonly string[]).includes(chosen))
    throw new UserError(`unknown graph format '${chosen}': use ${GRAPH_FORMATS.join(', ')}`);
  return chosen as GraphFormat;
}

/** The graph of a spec file or of a convoy by id: what `gt convoy graph` draws (and prints with --json). */
export async function convoyGraph(target: string, uiUrl: string): Promise<ConvoyGraph> {
  if (isSpecPath(target)) return (await convoysModule()).graphOfSpecFile(target);
  return withConvoys((convoys) => convoys.graph(target, uiUrl));
}

const splitIds = (value: string) =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export function registerConvoyCommands(program: Command): void {
  const convoy = program
    .command('convoy')
    .description('convoys: beads with dependencies that land together (a spec file lists them)')
    .addHelpText(
      'after',
      `
Spec (YAML or JSON):
  title: Login flow
  rig: webapp
  mergeMode: review-and-merge      # or review-then-land (beads merge into convoy/<id>, one landing MR)
  maxParallel: 4                   # optional; also bounded by the rig's maxPolecats
  onFailure: stop-dependents       # or stop-all
  beads:
    - id: api
      title: Add /login endpoint
      description: ...
    - id: ui
      title: Login form
      dependsOn: [api]`,
    );

  const start =
    (staged: boolean) => async (file: string, o: { id?: string; staged?: boolean; wait?: boolean; json?: boolean }) => {
      const raw = (await convoysModule()).readSpecFile(file);
      await withConvoys(async (convoys) => {
        const isStaged = staged || !!o.staged;
        const { convoyId, workflowId, spec } = await convoys.start(raw, { id: o.id, staged: isStaged });
        if (!o.wait || isStaged) {
          if (o.json) printJson({ convoyId, workflowId, staged: isStaged, beads: spec.beads.length });
          else if (isStaged)
            console.log(
              `convoy ${convoyId} staged (${spec.beads.length} beads); edit it with \`gt convoy add|remove|edit\`, start it with \`gt convoy launch ${convoyId}\``,
            );
          else
            console.log(
              `convoy ${convoyId} started (${spec.beads.length} beads, workflow ${workflowId}); follow it with \`gt convoy status ${convoyId}\``,
            );
          return;
        }
        if (!o.json) console.error(`convoy ${convoyId} started (${spec.beads.length} beads); waiting…`);
        await follow(convoys, convoyId, o.json);
      });
    };

  convoy
    .command('start')
    .description('validate a convoy spec and start it (nothing starts if anything in it is wrong)')
    .argument('<spec>', 'spec file (.yaml, .yml or .json)')
    .option('--id <convoyId>', "convoy id (default: the spec's id, or one made from its title)")
    .option('--staged', 'record the plan without dispatching anything; start it later with `gt convoy launch`')
    .option('--wait', 'follow the convoy until it ends, printing each bead as it changes; exit 0 only if it landed')
    .option('--json', 'print JSON')
    .action(start(false));

  convoy
    .command('stage')
    .description('same as `gt convoy start --staged`: validate and record the plan, dispatch nothing')
    .argument('<spec>', 'spec file (.yaml, .yml or .json)')
    .option('--id <convoyId>', "convoy id (default: the spec's id, or one made from its title)")
    .option('--json', 'print JSON')
    .action(start(true));

  convoy
    .command('launch')
    .description('start a staged convoy')
    .argument('<id>', 'convoy id')
    .option('--wait', 'follow the convoy until it ends; exit 0 only if it landed')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { wait?: boolean; json?: boolean }) => {
      await withConvoys(async (convoys) => {
        const state = await convoys.launch(id);
        if (o.wait) return follow(convoys, id, o.json);
        if (o.json) printJson(state);
        else console.log(`convoy ${id} ${state.status}: ${state.waitingFor}`);
        if (state.status === 'failed') process.exitCode = 1;
      });
    });

  convoy
    .command('watch')
    .description(
      'follow a convoy live until it ends; exit 0 only if it landed. On a terminal: a tree redrawn in place with progress, elapsed time and the merge queue; otherwise one line per change',
    )
    .argument('<id>', 'convoy id')
    .option('--json', 'print only the final status as JSON')
    .addHelpText(
      'after',
      `
Examples:
  gt convoy watch login-3f2a            # live tree on a terminal; Ctrl-C stops watching (the convoy goes on)
  gt convoy watch login-3f2a | tee log  # not a terminal: one line per bead change, then the final tree`,
    )
    .action(async (id: string, o: { json?: boolean }) => {
      await withConvoys(async (convoys) => {
        if (o.json || !process.stdout.isTTY) return follow(convoys, id, o.json);
        await watchLive(convoys, id, process.stdout);
        const view = await convoys.status(id);
        console.log(describeConvoy(view));
        if (view.convoy.status !== 'landed') process.exitCode = 1;
      });
    });

  convoy
    .command('graph')
    .description(
      "a convoy's DAG (or a spec file's, before launch) with each bead's status, round/run and failure reason, the critical path marked",
    )
    .argument('<id|spec>', 'convoy id, or a spec file (.yaml, .yml, .json)')
    .option('--format <format>', `${GRAPH_FORMATS.join(' | ')} (default: from --output's extension, else mermaid)`)
    .option('--output <file>', 'write to this file instead of stdout')
    .option(
      '--ui-url <url>',
      'Temporal Web UI the HTML/SVG nodes link to',
      process.env.GT_UI_URL ?? 'http://localhost:8233',
    )
    .option('--json', 'print the graph as data (nodes, statuses, critical path) instead')
    .addHelpText(
      'after',
      `
Examples:
  gt convoy graph examples/login-flow.yaml               # Mermaid of a plan, nothing started
  gt convoy graph login-3f2a --output login.html         # a page: click a bead to open it in the Web UI
  gt convoy graph login-3f2a --format dot | dot -Tpng > login.png
  gt convoy graph login-3f2a --format svg --output login.svg

Colours and symbols: ✓ merged (green), ▶ running (blue), · waiting (grey), ⊘ blocked (amber), ✗ failed (red),
⊘ cancelled (dark grey); the critical path (the chain that decides when the convoy lands) is purple and bold.`,
    )
    .action(async (target: string, o: { format?: string; output?: string; uiUrl: string; json?: boolean }) => {
      const format = graphFormat(o.format, o.output);
      const graph = await convoyGraph(target, o.uiUrl);
      if (o.json) return printJson(graph);
      const text = await renderGraph(graph, format);
      if (!o.output) return void process.stdout.write(text);
      try {
        writeFileSync(o.output, text);
      } catch (err) {
        throw new UserError(
          `cannot write ${o.output}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      console.error(`wrote ${o.output} (${format}, ${graph.nodes.length} beads)`);
    });

  convoy
    .command('status')
    .description("a convoy's beads as a tree: statuses, runs, merge request outcomes, commits")
    .argument('<id>', 'convoy id')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const view = await withConvoys((convoys) => convoys.status(id));
      if (o.json) printJson(view);
      else console.log(describeConvoy(view));
    });

  convoy
    .command('list')
    .description('all convoys, newest first')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await withConvoys((convoys) => convoys.list());
      if (o.json) return printJson(list);
      console.log(
        table(
          list.map((c) => ({
            convoy: c.convoyId,
            status: c.status,
            rig: c.rig,
            merged: c.counts ? `${c.counts.closed}/${c.counts.total}` : '',
            running: c.counts?.running,
            failed: c.counts ? c.counts.failed + c.counts.blocked : '',
            title: c.title.slice(0, 60),
          })),
        ),
      );
    });

  convoy
    .command('cancel')
    .description('cancel a convoy: running beads stop their agents, nothing new starts')
    .argument('<id>', 'convoy id')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const state = await withConvoys((convoys) => convoys.cancel(id));
      if (o.json) printJson(state);
      else console.log(`convoy ${id} ${state.status}: ${describeCounts(countBeads(state.beads))}`);
    });

  convoy
    .command('close')
    .description('end a convoy deliberately, recording why (--force stops beads that are still running)')
    .argument('<id>', 'convoy id')
    .option('--reason <text>', 'why it is closed (recorded in the convoy)', '')
    .option('--force', 'stop running beads (and a landing in flight) instead of refusing')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { reason: string; force?: boolean; json?: boolean }) => {
      const state = await withConvoys((convoys) => convoys.close(id, { reason: o.reason, force: o.force }));
      if (o.json) printJson(state);
      else console.log(`convoy ${id} ${state.status}: ${state.reason ?? ''}`);
    });

  convoy
    .command('land')
    .description(
      'retry the landing merge request of a review-then-land convoy after it failed (fix the convoy branch first)',
    )
    .argument('<id>', 'convoy id')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const state = await withConvoys((convoys) => convoys.retryLanding(id));
      if (o.json) printJson(state);
      else console.log(`convoy ${id}: landing retried; follow it with \`gt convoy status ${id}\``);
    });

  const recovered = (id: string, what: string, r: { state: ConvoyState; reopened: boolean }) =>
    `convoy ${id}: ${what}${r.reopened ? ' (it had ended failed: reopened)' : ''} — ${describeCounts(countBeads(r.state.beads))}; follow it with \`gt convoy status ${id}\``;

  convoy
    .command('retry')
    .description(
      'retry failed beads of a convoy (every failed bead, or those named): each goes on as a new run of the same bead; a convoy that ended failed reopens',
    )
    .argument('<id>', 'convoy id')
    .argument('[beads...]', 'bead ids (as in the spec); default: every failed bead')
    .option('--fresh', 'start them from the spec alone (nothing carried from earlier runs)')
    .option('--note <text>', 'a note for their new runs', '')
    .option('--by <name>', 'who retries', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (id: string, beads: string[], o: { fresh?: boolean; note: string; by: string; json?: boolean }) => {
      const r = await withConvoys((convoys) =>
        convoys.recover(id, { op: 'retry', ids: beads, fresh: !!o.fresh, note: o.note, by: o.by }),
      );
      if (o.json) printJson(r);
      else
        console.log(
          recovered(
            id,
            `retrying ${
              r.state.beads
                .filter((b) => b.restart)
                .map((b) => b.id)
                .join(', ') || 'its failed beads'
            }`,
            r,
          ),
        );
    });

  convoy
    .command('resume')
    .description(
      'after onFailure: stop-all held beads back, start them again (beads that depend on a failed bead stay blocked: retry or skip it)',
    )
    .argument('<id>', 'convoy id')
    .option('--by <name>', 'who resumes', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { by: string; json?: boolean }) => {
      const r = await withConvoys((convoys) => convoys.recover(id, { op: 'resume', by: o.by }));
      if (o.json) printJson(r);
      else console.log(recovered(id, 'resumed', r));
    });

  convoy
    .command('skip')
    .description(
      'go on without a failed bead: it counts as done (its dependents start, the convoy can land) with nothing merged',
    )
    .argument('<id>', 'convoy id')
    .argument('<bead>', 'bead id (as in the spec)')
    .requiredOption('--reason <text>', 'why it is skipped (recorded on the bead)')
    .option('--by <name>', 'who skips', process.env.USER ?? 'operator')
    .option('--json', 'print JSON')
    .action(async (id: string, bead: string, o: { reason: string; by: string; json?: boolean }) => {
      const r = await withConvoys((convoys) =>
        convoys.recover(id, { op: 'skip', ids: [bead], reason: o.reason, by: o.by }),
      );
      if (o.json) printJson(r);
      else console.log(recovered(id, `bead ${bead} skipped`, r));
    });

  convoy
    .command('add')
    .description('add beads to a staged or running convoy (a YAML/JSON file with a list of beads, or with `beads:`)')
    .argument('<id>', 'convoy id')
    .argument('<file>', 'beads file (.yaml, .yml or .json)')
    .option('--json', 'print JSON')
    .action(async (id: string, file: string, o: { json?: boolean }) => {
      const raw = (await convoysModule()).readSpecFile(file);
      const state = await withConvoys((convoys) => convoys.addBeads(id, raw));
      if (o.json) printJson(state);
      else console.log(`convoy ${id} now has ${state.beads.length} beads (${describeCounts(countBeads(state.beads))})`);
    });

  convoy
    .command('remove')
    .description('remove beads from a staged convoy')
    .argument('<id>', 'convoy id')
    .argument('<beads...>', 'bead ids (as in the spec)')
    .option('--json', 'print JSON')
    .action(async (id: string, beads: string[], o: { json?: boolean }) => {
      const state = await withConvoys((convoys) => convoys.edit(id, { op: 'remove', ids: beads }));
      if (o.json) printJson(state);
      else console.log(`convoy ${id} now has ${state.beads.length} beads`);
    });

  convoy
    .command('edit')
    .description('change a bead of a staged convoy')
    .argument('<id>', 'convoy id')
    .argument('<bead>', 'bead id (as in the spec)')
    .option('--title <text>', 'new title')
    .option('--description <text>', 'new description')
    .option('--acceptance <text>', 'new acceptance notes')
    .option('--priority <0-4>', 'merge priority (0 = most urgent)', intArg('--priority'))
    .option('--depends-on <ids>', 'comma-separated bead ids it depends on (empty string: none)')
    .option('--json', 'print JSON')
    .action(
      async (
        id: string,
        bead: string,
        o: {
          title?: string;
          description?: string;
          acceptance?: string;
          priority?: number;
          dependsOn?: string;
          json?: boolean;
        },
      ) => {
        const patch: Partial<ConvoyBeadSpecInput> & { id: string } = {
          id: bead,
          title: o.title,
          description: o.description,
          acceptance: o.acceptance,
          priority: o.priority,
        };
        if (o.dependsOn !== undefined) patch.dependsOn = splitIds(o.dependsOn);
        if (Object.values(patch).filter((v) => v !== undefined).length === 1)
          throw new UserError(
            'nothing to change: pass --title, --description, --acceptance, --priority or --depends-on',
          );
        const state = await withConvoys((convoys) => convoys.edit(id, { op: 'edit', bead: patch }));
        if (o.json) printJson(state);
        else console.log(`convoy ${id}: bead ${bead} updated`);
      },
    );
}
