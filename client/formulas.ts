/**
 * `gt formula list|show|validate` as typed functions (the CLI and the MCP server call these). They read formula files
 * only (the built-in ones, GT_HOME's, a rig's): no Temporal connection, so a formula can be checked anywhere. Every
 * failure is a UserError of one line.
 */
import { resolve } from 'node:path';
import {
  FormulaError,
  listFormulas as listFormulaFiles,
  loadFormula,
  loadFormulaFile,
  loadOverlayFile,
  type FormulaEntry,
} from '../activities/formulas';
import { ancestors, formulaRunProblem, isSingleRun, resolveFormula, stepOrder, type Formula } from '../domain/formula';
import { RigName } from '../domain/ids';
import { parseInput, UserError } from './town';

export interface FormulaListOptions {
  /** Include the formulas and overlays of this rig. */
  rig?: string;
  home?: string;
}

export type FormulaListRow = FormulaEntry | { name: string; path: string; error: string };

const scopeOf = (o: FormulaListOptions) => ({
  home: o.home,
  rig: o.rig === undefined ? undefined : parseInput(RigName, o.rig, 'rig name'),
});

const userErrors = <T>(fn: () => T): T => {
  try {
    return fn();
  } catch (err) {
    if (err instanceof FormulaError) throw new UserError(err.message);
    throw err;
  }
};

export function formulaList(o: FormulaListOptions = {}): FormulaListRow[] {
  return userErrors(() => listFormulaFiles(scopeOf(o)));
}

export interface FormulaShown extends FormulaEntry {
  formula: Formula;
  /** Steps in the order they run. */
  order: string[];
  /** Why a bead cannot run it on this version, if it cannot. */
  runProblem?: string;
}

export function formulaShow(name: string, o: FormulaListOptions = {}): FormulaShown {
  return userErrors(() => {
    const { formula, entry } = loadFormula(name, scopeOf(o));
    const bound = resolveFormula(formula, Object.fromEntries(Object.keys(formula.vars).map((k) => [k, 'x'])));
    return {
      ...entry,
      formula,
      order: stepOrder(formula.steps).map((s) => s.id),
      runProblem: bound.ok ? formulaRunProblem(bound.formula) : undefined,
    };
  });
}

export interface FormulaValidation {
  path: string;
  kind: 'formula' | 'overlay';
  name: string;
  version?: number;
  steps?: number;
  /** Set when the formula is valid but cannot run on this version (e.g. a step kind not implemented yet). */
  runProblem?: string;
}

/** Validates a formula or overlay file (`*.overlay.toml`); a bad one is a UserError naming the file and the problem. */
export function formulaValidate(path: string): FormulaValidation {
  const file = resolve(path);
  return userErrors(() => {
    if (file.endsWith('.overlay.toml')) {
      const o = loadOverlayFile(file);
      return { path: file, kind: 'overlay' as const, name: o.formula };
    }
    const f = loadFormulaFile(file);
    const bound = resolveFormula(f, Object.fromEntries(Object.keys(f.vars).map((k) => [k, 'x'])));
    return {
      path: file,
      kind: 'formula' as const,
      name: f.name,
      version: f.version,
      steps: f.steps.length,
      runProblem: bound.ok ? formulaRunProblem(bound.formula) : undefined,
    };
  });
}

export function describeFormulaList(rows: FormulaListRow[]): string {
  const lines = rows.map((r) =>
    'error' in r
      ? `${r.name.padEnd(14)} BROKEN  ${r.error}`
      : `${r.name.padEnd(14)} v${String(r.version).padEnd(4)} ${String(r.steps).padStart(2)} step${r.steps === 1 ? ' ' : 's'}  ${r.origin}${r.overlays.length ? ` + ${r.overlays.length} overlay${r.overlays.length > 1 ? 's' : ''}` : ''}  ${r.description}`,
  );
  return lines.length ? lines.join('\n') : '(none)';
}

export function describeFormula(s: FormulaShown): string {
  const f = s.formula;
  const lines = [
    `formula  ${f.name}@${f.version}  (${s.origin}${s.overlays.length ? ` + ${s.overlays.join(', ')}` : ''})`,
    `file     ${s.path}`,
  ];
  if (f.description) lines.push(`about    ${f.description}`);
  lines.push(`session  ${f.session}${f.rework ? `; rework re-enters at ${f.rework}` : ''}`);
  if (isSingleRun({ ...f, vars: {}, source: '' })) lines.push('runs     as one agent run (the default path)');
  if (s.runProblem) lines.push(`note     ${s.runProblem}`);
  const vars = Object.entries(f.vars);
  if (vars.length) {
    lines.push('', 'variables:');
    for (const [name, v] of vars)
      lines.push(
        `  ${name}${v.required ? ' (required)' : v.default !== undefined ? ` = ${JSON.stringify(v.default)}` : ''}  ${v.description}`,
      );
  }
  lines.push('', 'steps:');
  const byId = new Map(f.steps.map((st) => [st.id, st] as const));
  s.order.forEach((id, i) => {
    const st = byId.get(id)!;
    const extra = [
      st.needs.length ? `after ${st.needs.join(', ')}` : '',
      st.legs ? `${st.legs} legs` : '',
      st.loop ? `on failure back to ${st.loop.from} (at most ${st.loop.max}×)` : '',
      st.timeout !== undefined ? `timeout ${st.timeout} ms` : '',
      st.agent !== undefined ? `own agent \`${st.agent.slice(0, 80)}\`` : '',
      st.runtime !== undefined ? `runtime ${st.runtime}` : '',
    ].filter(Boolean);
    lines.push(`  ${i + 1}. ${st.id} [${st.kind}] ${st.title}${extra.length ? ` — ${extra.join('; ')}` : ''}`);
  });
  // Which outputs each prompt sees: the data flow an operator most needs to check.
  for (const st of f.steps) {
    const before = ancestors(f.steps, st.id);
    if (before.size && st.prompt) lines.push(`     ${st.id} may quote: ${[...before].join(', ')}`);
  }
  return lines.join('\n');
}
