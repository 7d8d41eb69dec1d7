import type { Command } from 'commander';
import { describeFormula, describeFormulaList, formulaList, formulaShow, formulaValidate } from '../formulas';
import { printJson } from '../output';

export function registerFormulaCommands(program: Command): void {
  const formula = program
    .command('formula')
    .description('formulas: multi-step agent work as versioned templates (docs/formulas.md)');
  formula
    .command('list')
    .description("the town's formulas: built-in, GT_HOME/formulas, and with --rig the rig's (overlays applied)")
    .option('--rig <name>', "include this rig's formulas and overlays")
    .option('--json', 'print JSON')
    .action((o: { rig?: string; json?: boolean }) => {
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
    .action((name: string, o: { rig?: string; json?: boolean }) => {
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
    .action((file: string, o: { json?: boolean }) => {
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
