/**
 * How each workflow of a town is started: its type, its (deterministic) id, its task queue, its search attributes,
 * memo, static summary and details, and its id reuse/conflict policy — written once here, so the CLI, the activities
 * (a convoy starting its beads, a bead asking its rig's gate, a merge request reaching its refinery), the MCP server
 * and the tests start every workflow the same way. Callers pass the domain inputs and hand the result to the client:
 *
 *   const s = beadStart({ taskQueue, input: { bead, rig, formula } });
 *   await client.workflow.start<typeof beadWorkflow>(s.workflowType, s.options);
 *   await client.workflow.signalWithStart(s.workflowType, withSignal(s, enqueueSignal, [ticket]));
 *
 * What to do when the id is taken (a UserError, an `existing` outcome) stays with the caller: it differs by caller.
 * Pure and deterministic (no Node, no client): workflows may build their child starts from here too.
 */
import {
  WorkflowIdReusePolicy,
  type Duration,
  type SearchAttributePair,
  type WorkflowIdConflictPolicy,
} from '@temporalio/common';
import { startingRound, type BeadWorkflowInput } from './bead';
import {
  landingMergeRequestId,
  type ConvoyCheckpoint,
  type ConvoyOptionsInput,
  type ResolvedConvoySpec,
} from './convoy';
import { dispatchGateWorkflowId, type DispatchGateInput } from './dispatch';
import type { z } from 'zod';
import { escalationWorkflowId, type EscalationInput } from './escalation';
import { formulaLabel } from './formula';
import { beadWorkflowId, convoyWorkflowId, mergeRequestWorkflowId, refineryWorkflowId } from './ids';
import type { ReadRunLogRequest } from './logs';
import { SA, type WorkflowKind } from './search-attributes';
import { RigConfig } from './rig';

/** The registered name of each workflow function (workflows/index.ts). */
export const WORKFLOW_TYPE = {
  bead: 'beadWorkflow',
  'merge-request': 'mergeRequestWorkflow',
  refinery: 'refineryWorkflow',
  convoy: 'convoyWorkflow',
  escalation: 'escalationWorkflow',
  'dispatch-gate': 'dispatchGateWorkflow',
  'run-log': 'readRunLogWorkflow',
} as const satisfies Record<WorkflowKind | 'run-log', string>;

export interface StartOptions<A extends unknown[]> {
  workflowId: string;
  taskQueue: string;
  args: A;
  typedSearchAttributes?: SearchAttributePair[];
  memo?: Record<string, unknown>;
  staticSummary?: string;
  staticDetails?: string;
  workflowIdReusePolicy?: WorkflowIdReusePolicy;
  workflowIdConflictPolicy?: WorkflowIdConflictPolicy;
  workflowExecutionTimeout?: Duration;
}

export interface WorkflowStart<A extends unknown[]> {
  workflowType: (typeof WORKFLOW_TYPE)[keyof typeof WORKFLOW_TYPE];
  options: StartOptions<A>;
}

/** A child workflow's start: the parent's task queue, so none here. */
export interface ChildStart<A extends unknown[]> {
  workflowType: WorkflowStart<A>['workflowType'];
  options: Omit<StartOptions<A>, 'taskQueue'>;
}

/** The search attribute every town workflow carries first: what it is (`GtKind = "bead"`). */
const kind = (k: WorkflowKind): SearchAttributePair => ({ key: SA.kind, value: k });
const present = <T>(value: T | undefined, pair: (v: T) => SearchAttributePair): SearchAttributePair[] =>
  value === undefined ? [] : [pair(value)];

/** The options of a signal-with-start of `start` (signal-with-start always signals the running workflow if any). */
export function withSignal<A extends unknown[], S extends unknown[], D>(
  start: WorkflowStart<A>,
  signal: D,
  signalArgs: [...S],
): Omit<StartOptions<A>, 'workflowIdConflictPolicy'> & { signal: D; signalArgs: S } {
  const { workflowIdConflictPolicy: _ignored, ...options } = start.options;
  return { ...options, signal, signalArgs };
}

// --- beads ---

/**
 * A bead's workflow: slung alone (the CLI, MCP), started by its convoy (activities/convoy.ts), or retried
 * (activities/bead-retry.ts: `retry` is the retry's number). A bead id is used once: only a retry may follow a closed
 * run of the same id, and only with that run closed (a running one makes the start fail).
 */
