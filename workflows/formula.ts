/**
 * The formula engine: runs one round of a bead's formula (docs/formulas.md) inside the bead workflow, step by step in
 * dependency order. `agent` steps are agent runs of the bead (the bead's own dispatch, supervision and fencing by run
 * id, with the step's rendered prompt); `gate` steps run commands on the branch through the contained gate runner;
 * `approval` steps wait durably for `gt step approve|reject`, escalating once when their timeout passes.
 *
 * Invariants:
 * - Every step's state lives in the bead's state (`steps`), and every effect of a step is an activity or child in
 *   the bead's history: after a worker crash the workflow replays, so a finished step is never run again.
 * - A loop (`loop = { from, max }` on a gate or approval step) goes back at most `max` times, carrying the failure as
 *   `{{feedback}}`; then the round fails. Rework after a failed merge re-enters at the formula's `rework` step;
 *   steps before it keep their outputs.
 * - The engine's position (next step, head, loops, loop feedback) is in the bead's state (`formulaAt`) before every
 *   step: a continue-as-new between steps and a retry carry it with the step records, and the next workflow run goes
 *   on at that step, so no finished step runs again in a new workflow run either.
 * - Earlier outputs enter later prompts only through renderTemplate: capped and quoted as untrusted agent text.
 * Only legal in workflow code (no Node built-ins).
 */
