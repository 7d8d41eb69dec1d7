/**
 * Formula files (TOML, parsed with smol-toml, validated by domain/formula.ts): the built-in ones shipped in `formulas/`,
 * the town's in `GT_HOME/formulas/`, a rig's in `GT_HOME/formulas/rigs/<rig>/`. A `<name>.toml` there is a formula of
 * its own (it shadows a built-in of the same name); a `<name>.overlay.toml` changes one (town overlays first, then the
 * rig's).
 *
 * Invariants: a formula is resolved (files read, overlays applied, variables bound) once, where work is handed out —
 * the CLI at `gt sling` / `gt convoy start`, the worker when a convoy starts a bead — and the bead workflow receives
 * the result in its input; every failure is one line naming the file and the problem, and nothing starts.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import {
  applyOverlay,
  DEFAULT_FORMULA,
  describeFormulaError,
  formulaRigProblem,
  formulaRunProblem,
  Formula,
  FormulaOverlay,
  resolveFormula,
  type ResolvedFormula,
} from '../domain/formula';
import { gtHome } from '../host/home';
import { parseOr } from '../domain/validation';

/** Formula files are small; anything bigger is refused before parsing. */
const MAX_FILE_BYTES = 256 * 1024;

export class FormulaError extends Error {}

/**
 * The built-in formulas: `formulas/` at the root of the installation, found upwards from this module (it runs from the
 * sources, activities/, and from the CLI bundle, dist/gt-cli/<build>/). GT_FORMULA_DIR overrides it.
 */
export function builtinFormulaDir(): string {
  if (process.env.GT_FORMULA_DIR) return resolve(process.env.GT_FORMULA_DIR);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'formulas', `${DEFAULT_FORMULA}.toml`))) return join(dir, 'formulas');
    dir = dirname(dir);
  }
  throw new FormulaError('the built-in formulas (formulas/*.toml) are missing from this installation');
}

export const townFormulaDir = (home = gtHome()) => join(home, 'formulas');
export const rigFormulaDir = (rig: string, home = gtHome()) => join(home, 'formulas', 'rigs', rig);