export function beadStart(opts: {
  taskQueue: string;
  input: BeadWorkflowInput;
  retry?: number;
}): WorkflowStart<[BeadWorkflowInput]> {
  const { taskQueue, input, retry } = opts;
  const { bead, rig, convoy, formula } = input;
  const label = formula ? formulaLabel(formula) : undefined;
  const about = [...(retry !== undefined ? [`retry ${retry}`] : []), ...(convoy ? [`convoy ${convoy.id}`] : [])];
  return {
    workflowType: WORKFLOW_TYPE.bead,
    options: {
      workflowId: beadWorkflowId(bead.id),
      taskQueue,
      args: [input],
      // A bead id is used once: terminal beads are never restarted, a retry is a new run started once the last closed.
      workflowIdReusePolicy:
        retry === undefined ? WorkflowIdReusePolicy.REJECT_DUPLICATE : WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      typedSearchAttributes: [
        kind('bead'),
        { key: SA.rig, value: rig.name },
        { key: SA.beadId, value: bead.id },
        ...present(convoy?.id, (id) => ({ key: SA.convoyId, value: id })),
        // What the bead's first status write would say: it skips that write (workflows/bead-state.ts writes on change).
        { key: SA.status, value: 'open' },
        { key: SA.round, value: startingRound(input.resume) },
        ...present(label, (l) => ({ key: SA.formula, value: l })),
      ],
      memo: {
        title: bead.title,
        ...(convoy ? { convoyId: convoy.id } : {}),
        ...(label ? { formula: label } : {}),
        ...(retry !== undefined ? { retry } : {}),
      },
      staticSummary: `bead ${bead.id}${about.length ? ` (${about.join(', ')})` : ''}: ${bead.title}`,
      staticDetails: bead.description || undefined,
    },
  };
}

/**
 * A bead's merge request (a child of the bead, on the parent's task queue): the bead adds its parent close policy.
 * Tests start one directly with a task queue.
 */
export function mergeRequestStart<
  I extends { bead: { id: string; title: string }; rig: { name: string }; round: number; convoyId?: string },
>(input: I): ChildStart<[I]> {
  return {
    workflowType: WORKFLOW_TYPE['merge-request'],
    options: {
      workflowId: mergeRequestWorkflowId(input.bead.id, input.round),
      args: [input],
      typedSearchAttributes: [
        kind('merge-request'),
        { key: SA.rig, value: input.rig.name },
        { key: SA.beadId, value: input.bead.id },
        ...present(input.convoyId, (id) => ({ key: SA.convoyId, value: id })),
      ],
      staticSummary: `MR round ${input.round} of ${input.bead.id}: ${input.bead.title}`,
    },
  };
}

/**
 * A convoy's landing merge request (a child of the convoy, review-then-land): the convoy branch onto the target, its
 * bead the convoy itself (`convoyTitle`: the convoy's own title, for the summary).
 */
export function convoyLandingStart<
  I extends { bead: { id: string; title: string }; rig: { name: string }; round: number; convoyId: string },
>(input: I, convoyTitle: string): ChildStart<[I]> {
  return {
    workflowType: WORKFLOW_TYPE['merge-request'],
    options: {
      workflowId: landingMergeRequestId(input.convoyId, input.round),
      args: [input],
      typedSearchAttributes: [
        kind('merge-request'),
        { key: SA.rig, value: input.rig.name },
        { key: SA.convoyId, value: input.convoyId },
      ],
      staticSummary: `landing of convoy ${input.convoyId} (round ${input.round}): ${convoyTitle}`,
    },
  };
}

// --- rigs ---

/**
 * A rig's refinery: started by `gt rig add`, or by the first merge request that reaches a rig whose refinery is not
 * running (signal-with-start). No reuse policy: a removed rig can be added again.
 */
export function refineryStart<I extends { rig: { name: string; repo: string; branch: string } }>(opts: {
  taskQueue: string;
  input: I;
}): WorkflowStart<[I]> {
  const { rig } = opts.input;
  // The configuration the refinery starts with, read by currentRigConfig without a query (the refinery keeps it
  // current on `gt rig update`).
  const config = RigConfig.safeParse(rig);
  return {
    workflowType: WORKFLOW_TYPE.refinery,
    options: {
      workflowId: refineryWorkflowId(rig.name),
      taskQueue: opts.taskQueue,
      args: [opts.input],
      typedSearchAttributes: [kind('refinery'), { key: SA.rig, value: rig.name }, { key: SA.status, value: 'idle' }],
      memo: { repo: rig.repo, branch: rig.branch, ...(config.success ? { config: config.data } : {}) },
      staticSummary: `refinery of rig ${rig.name} (${rig.repo} → ${rig.branch})`,
    },
  };
}

/**
 * A rig's dispatch gate, started by whoever needs it first (an operator's pause, a bead asking for a slot) with the
 * settings that caller has; a gate already running is used as it is.
 */
