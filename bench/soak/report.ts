/** The soak's report in Markdown: the verdict first, then the invariants, the figures and the fault log. */
import type { SoakResult } from './soak';

const INVARIANT_TITLES: Record<keyof SoakResult['invariants'], string> = {
  beadsLost: 'beads lost (not ended when the convoy did)',
  beadsMergedTwice: 'beads merged twice',
  concurrentRuns: 'two agent runs of one bead alive at once',
  ungatedTargetTrees: 'trees the target held that no gate run passed',
  staleMessagesAccepted: 'stale messages taken as new',
  stuckWorkflows: 'bead / merge-request / convoy workflows still open at the end',
};

export function renderSoakReport(r: SoakResult): string {
  const f = r.figures;
  // Reports written before the stack and exit checks count as dev-server runs with none recorded.
  const exits = r.unexpectedExits ?? [];
  const stack =
    (r.options.stack ?? 'dev') === 'prod'
      ? 'the production topology (PostgreSQL, the full Temporal server v1.29 with SQL visibility)'
      : 'the embedded Temporal dev server (SQLite file)';
  const pass = r.violations === 0 && exits.length === 0;
  const lines = [
    `# Chaos soak, ${r.startedAt}`,
    '',
    `**${pass ? 'PASS' : 'FAIL'}** — ${r.violations} invariant violation(s), ${exits.length} unexpected component exit(s); convoy ${r.convoyStatus} after ${Math.round(r.durationMs / 1000)} s.`,
    '',
    `Stack: ${stack}${r.stackStartMs !== undefined ? `, up in ${(r.stackStartMs / 1000).toFixed(0)} s` : ''}.` +
      // The soak reads the convoy without queries while faults fall (docs/known-issues.md); older reports lack the count.
      (r.queriesDuringChaos !== undefined
        ? ` Queries sent by the soak while faults fell: ${r.queriesDuringChaos}.`
        : ''),
    '',
    `${r.options.beads} beads in ${r.options.width} chains (${Object.entries(r.kinds)
      .map(([k, n]) => `${n} ${k}`)
      .join(
        ', ',
      )}), ${r.options.hosts} worker hosts, maxPolecats ${r.options.maxPolecats}, flaky gate ${r.options.flakyPercent} %, ` +
      `faults every ${r.options.faultEvery.join('–')} s from {${r.options.faults.join(', ')}}` +
      `${r.options.downFor ? `, a killed server or PostgreSQL down ${r.options.downFor.join('–')} s` : ''}, seed ${r.options.seed}.`,
    '',
    '## Invariants (each must be 0)',
    '',
    '| invariant | count | which |',
    '|---|---:|---|',
    ...Object.entries(r.invariants).map(([k, list]: [string, unknown[]]) => {
      const which = list
        .slice(0, 5)
        .map((x) => (typeof x === 'string' ? x : JSON.stringify(x)))
        .join(', ');
      return `| ${INVARIANT_TITLES[k as keyof SoakResult['invariants']]} | ${list.length} | ${which}${list.length > 5 ? ', …' : ''} |`;
    }),
    '',
    ...(exits.length
      ? ['Components that exited while no fault asked them to:', '', ...exits.map((e) => `- ${e}`), '']
      : []),
    '## Figures',
    '',
    `- merged ${f.merged} of ${f.beads} beads; not merged ${f.goodNotMerged} (${f.goodNotMergedPct} %) — every bead's agent eventually does its work, so these are beads whose attempts or rounds the chaos used up`,
    `- gate runs ${f.gateRuns}: broken trees rejected ${f.brokenTreesRejected}; flaky rejections of good trees ${f.flakyRejections} (${f.flakyRejectionPct} %)`,
    `- agent runs ${f.runs}; stale replays (\`gt checkpoint\` and \`gt done\` with the tokens of runs that are over) ${f.staleReplays}`,
    '',
    ...(r.notMerged.length
      ? [
          'Not merged:',
          '',
          ...r.notMerged.map(
            (b) => `- ${b.beadId} (${b.status}): ${(b.reason ?? '').split('\n').slice(0, 3).join(' ').slice(0, 300)}`,
          ),
        ]
      : []),
    '',
    `## Faults injected (${r.faults.length})`,
    '',
    ...(r.faults.length
      ? [
          '| at (s) | fault | what |',
          '|---:|---|---|',
          ...r.faults.map((x) => `| ${(x.at / 1000).toFixed(0)} | ${x.kind} | ${x.detail} |`),
        ]
      : ['none']),
    '',
    `Scratch (histories, marks, gate log): \`${r.scratch}\``,
    '',
  ];
  return lines.join('\n');
}