function readToml(path: string): unknown {
  let text: string;
  try {
    if (statSync(path).size > MAX_FILE_BYTES) throw new FormulaError(`${path}: larger than ${MAX_FILE_BYTES} bytes`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof FormulaError) throw err;
    throw new FormulaError(`${path}: ${(err as Error).message}`);
  }
  try {
    return parseToml(text);
  } catch (err) {
    // smol-toml's message carries a code excerpt on further lines: the first says what and where.
    throw new FormulaError(`${path}: invalid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown, path: string): z.output<S> {
  return parseOr(schema, value, (problem) => new FormulaError(`${path}: ${problem}`), describeFormulaError);
}

/** A formula file, validated (what `gt formula validate` checks). Throws FormulaError with one line. */
export function loadFormulaFile(path: string): Formula {
  const raw = readToml(path) as { steps?: unknown };
  return parseWith(Formula, raw, path);
}

export function loadOverlayFile(path: string): FormulaOverlay {
  return parseWith(FormulaOverlay, readToml(path), path);
}

export interface FormulaEntry {
  name: string;
  version: number;
  description: string;
  steps: number;
  /** `built-in`, `town` or `rig <name>`: where the formula itself comes from. */
  origin: string;
  path: string;
  overlays: string[];
}

export interface FormulaScope {
  home?: string;
  rig?: string;
}

const tomlFiles = (dir: string) =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith('.toml'))
        .sort()
    : [];

/** Formula files by name, the most specific last wins: built-in, then the town's, then the rig's. */
function formulaFiles(scope: FormulaScope): Map<string, { path: string; origin: string }> {
  const home = scope.home ?? gtHome();
  const dirs: [string, string][] = [
    [builtinFormulaDir(), 'built-in'],
    [townFormulaDir(home), 'town'],
  ];
  if (scope.rig) dirs.push([rigFormulaDir(scope.rig, home), `rig ${scope.rig}`]);
  const files = new Map<string, { path: string; origin: string }>();
  for (const [dir, origin] of dirs)
    for (const f of tomlFiles(dir).filter((f) => !f.endsWith('.overlay.toml')))
      files.set(f.slice(0, -'.toml'.length), { path: join(dir, f), origin });
  return files;
}

function overlayFiles(name: string, scope: FormulaScope): string[] {
  const home = scope.home ?? gtHome();
  const dirs = [townFormulaDir(home), ...(scope.rig ? [rigFormulaDir(scope.rig, home)] : [])];
  return dirs.map((d) => join(d, `${name}.overlay.toml`)).filter((p) => existsSync(p));
}

/** A formula by name with its overlays applied and validated again (an overlay may break it: that is its problem). */
export function loadFormula(name: string, scope: FormulaScope = {}): { formula: Formula; entry: FormulaEntry } {
  const file = formulaFiles(scope).get(name);
  if (!file) {
    const known = [...formulaFiles(scope).keys()].sort().join(', ');
    throw new FormulaError(`unknown formula '${name}' (known: ${known}; see \`gt formula list\`)`);
  }
  let formula = loadFormulaFile(file.path);
  const overlays = overlayFiles(name, scope);
  for (const path of overlays) {
    const overlay = loadOverlayFile(path);
    if (overlay.formula !== name)
      throw new FormulaError(`${path}: overlays formula '${overlay.formula}', but its file name says '${name}'`);
    const applied = applyOverlay(formula, overlay, path);
    if (!applied.ok) throw new FormulaError(applied.error);
    formula = parseWith(Formula, applied.formula, `${name} with ${path}`);
  }
  return {
    formula,
    entry: {
      name: formula.name,
      version: formula.version,
      description: formula.description,
      steps: formula.steps.length,
      origin: file.origin,
      path: file.path,
      overlays,
    },
  };
}

/** Every formula of the scope; a broken file is listed with its error instead of hiding the others. */
export function listFormulas(
  scope: FormulaScope = {},
): (FormulaEntry | { name: string; path: string; error: string })[] {
  return [...formulaFiles(scope).entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, file]) => {
      try {
        return loadFormula(name, scope).entry;
      } catch (err) {
        return { name, path: file.path, error: (err as Error).message };
      }
    });
}

/**
 * The formula a bead runs: by name (default `work`), overlays of the town and the bead's rig applied, variables bound.
 * Throws FormulaError with one line (unknown formula or variable, a missing required variable, a broken file).
 */
export function resolveFormulaFor(
  name: string | undefined,
  vars: Record<string, string>,
  scope: FormulaScope = {},
): ResolvedFormula {
  const { formula, entry } = loadFormula(name ?? DEFAULT_FORMULA, scope);
  const source = [entry.origin === 'built-in' ? 'built-in' : entry.path, ...entry.overlays].join(' + ');
  const resolved = resolveFormula(formula, vars, source);
  if (!resolved.ok) throw new FormulaError(resolved.error);
  return resolved.formula;
}

/**
 * The formula of a bead on `rig`: `name`, else the rig's default, else `work`; variables over the rig's. Refuses a
 * formula this version cannot run. Throws UserError-compatible FormulaError (one line).
 */
export function formulaForBead(
  rig: { name: string; formula?: string; formulaVars?: Record<string, string>; runtime?: string },
  name: string | undefined,
  vars: Record<string, string> | undefined,
  home?: string,
): ResolvedFormula {
  const chosen = name ?? rig.formula;
  // The rig's variables belong to the rig's formula: a bead naming another formula gets only its own.
  const given = { ...(chosen === rig.formula ? rig.formulaVars : {}), ...vars };
  const formula = resolveFormulaFor(chosen, given, { home, rig: rig.name });
  const problem = formulaRunProblem(formula) ?? formulaRigProblem(formula, rig);
  if (problem) throw new FormulaError(problem);
  return formula;
}
