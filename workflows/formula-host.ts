/**
 * What the formula engine (formula.ts, formula-session.ts) and the bead (bead-runs.ts) share: the engine's view of its
 * bead (`FormulaHost`), one agent step as the bead runs it, run results, and the step records kept in the bead's state.
 * Only legal in workflow code (no Node built-ins).
 */
import type { AgentReply, BeadSpec, BeadState, BeadStatus, StepDoneRequest } from '../domain/bead';
import type { FormulaPosition, FormulaStep, PromptStep, StepRecord } from '../domain/formula';
import type { RigConfig } from '../domain/rig';
import type { z } from 'zod';

/** What a `session = "single"` formula's engine answers for its run (the bead's handlers ask it). */
export interface SingleSession {
  /** Throws (non-retryable) when `gt step done` for this step is not what the bead waits for. */
  validate(req: z.output<typeof StepDoneRequest>): void;
  accept(req: z.output<typeof StepDoneRequest>): AgentReply;
  /** Why `gt done` is refused now (steps left), or undefined. */
  doneRefused(): string | undefined;
}

/**
 * One agent step as the bead runs it: its prompt section, its own bound on attempts, and its overrides of the rig's
 * agent command, runtime, and the hard cap on one run (`timeout`). The overrides were refused at sling before they
 * were honoured (formulaRunProblem), so no recorded history carries them: honouring them needs no patched() id.
 */
export interface AgentStep {
  prompt: PromptStep;
  attempts?: number;
  agent?: string;
  runtime?: RigConfig['runtime'];
  timeout?: number;
  /**
   * A leg of a legs step: its number, the last run of the round before the legs, and its own earlier attempts
   * (workflows/bead-runs.ts; prepareRun stops stale runs of the bead except the other legs').
   */
  leg?: { index: number; after: number; earlier: string[] };
}

/** How one leg of a legs step ended, and its runs. */
export type LegResult = RunResult & { runs: string[] };

/**
 * A run's (or a formula round's) result: the published head, or why it failed. `mergedAs`: the refinery had already
 * merged that head as the round's merge request (bead-runs.ts TAKES_MERGED_BRANCH).
 */
export type RunResult = { headSha: string; summary?: string; mergedAs?: string } | { failure: string };

/** What the engine may use of its bead (workflows/bead.ts builds it). */
export interface FormulaHost {
  bead: BeadSpec;
  rig: RigConfig;
  convoyId?: string;
  state: BeadState;
  /** Runs one agent step: attempts of the bead's own runs (dispatch slot, supervision, fencing), then the published head. */
  runAgent(round: number, step: AgentStep): Promise<RunResult>;
  /** Runs the legs of a legs step at once (each as runAgent runs a step, on a branch of its own); `ended` as each ends. */
  runLegs(round: number, legs: AgentStep[], ended: (i: number, r: LegResult) => void): Promise<LegResult[]>;
  /** While a session = "single" formula's run walks the steps: what answers `gt step done` (undefined after). */
  walk(session: SingleSession | undefined): void;
  /**
   * The position this workflow run of the bead was handed for `round`: the bead continued as new between two steps,
   * or it is a retry of a run that stopped at a step. Undefined otherwise (the engine starts, or re-enters for rework).
   */
  carried(round: number): FormulaPosition | undefined;
  /** Whether the bead's history is past its threshold: the engine then continues as new before its next step. */
  continueAsNewDue(): boolean;
  /** Continues as new now, between two steps (nothing in flight), carrying `state.formulaAt` and the step records. */
  continueAsNew(round: number): Promise<never>;
  /** The step shown before the bead's status line ("step 3/5 self-review"); undefined between steps. */
  setStep(label: string | undefined): void;
  setStatus(status: BeadStatus, waitingFor: string): void;
  /** Whether this run of the bead takes a change's new branch (the bead's patch baseline, workflows/patches.ts). */
  patched(patchId: string): boolean;
}

export const now = () => new Date().toISOString();

/** The bead's step records (kept in its state: done steps survive replay), created on first use. */
export function stepRecords(state: BeadState, order: FormulaStep[]): StepRecord[] {
  return (state.steps ??= order.map((s) => ({
    id: s.id,
    title: s.title,
    kind: s.kind,
    state: 'pending' as const,
    iterations: 0,
    runs: [],
  })));
}