import {
  ApplicationFailure,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { HostQueueActivities, TownQueueActivities } from '../activities';
import { CAPS, capText } from '../domain/caps';
import { stepDecisionUpdate } from '../domain/messages';
import { escalationIdPart } from '../domain/escalation';
import {
  ancestors,
  capOutput,
  DEFAULT_LEGS,
  formulaLabel,
  renderTemplate,
  StepDecision,
  stepOrder,
  type FormulaPosition,
  type LegRecord,
  type ResolvedFormula,
  type StepRecord,
} from '../domain/formula';
import { legBranch } from '../domain/ids';
import { hostTaskQueue } from '../domain/task-queues';
import type { z } from 'zod';
import { failureMessage, parseOrReject } from '../domain/validation';
import { townActivities } from './agent-run';
import { Failure, RETRY } from '../domain/failures';
import { now, stepRecords, type AgentStep, type FormulaHost, type LegResult, type RunResult } from './formula-host';
import { runSingleSession } from './formula-session';

const steps = proxyActivities<TownQueueActivities>({
  startToCloseTimeout: '2h',
  heartbeatTimeout: '2m',
  retry: RETRY.formulaSteps,
});
const town = townActivities(20);

/**
 * patched() id: a legs step's worktrees are removed once it has ended, and the bead's leg branches once it has
 * merged (workflows/bead.ts). The explore history from before kept both.
 */
export const LEG_CLEANUP = 'formula-leg-cleanup';
/** patched() id: a formula bead past its history threshold continues as new between two steps. */
export const FORMULA_CONTINUES_AS_NEW = 'formula-continues-as-new';

/**
 * What a synthesis run is told about the legs before it (steps it depends on): each leg's branch, as its repository
 * has it (`origin/<branch>`, fetched from the rig's mirror), and its head — or that it committed nothing or failed.
 */
function legsSection(records: StepRecord[], before: Set<string>): string {
  const lines = records
    .filter((r) => r.legs && before.has(r.id))
    .flatMap((r) =>
      r.legs!.map((l) =>
        l.state === 'done' && l.headSha
          ? `- ${r.id}, leg ${l.leg}: \`origin/${l.branch}\` at ${l.headSha.slice(0, 12)}`
          : `- ${r.id}, leg ${l.leg}: ${l.state === 'done' ? 'committed nothing' : 'failed'}`,
      ),
    );
  if (!lines.length) return '';
  return `\n\nThe legs' branches are in your repository (fetch nothing; they are there):\n${lines.join('\n')}\n`;
}

/** The activities that remove leg worktrees, on the queue of the host that ran the legs. */
const legHost = (host: string, policy: FormulaHost['rig']['policy']) =>
  proxyActivities<HostQueueActivities>({
    taskQueue: hostTaskQueue(workflowInfo().taskQueue, host),
    // A host that is gone takes its worktrees with it: its queue is given up on, as a run's start would be.
    scheduleToStartTimeout: policy.startTimeout,
    startToCloseTimeout: '5m',
    retry: RETRY.formulaSteps,
  });

/**
 * Removes the worktrees of a legs step's legs on every host that ran one (the synthesis reads their branches from the
 * mirror). Best effort: a host that cannot do it now leaves them, as a lost host leaves any run's, and the bead goes on.
 */
async function removeLegWorktrees(host: FormulaHost, legs: LegResult[]): Promise<void> {
  const runs = new Set(legs.flatMap((l) => l.runs));
  const hosts = [...new Set(host.state.runs.flatMap((r) => (runs.has(r.runId) && r.host ? [r.host] : [])))];
  await Promise.all(
    hosts.map((h) =>
      legHost(h, host.rig.policy)
        .removeLegWorktrees.executeWithOptions({ summary: `remove the leg worktrees of ${host.bead.id} on ${h}` }, [
          { rig: host.rig.name, beadId: host.bead.id },
        ])
        .catch((err: unknown) => {
          if (isCancellation(err)) throw err;
          log.warn('could not remove leg worktrees', { beadId: host.bead.id, host: h, error: failureMessage(err) });
        }),
    ),
  );
}

/**
 * Deletes the bead's leg branches (every round's) from the rig's repository once it has merged: the merge holds what
 * the synthesis kept of them. Best effort, like the worktrees: a failure is logged and the bead still closes.
 */
export async function deleteLegBranches(rig: FormulaHost['rig'], beadId: string): Promise<void> {
  try {
    await steps.deleteLegBranches.executeWithOptions({ summary: `delete the leg branches of ${beadId}` }, [
      { rig, beadId },
    ]);
  } catch (err) {
    if (isCancellation(err)) throw err;
    log.warn('could not delete leg branches', { beadId, error: failureMessage(err) });
  }
}

/** Runs round `round` of the formula; the head that goes to the merge queue, or why the round failed. */
export async function runFormula(host: FormulaHost, formula: ResolvedFormula, round: number): Promise<RunResult> {
  if (formula.session === 'single') return runSingleSession(host, formula, round);
  const { bead, state } = host;
  const order = stepOrder(formula.steps);
  const total = order.length;
  // Records from an earlier round, or carried from an earlier workflow run (none after a `--fresh` retry).
  const ranBefore = state.steps !== undefined;
  const records = stepRecords(state, order);
  const record = (id: string) => records.find((r) => r.id === id)!;
  const indexOf = (id: string) => order.findIndex((s) => s.id === id);
  const lastAgent = order.reduce((last, s, i) => (s.kind === 'agent' || s.kind === 'synthesis' ? i : last), -1);

  let i = 0;
  let headSha = state.rounds.at(-1)?.headSha ?? '';
  const roundFeedback = state.feedback.at(-1);
  let loopFeedback: { from: string; text: string } | undefined;
  let loopsUsed: Record<string, number> = {};
  const carried = host.carried(round);
  if (carried && carried.next < total) {
    // This workflow run goes on where an earlier one stopped (it continued as new, or this is a retry): at that step,
    // with its head, loops and loop feedback; the steps before it are done and their records say so.
    i = carried.next;
    headSha = carried.headSha;
    loopsUsed = { ...carried.loopsUsed };
    loopFeedback = carried.loopFeedback;
  } else if (round > 1 && ranBefore) {
    // Rework re-enters at the declared step: it and everything after it run again, with the merge's feedback.
    i = Math.max(0, indexOf(formula.rework ?? order[0]!.id));
    for (const s of order.slice(i)) Object.assign(record(s.id), { state: 'pending' });
  }
  /** The engine's position before step `i` runs (or once all have): what another workflow run would go on from. */
  const position = (): FormulaPosition => ({
    round,
    next: i,
    headSha,
    loopsUsed: { ...loopsUsed },
    ...(loopFeedback ? { loopFeedback } : {}),
  });

  /** The approval step waiting for a decision, and the decision once given. */
  let waiting: { stepId: string; decision?: z.infer<typeof StepDecision> } | undefined;
  setHandler(
    stepDecisionUpdate,
    (raw) => {
      const d = StepDecision.parse(raw);
      waiting!.decision = d;
      return record(d.stepId);
    },
    {
      validator: (raw) => {
        const d = parseOrReject(StepDecision, raw, 'step decision');
        if (!waiting || waiting.stepId !== d.stepId || waiting.decision)
          throw ApplicationFailure.nonRetryable(
            `bead ${bead.id} is not waiting for approval of step '${d.stepId}'${waiting && !waiting.decision ? ` (it waits for '${waiting.stepId}')` : ''}`,
            Failure.NotWaiting,
          );
      },
    },
  );

  while (i < order.length) {
    state.formulaAt = position();
    // Between two steps nothing is in flight: the one place a formula bead hands over to a fresh history. Formula
    // histories from before never did (the marker is written only when it does, so they replay unchanged).
    if (host.continueAsNewDue() && host.patched(FORMULA_CONTINUES_AS_NEW)) await host.continueAsNew(round);
    const step = order[i]!;
    const rec = record(step.id);
    const label = `step ${i + 1}/${total} ${step.id}`;
    Object.assign(rec, { state: 'running', startedAt: now(), endedAt: undefined });
    rec.iterations++;
    host.setStep(label);
    const outputs: Record<string, string[]> = {};
    for (const r of records)
      if (r.state === 'done') outputs[r.id] = r.legs ? r.legs.map((l) => l.output ?? '') : [r.output ?? ''];
    const feedback = [roundFeedback, loopFeedback?.text].filter(Boolean).join('\n\n');
    let failed: string | undefined;

    if (step.kind === 'agent' || step.kind === 'synthesis') {
      let instructions = renderTemplate(step.prompt ?? '', {
        bead,
        vars: formula.vars,
        outputs,
        feedback: feedback || undefined,
      });
      if (step.kind === 'synthesis') instructions += legsSection(records, ancestors(formula.steps, step.id));
      const before = state.runs.length;
      const result = await host.runAgent(round, {
        prompt: {
          id: step.id,
          title: step.title,
          index: i + 1,
          total,
          formula: formulaLabel(formula),
          instructions,
          final: i === lastAgent,
        },
        attempts: step.attempts,
        agent: step.agent,
        runtime: step.runtime,
        timeout: step.timeout,
      });
      rec.runs.push(...state.runs.slice(before).map((r) => r.runId));
      if ('failure' in result) {
        Object.assign(rec, { state: 'failed', endedAt: now(), output: capOutput(result.failure) });
        host.setStep(undefined);
        return { failure: `${label} (${step.title}) failed: ${result.failure}` };
      }
      if (result.headSha) headSha = result.headSha;
      rec.output = capOutput(result.summary ?? '');
    } else if (step.kind === 'legs') {
      // Reachable only by formulas with a legs step, refused at sling before legs ran (formulaRunProblem): no recorded
      // history gets here, so running them needs no patched() id.
      const n = step.legs ?? DEFAULT_LEGS;
      const legs: AgentStep[] = Array.from({ length: n }, (_, k) => ({
        prompt: {
          id: step.id,
          title: `${step.title} — leg ${k + 1} of ${n}`,
          index: i + 1,
          total,
          formula: formulaLabel(formula),
          instructions: renderTemplate(step.prompt ?? '', {
            bead,
            vars: formula.vars,
            outputs,
            feedback: feedback || undefined,
            leg: k + 1,
          }),
          final: false,
        },
        attempts: step.attempts,
        agent: step.agent,
        runtime: step.runtime,
        timeout: step.timeout,
      }));
      const legRecords: LegRecord[] = (rec.legs = legs.map((_, k) => ({
        leg: k + 1,
        state: 'running' as const,
        branch: legBranch(bead.id, round, k + 1),
        runs: [],
      })));
      host.setStatus('in_progress', `${n} legs running`);
      const results = await host.runLegs(round, legs, (k, r) => {
        Object.assign(
          legRecords[k]!,
          'failure' in r
            ? { state: 'failed', output: capOutput(`(this leg failed) ${r.failure}`), runs: r.runs }
            : {
                state: 'done',
                headSha: r.headSha,
                output: capOutput(`${r.summary ?? ''}${r.headSha ? '' : '\n(this leg committed nothing)'}`),
                runs: r.runs,
              },
        );
      });
      rec.runs.push(...results.flatMap((r) => r.runs));
      if (host.patched(LEG_CLEANUP)) await removeLegWorktrees(host, results);
      const finished = results.filter((r) => !('failure' in r)).length;
      // The step goes on with the legs that finished (the synthesis sees the failed ones as failed); all failed, it fails.
      if (finished === 0)
        failed = `every leg failed:\n${legRecords.map((l) => `leg ${l.leg}: ${l.output}`).join('\n')}`;
      else rec.output = `${finished} of ${n} legs finished`;
    } else if (step.kind === 'gate') {
      const gates = step.gates ?? host.rig.gates;
      if (!headSha) failed = 'no step has committed anything yet: there is nothing to gate';
      else if (gates.length === 0) rec.output = 'no gates to run (the rig has none and the step names none)';
      else {
        host.setStatus('in_progress', `running gates on ${headSha.slice(0, 10)}`);
        try {
          const result = await steps.runStepGates.executeWithOptions(
            { summary: `${label}: gates on ${headSha.slice(0, 10)}` },
            [
              {
                rig: host.rig,
                beadId: bead.id,
                stepId: step.id,
                key: `step-${bead.id}-r${round}-${step.id}-${rec.iterations}`,
                headSha,
                gates,
                timeoutMs: step.timeout ?? host.rig.gateTimeout,
              },
            ],
          );
          if (result.ok) rec.output = result.output;
          else failed = result.output;
        } catch (err) {
          // The gates could not run at all (no runtime, the mirror unreachable, retries used up): a failed step, not
          // a failed workflow, so the bead fails (or loops) with the reason and escalates as any bead does.
          if (isCancellation(err)) throw err;
          failed = `the gates could not run: ${failureMessage(err)}`;
        }
      }
    } else if (step.kind === 'approval') {
      waiting = { stepId: step.id };
      rec.state = 'waiting';
      host.setStatus('in_progress', `waiting for \`gt step approve ${bead.id} ${step.id}\` (or reject)`);
      const decided = () => !!waiting?.decision;
      if (step.timeout !== undefined && !(await condition(decided, step.timeout))) {
        // Still waiting after the timeout: escalate once, and keep waiting (a human decides, never the clock).
        await town.raiseEscalation({
          id: `bead-${escalationIdPart(bead.id)}-${step.id}-r${round}-${rec.iterations}`,
          severity: 'high',
          source: 'bead',
          reason: `bead ${bead.id} has waited ${step.timeout} ms for approval of step '${step.id}' (${step.title}): \`gt step approve ${bead.id} ${step.id}\` or \`gt step reject ${bead.id} ${step.id} --note ...\``,
          rig: host.rig.name,
          beadId: bead.id,
          convoyId: host.convoyId,
        });
        host.setStatus('in_progress', `escalated; still waiting for \`gt step approve ${bead.id} ${step.id}\``);
      }
      await condition(decided);
      const d = waiting.decision!;
      waiting = undefined;
      const said = `${d.verdict === 'approve' ? 'approved' : 'rejected'} by ${d.by}${d.note ? `: ${d.note}` : ''}`;
      if (d.verdict === 'approve') rec.output = said;
      else failed = said;
    } else {
      // Every kind is handled above; a kind added to the format later is refused at sling until it runs here.
      failed = `step kind ${String(step.kind satisfies never)} cannot run on this version`;
    }

    if (failed !== undefined) {
      Object.assign(rec, { state: 'failed', endedAt: now(), output: capOutput(failed) });
      const used = loopsUsed[step.id] ?? 0;
      if (step.loop && used < step.loop.max) {
        loopsUsed[step.id] = used + 1;
        loopFeedback = {
          from: step.id,
          text: capText(`Step ${step.id} (${step.title}) sent the work back:\n${failed}`, CAPS.feedback),
        };
        const back = indexOf(step.loop.from);
        for (const s of order.slice(back, i + 1)) if (s.id !== step.id) record(s.id).state = 'pending';
        i = back;
        continue;
      }
      host.setStep(undefined);
      const bound = step.loop
        ? ` (after ${step.loop.max} loop${step.loop.max > 1 ? 's' : ''} back to ${step.loop.from})`
        : '';
      return { failure: capText(`${label} (${step.title}) failed${bound}: ${failed}`, CAPS.feedback) };
    }
    Object.assign(rec, { state: 'done', endedAt: now() });
    if (loopFeedback?.from === step.id) loopFeedback = undefined;
    i++;
  }
  state.formulaAt = position();
  host.setStep(undefined);
  if (!headSha) return { failure: `formula ${formulaLabel(formula)} ended without any commits on the branch` };
  return { headSha };
}
