import type { Command } from 'commander';
import { printJson } from '../output';
import { withTown } from './with-town';

// Loaded when a command runs: ../formulas reaches the Temporal client (through ../town), which `gt formula --help`
// should not wait for.
const formulas = () => import('../formulas');

export function registerFormulaCommands(program: Command): void {
  const formula = program
    .command('formula')
    .description('formulas: multi-step agent work as versioned templates (docs/formulas.md)');
  formula
    .command('list')
    .description("the town's formulas: built-in, GT_HOME/formulas, and with --rig the rig's (overlays applied)")
    .option('--rig <name>', "include this rig's formulas and overlays")
    .option('--json', 'print JSON')
    .action(async (o: { rig?: string; json?: boolean }) => {
      const { describeFormulaList, formulaList } = await formulas();
      const rows = formulaList({ rig: o.rig });
      if (o.json) printJson(rows);
      else console.log(describeFormulaList(rows));
    });
  formula
    .command('show')
    .description('a formula: variables, steps in the order they run, what each prompt may quote')
    .argument('<name>', 'formula name')
    .option('--rig <name>', "with this rig's overlays")
    .option('--json', 'print JSON')
    .action(async (name: string, o: { rig?: string; json?: boolean }) => {
      const { describeFormula, formulaShow } = await formulas();
      const shown = formulaShow(name, { rig: o.rig });
      if (o.json) printJson(shown);
      else console.log(describeFormula(shown));
    });
  formula
    .command('validate')
    .description('check a formula file (or a *.overlay.toml); exit 1 with one line saying what is wrong')
    .argument('<file>', 'a .toml formula or overlay file')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Examples:
  gt formula validate my-formula.toml
  gt formula validate ~/.gastown/formulas/careful.overlay.toml`,
    )
    .action(async (file: string, o: { json?: boolean }) => {
      const { formulaValidate } = await formulas();
      const v = formulaValidate(file);
      if (o.json) printJson(v);
      else
        console.log(
          v.kind === 'overlay'
            ? `${v.path}: a valid overlay of formula ${v.name}`
            : `${v.path}: formula ${v.name}@${v.version} is valid (${v.steps} step${v.steps === 1 ? '' : 's'})${v.runProblem ? `; note: ${v.runProblem}` : ''}`,
        );
    });
}

export function registerStepCommands(program: Command): void {
  const step = program
    .command('step')
    .description("a bead's formula steps: decide its approval steps; (agent) report a step done");
  step
    .command('done')
    .description(
      '(agent, session = "single" formulas) report the current step finished; its output is what the checklist and\n' +
        'later steps see. Steps are reported in order; after the last one, commit and run `gt done`.',
    )
    .argument('<step>', 'the step id (the checklist in your prompt names it)')
    .option('--output <text>', "the step's output: what was done, decided or found", '')
    .action(async (stepId: string, o: { output: string }) => {
      const { callGateway } = await import('../gateway-client');
      console.log((await callGateway('/v1/step-done', { stepId, output: o.output })).message ?? 'ok');
    });
  for (const verdict of ['approve', 'reject'] as const) {
    step
      .command(verdict)
      .description(
        verdict === 'approve'
          ? 'approve the approval step a bead is waiting on; the formula goes on'
          : 'reject the approval step a bead is waiting on: back to the step its loop names, with the note as feedback (or the round fails)',
      )
      .argument('<bead>', 'bead id')
      .argument('<step>', 'step id (see `gt bead status`)')
      .option(
        '--note <text>',
        verdict === 'approve' ? 'a note for the record' : 'what must change (the agent reads it)',
        '',
      )
      .option('--by <name>', 'who decides', process.env.USER ?? 'operator')
      .option('--json', 'print JSON')
      .action(async (bead: string, stepId: string, o: { note: string; by: string; json?: boolean }) => {
        // Imported when it runs: `gt formula …` reads files only and should not load the Temporal client.
        const { decideStep } = await import('../steps');
        const rec = await withTown((town) => decideStep(town, bead, { stepId, verdict, note: o.note, by: o.by }));
        if (o.json) printJson(rec);
        else console.log(`bead ${bead}: step ${stepId} ${verdict === 'approve' ? 'approved' : 'rejected'}`);
      });
  }
}
