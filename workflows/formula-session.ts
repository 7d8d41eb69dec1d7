/**
 * A formula with `session = "single"`: one agent run walks the steps (docs/formulas.md). Split from formula.ts, the
 * engine of per-step formulas, which hands such formulas here. Only legal in workflow code (no Node built-ins).
 */
import { ApplicationFailure } from '@temporalio/workflow';
import {
  capOutput,
  formulaLabel,
  renderTemplate,
  stepOrder,
  type PromptStep,
  type ResolvedFormula,
} from '../domain/formula';
import { now, stepRecords, type FormulaHost, type RunResult } from './formula-host';
import { Failure } from '../domain/failures';

/**
 * A `session = "single"` formula: one agent run (with the bead's attempts) walks every step, reporting each with
 * `gt step done <step> --output …`, in order; its prompt is the checklist (done steps with their outputs, the current
 * one marked), rebuilt for every attempt, so a crashed run's successor continues at the first step not reported.
 * `gt done` is refused while steps are left. Only agent steps without policies of their own (formulaRunProblem).
 * Reachable only by formulas refused at sling before it existed: no recorded history gets here (no patched() id).
 */
export async function runSingleSession(host: FormulaHost, formula: ResolvedFormula, round: number): Promise<RunResult> {
  const { bead, state } = host;
  const order = stepOrder(formula.steps);
  const total = order.length;
  // Records from an earlier round, or carried from an earlier workflow run (none after a `--fresh` retry).
  const ranBefore = state.steps !== undefined;
  const records = stepRecords(state, order);
  let current = 0;
  const carried = host.carried(round);
  // A retry goes on at the first step its failed run had not reported; rework re-enters at the `rework` step.
  if (carried && carried.next < total) current = carried.next;
  else if (round > 1 && ranBefore) {
    current = Math.max(
      0,
      order.findIndex((s) => s.id === (formula.rework ?? order[0]!.id)),
    );
    for (const r of records.slice(current)) r.state = 'pending';
  }
  const feedback = state.feedback.at(-1);
  const begin = () => {
    // The position a retry goes on from (a single session has no head of its own between steps, nor loops).
    state.formulaAt = { round, next: current, headSha: '', loopsUsed: {} };
    const rec = records[current];
    if (rec) {
      Object.assign(rec, { state: 'running', startedAt: now(), endedAt: undefined });
      rec.iterations++;
    }
    host.setStep(rec ? `step ${current + 1}/${total} ${rec.id}` : `steps ${total}/${total} reported`);
  };
  const checklist = (): PromptStep => {
    const outputs: Record<string, string[]> = {};
    for (const [k, s] of order.entries())
      outputs[s.id] = [k < current ? (records[k]!.output ?? '') : `(your output of step ${s.id}, once you report it)`];
    const lines = order.map(
      (s, k) => `- [${k < current ? 'x' : ' '}] ${k + 1}. \`${s.id}\` ${s.title}${k === current ? '  ← next' : ''}`,
    );
    const sections = order.map((s, k) => {
      const body =
        k < current
          ? `Done. You reported:\n${renderTemplate(`{{steps.${s.id}.output}}`, { bead, vars: formula.vars, outputs })}`
          : renderTemplate(s.prompt ?? '', { bead, vars: formula.vars, outputs, feedback });
      return `### ${k + 1}/${total} \`${s.id}\`: ${s.title}\n\n${body.trim()}`;
    });
    const next = order[Math.min(current, total - 1)]!;
    return {
      id: next.id,
      title: next.title,
      index: Math.min(current + 1, total),
      total,
      formula: formulaLabel(formula),
      instructions: capOutput(`${lines.join('\n')}\n\n${sections.join('\n\n')}`, 55_000),
      final: true,
      single: true,
    };
  };
  begin();
  host.walk({
    validate: (req) => {
      const expected = order[current];
      if (!expected)
        throw ApplicationFailure.nonRetryable(
          `every step of bead ${bead.id} is reported: commit your work and run gt done`,
          Failure.NotCurrentStep,
        );
      if (req.stepId !== expected.id)
        throw ApplicationFailure.nonRetryable(
          `step '${req.stepId}' is not the next step of bead ${bead.id}: report '${expected.id}' (step ${current + 1}/${total}) first; steps are reported in order`,
          Failure.NotCurrentStep,
        );
    },
    accept: (req) => {
      const rec = records[current]!;
      Object.assign(rec, { state: 'done', endedAt: now(), output: capOutput(req.output) });
      if (!rec.runs.includes(req.runId)) rec.runs.push(req.runId);
      current++;
      begin();
      const next = order[current];
      return {
        accepted: true,
        runId: req.runId,
        message: next
          ? `step ${req.stepId} done; next: ${next.id} (step ${current + 1}/${total})`
          : `step ${req.stepId} done; every step is reported: commit your work and run gt done`,
      };
    },
    doneRefused: () => {
      const left = order[current];
      return left
        ? `report the steps left first: \`gt step done ${left.id} --output "…"\` (${total - current} of ${total} left), then gt done`
        : undefined;
    },
  });
  const step = {
    get prompt() {
      return checklist();
    },
  };
  let result: RunResult;
  try {
    result = await host.runAgent(round, step);
  } finally {
    host.walk(undefined);
    host.setStep(undefined);
  }
  if ('failure' in result) {
    const rec = records[current];
    if (rec) Object.assign(rec, { state: 'failed', endedAt: now(), output: capOutput(result.failure) });
    return { failure: `formula ${formulaLabel(formula)} (one run walking its steps) failed: ${result.failure}` };
  }
  if (!result.headSha) return { failure: `formula ${formulaLabel(formula)} ended without any commits on the branch` };
  return { headSha: result.headSha };
}