export function dispatchGateStart(opts: {
  taskQueue: string;
  input: DispatchGateInput;
}): WorkflowStart<[DispatchGateInput]> {
  const { rig } = opts.input;
  return {
    workflowType: WORKFLOW_TYPE['dispatch-gate'],
    options: {
      workflowId: dispatchGateWorkflowId(rig),
      taskQueue: opts.taskQueue,
      args: [opts.input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      typedSearchAttributes: [kind('dispatch-gate'), { key: SA.rig, value: rig }, { key: SA.status, value: 'open' }],
      staticSummary: `dispatch gate of rig ${rig}: capacity, pause, circuit breaker`,
    },
  };
}

// --- convoys ---

const convoyAttributes = (rig: string, convoyId: string, status: string): SearchAttributePair[] => [
  kind('convoy'),
  { key: SA.rig, value: rig },
  { key: SA.convoyId, value: convoyId },
  { key: SA.status, value: status },
];

/** A new convoy (staged: its plan recorded, nothing dispatched until launch). A convoy id is used once, like a bead's. */
export function convoyStart(opts: {
  taskQueue: string;
  spec: ResolvedConvoySpec;
  staged: boolean;
  options: ConvoyOptionsInput;
}) {
  const { spec, staged } = opts;
  return {
    workflowType: WORKFLOW_TYPE.convoy,
    options: {
      workflowId: convoyWorkflowId(spec.id),
      taskQueue: opts.taskQueue,
      args: [{ spec, staged, options: opts.options }],
      // A convoy id is used once, like a bead id: its beads' ids derive from it.
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      typedSearchAttributes: convoyAttributes(spec.rig, spec.id, staged ? 'staged' : 'running'),
      memo: { title: spec.title, mergeMode: spec.mergeMode },
      staticSummary: `convoy ${spec.id}: ${spec.title} (${spec.beads.length} beads, ${spec.mergeMode})`,
      staticDetails: spec.description || undefined,
    },
  } satisfies WorkflowStart<[unknown]>;
}

/** A failed convoy reopened from its last checkpoint (`op`: the recovery that reopened it), once its run has closed. */
export function convoyReopenStart(opts: {
  taskQueue: string;
  checkpoint: ConvoyCheckpoint;
  options: ConvoyOptionsInput;
  op: string;
}) {
  const { state } = opts.checkpoint;
  return {
    workflowType: WORKFLOW_TYPE.convoy,
    options: {
      workflowId: convoyWorkflowId(state.convoyId),
      taskQueue: opts.taskQueue,
      args: [{ checkpoint: opts.checkpoint, options: opts.options }],
      // Only after the failed run has closed; two reopenings racing: one starts, the other finds it running.
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      typedSearchAttributes: convoyAttributes(state.rig, state.convoyId, 'running'),
      memo: { title: state.title, mergeMode: state.mergeMode },
      staticSummary: `convoy ${state.convoyId} reopened (${opts.op}): ${state.title}`,
    },
  } satisfies WorkflowStart<[unknown]>;
}

// --- escalations ---

/** An escalation, raised once per id: a repeated raise finds the existing one (or its closed run). */
export function escalationStart(opts: {
  taskQueue: string;
  input: z.output<typeof EscalationInput>;
}): WorkflowStart<[z.output<typeof EscalationInput>]> {
  const { input } = opts;
  return {
    workflowType: WORKFLOW_TYPE.escalation,
    options: {
      workflowId: escalationWorkflowId(input.id),
      taskQueue: opts.taskQueue,
      args: [input],
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      typedSearchAttributes: [
        kind('escalation'),
        { key: SA.status, value: 'open' },
        ...present(input.rig, (v) => ({ key: SA.rig, value: v })),
        ...present(input.beadId, (v) => ({ key: SA.beadId, value: v })),
        ...present(input.convoyId, (v) => ({ key: SA.convoyId, value: v })),
        ...present(input.runId, (v) => ({ key: SA.runId, value: v })),
      ],
      memo: { severity: input.severity, reason: input.reason.slice(0, 500) },
      staticSummary: `${input.severity} escalation (${input.source}): ${input.reason.slice(0, 120)}`,
    },
  };
}

// --- gt logs ---

/**
 * One bounded read of a run's output on its host. `nonce` makes the id fresh: reads are independent, and a repeated
 * one must not be taken for the earlier read. Bounded even when no worker of the town runs at all.
 */
export function runLogReadStart(opts: {
  taskQueue: string;
  request: ReadRunLogRequest;
  nonce: string;
}): WorkflowStart<[ReadRunLogRequest]> {
  const { request } = opts;
  return {
    workflowType: WORKFLOW_TYPE['run-log'],
    options: {
      workflowId: `logs:${request.runId}:${opts.nonce}`,
      taskQueue: opts.taskQueue,
      args: [request],
      workflowExecutionTimeout: (request.waitMs ?? 0) + 90_000,
      staticSummary: `gt logs: read the output of ${request.runId} on ${request.host}`,
    },
  };
}
