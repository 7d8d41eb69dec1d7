/**
 * How work names a formula (a rig's default, a sling, a convoy spec): a name and variable values. Kept apart from
 * domain/formula.ts so the rig's schema can use it without importing the formula format (which imports the rig's).
 */
import { z } from 'zod';

export const FORMULA_VAR_VALUE_MAX = 4_000;
export const FORMULA_VARS_MAX = 40;

export const FormulaName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,62}$/,
    "formula name must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
  );
export const VarName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'variable names are letters, digits and _ (not starting with a digit)');

/** Variable values as given (`--var k=v`, a spec's `vars:`, a rig's `--formula-var`). */
export const FormulaVarValues = z
  .record(
    VarName,
    z.string().max(FORMULA_VAR_VALUE_MAX, `a variable's value is at most ${FORMULA_VAR_VALUE_MAX} characters`),
  )
  .refine((v) => Object.keys(v).length <= FORMULA_VARS_MAX, `at most ${FORMULA_VARS_MAX} variables`);
export type FormulaVarValues = z.infer<typeof FormulaVarValues>;
