/**
 * dispatch:<rig> — the rig's dispatch gate: capacity (maxPolecats), the operator's pause, and the circuit breaker
 * that stops dispatch after many consecutive agent start failures (a broken image, runtime or credentials) instead
 * of burning attempts on every bead. Beads ask for a slot before each run and give it back when the run ends.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { z } from 'zod';
import { DurationMs } from './durations';
import { BeadId, RigName, RunId } from './ids';
import type { RigConfig } from './rig';

export const dispatchGateWorkflowId = (rig: string) => `dispatch:${rig}`;

/**
 * The rig settings the gate enforces. They are the rig's current ones: the gate reads them from the rig's refinery
 * when it starts fresh, when `gt rig update` tells it the rig changed (rigChangedSignal), and when a request carries
 * settings it has not checked yet. Requests still carry their bead's snapshot; only histories from before
 * 'dispatch-gate-settings-from-rig' take them as they come.
 */
export const GateSettings = z.object({
  maxPolecats: z.number().int().min(1).max(1000),
  breakerThreshold: z.number().int().min(1).max(1000),
  breakerProbeInterval: DurationMs,
});
export type GateSettings = z.infer<typeof GateSettings>;

export const DispatchRequest = GateSettings.extend({
  beadId: BeadId,
  runId: RunId,
  /** Where the grant is sent. */
  workflowId: z.string().min(1).max(300),
});
export type DispatchRequest = z.input<typeof DispatchRequest>;

/**
 * A bead's run's request, with the rig settings the bead has: made by the bead's workflow for each run, and by a
 * convoy's worker ahead of a bead's first run (activities/dispatch.ts dispatchAsksAhead), which must match it exactly.
 */
export const dispatchRequestOf = (
  beadId: string,
  runId: string,
  workflowId: string,
  rig: Pick<RigConfig, 'maxPolecats' | 'policy'>,
): DispatchRequest => ({
  beadId,
  runId,
  workflowId,
  maxPolecats: rig.maxPolecats,
  breakerThreshold: rig.policy.breakerThreshold,
  breakerProbeInterval: rig.policy.breakerProbeInterval,
});

export const DispatchRelease = z.object({ runId: RunId });
export type DispatchRelease = z.infer<typeof DispatchRelease>;

/** Whether the granted run's agent started: the breaker counts consecutive `started: false`. */
export const DispatchReport = z.object({
  runId: RunId,
  started: z.boolean(),
  reason: z.string().max(2000).default(''),
});
export type DispatchReport = z.input<typeof DispatchReport>;

export const PauseRequest = z.object({
  reason: z.string().trim().min(1).max(2000).default('paused by an operator'),
  by: z.string().trim().min(1).max(200).default('operator'),
});
export type PauseRequest = z.input<typeof PauseRequest>;

export const ResumeRequest = z.object({ by: z.string().trim().min(1).max(200).default('operator') });
export type ResumeRequest = z.input<typeof ResumeRequest>;

export const DispatchGrant = z.object({
  runId: RunId,
  /** The breaker is open and this run is its probe: a successful start closes it. */
  probe: z.boolean(),
});
export type DispatchGrant = z.infer<typeof DispatchGrant>;

/**
 * The gate's answer to a request asked by update: granted now (the run may start, no grant signal follows), or queued
 * (the grant comes by signal when the run's turn comes).
 */
export const DispatchAnswer = z.object({ granted: z.boolean(), probe: z.boolean() });
export type DispatchAnswer = z.infer<typeof DispatchAnswer>;

export const GateSlot = z.object({
  beadId: BeadId,
  runId: RunId,
  workflowId: z.string().min(1).max(300),
  since: z.string(),
});
export type GateSlot = z.infer<typeof GateSlot>;

export const BreakerState = z.enum(['closed', 'open', 'half_open']);
export type BreakerState = z.infer<typeof BreakerState>;

export const Breaker = z.object({
  state: BreakerState,
  consecutiveFailures: z.number().int().nonnegative(),
  /** How often it has opened; each opening escalates once (`rig-<rig>-breaker-<trips>`). */
  trips: z.number().int().nonnegative(),
  openedAt: z.number().optional(),
  lastFailure: z.string().optional(),
  probeRunId: z.string().optional(),
});
export type Breaker = z.infer<typeof Breaker>;

const Paused = z.object({ reason: z.string(), by: z.string(), since: z.string() });

export interface DispatchGateState {
  rig: string;
  settings: GateSettings;
  paused?: z.infer<typeof Paused>;
  breaker: Breaker;
  running: GateSlot[];
  waiting: GateSlot[];
  granted: number;
  /** Runs of this gate so far (continue-as-new carries the state across). */
  generation: number;
}

/** What continue-as-new carries: everything but the settings, plus the dedupe memory of released/reported runs. */
export const CarriedGateState = z.object({
  paused: Paused.optional(),
  breaker: Breaker,
  running: z.array(GateSlot),
  waiting: z.array(GateSlot),
  granted: z.number().int().nonnegative(),
  generation: z.number().int().min(1),
  released: z.array(z.string()),
  reported: z.array(z.string()),
});
export type CarriedGateState = z.infer<typeof CarriedGateState>;

export const DispatchGateInput = z.object({
  rig: RigName,
  settings: GateSettings,
  /** State carried across continue-as-new. */
  carried: CarriedGateState.optional(),
  /** Continue-as-new after this many history events even if the server does not suggest it yet. */
  historyLimit: z.number().int().min(20).default(5000),
});
export type DispatchGateInput = z.input<typeof DispatchGateInput>;

export const dispatchRequestSignal = defineSignal<[DispatchRequest]>('dispatchRequest');
/** The request as an update: answered once the gate's next pass decided it, so a granted run needs no grant signal. */
export const requestDispatchUpdate = defineUpdate<DispatchAnswer, [DispatchRequest]>('requestDispatch');
export const dispatchReleaseSignal = defineSignal<[DispatchRelease]>('dispatchRelease');
export const dispatchReportSignal = defineSignal<[DispatchReport]>('dispatchReport');
/** Gate → bead workflow: the run may start. */
export const dispatchGrantSignal = defineSignal<[DispatchGrant]>('dispatchGrant');
export const pauseDispatchUpdate = defineUpdate<DispatchGateState, [PauseRequest]>('pauseDispatch');
/** Clears an operator pause and closes the breaker. */
export const resumeDispatchUpdate = defineUpdate<DispatchGateState, [ResumeRequest]>('resumeDispatch');
export const dispatchStateQuery = defineQuery<DispatchGateState>('dispatchState');
/** `gt rig update` → gate: the rig's configuration changed; the gate reads the current one from the refinery. */
export const rigChangedSignal = defineSignal('dispatchRigChanged');

/** The gate's settings in a rig's configuration. */
export const gateSettingsOf = (rig: {
  maxPolecats: number;
  policy: { breakerThreshold: number; breakerProbeInterval: number };
}): GateSettings => ({
  maxPolecats: rig.maxPolecats,
  breakerThreshold: rig.policy.breakerThreshold,
  breakerProbeInterval: rig.policy.breakerProbeInterval,
});
