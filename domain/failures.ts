/**
 * Failure types: the `type` of every ApplicationFailure the town throws, named once, with the activity retry policies
 * that refuse to retry them. A type is part of the contract between who throws (an activity, an update validator) and
 * who reads it (a retry policy, the gateway mapping a refusal to an HTTP status, the CLI): both sides use these names.
 *
 * Deterministic (no Node): workflows import the retry policies from here.
 */
import type { RetryPolicy } from '@temporalio/common';

export const Failure = {
  // --- input ---
  /** A workflow, update or activity input that does not match its schema (domain/validation.ts). */
  InvalidInput: 'InvalidInput',

  // --- agent runs (activities/agent-runs.ts, activities/review-runs.ts) ---
  /** The rig's agent runtime (bwrap, docker…) is not available on this host. */
  RuntimeUnavailable: 'RuntimeUnavailable',
  /** The rig has no command for this role (polecat, reviewer). */
  NoAgentCommand: 'NoAgentCommand',
  /** The runtime refused to start the agent (a configuration it will never accept). */
  AgentStartRefused: 'AgentStartRefused',
  /** launchRun's start took longer than the rig's start timeout: retried, and the retry adopts an agent that did start. */
  AgentStartTimedOut: 'AgentStartTimedOut',
  /** A run launched ahead of its bead with other settings than the bead's own (activities/launch-ahead.ts): stopped. */
  LaunchedOtherwise: 'LaunchedOtherwise',
  /** The merge request's head commit is gone from the mirror. */
  HeadMissing: 'HeadMissing',
  /** The worker is shutting down: retried on another (or the restarted) worker. */
  WorkerShutdown: 'WorkerShutdown',

  // --- agents speaking through the gateway (update validators) ---
  /** The update came from a run that is no longer the current one (gateway: 409). */
  StaleRun: 'StaleRun',
  /** gt_progress sooner than the bead accepts (gateway/progress-coalescer.ts swallows it). */
  ProgressTooSoon: 'ProgressTooSoon',
  /** The run already called gt done or handed off. */
  RunEnding: 'RunEnding',
  HandoffCapReached: 'HandoffCapReached',
  /** The bead has ended: nothing to nudge or cancel. */
  BeadTerminal: 'BeadTerminal',
  /** The reviewer's verdict is already recorded. */
  VerdictRecorded: 'VerdictRecorded',

  // --- git and merges (activities/merge.ts, activities/convoy.ts) ---
  /** The target branch does not exist in the rig's repository. */
  TargetMissing: 'TargetMissing',
  /** The remote refused the push (protected branch, hooks). */
  PushRefused: 'PushRefused',
  /** The target moved on every attempt to push onto it: retried. */
  TargetKeptMoving: 'TargetKeptMoving',
  /** Creating the convoy branch failed: retried. */
  BranchCreateFailed: 'BranchCreateFailed',
  ConvoyBranchMissing: 'ConvoyBranchMissing',
  /** The rig was removed (its refinery no longer answers). */
  UnknownRig: 'UnknownRig',
  /** A rig cannot be removed while merge requests are queued or merging. */
  RigBusy: 'RigBusy',

  // --- forge (activities/forge.ts) ---
  ForgeNotConfigured: 'ForgeNotConfigured',
  ForgeAuth: 'ForgeAuth',
  ForgeRejected: 'ForgeRejected',
  /** Retried, after the delay the forge asked for. */
  ForgeRateLimited: 'ForgeRateLimited',
  /** Retried. */
  ForgeUnavailable: 'ForgeUnavailable',

  // --- convoys (update validators of workflows/convoy.ts) ---
  InvalidEdit: 'InvalidEdit',
  InvalidRecovery: 'InvalidRecovery',
  NotStaged: 'NotStaged',
  ConvoyEnded: 'ConvoyEnded',
  ConvoyBusy: 'ConvoyBusy',
  ConvoyClosing: 'ConvoyClosing',
  NothingToRetry: 'NothingToRetry',

  // --- formulas (workflows/formula.ts) ---
  /** A step decision for a step that is not waiting for one. */
  NotWaiting: 'NotWaiting',
  /** `gt step done` for a step that is not the session's current one (session = "single"). */
  NotCurrentStep: 'NotCurrentStep',
  /** `gt step done` on a bead whose formula does not run one session. */
  NotSingleSession: 'NotSingleSession',
  /** `gt done` while a single session's steps are left unreported. */
  StepsLeft: 'StepsLeft',

  // --- escalation webhook (activities/notify.ts) ---
  /** The webhook answered 4xx: a dead letter, never retried. */
  WebhookRefused: 'WebhookRefused',
  WebhookFailed: 'WebhookFailed',
  WebhookUnreachable: 'WebhookUnreachable',

  // --- gt logs (workflows/run-log.ts) ---
  LogReadFailed: 'LogReadFailed',
} as const;

export type FailureType = (typeof Failure)[keyof typeof Failure];

/** Failures no retry can fix, by the activities that throw them. */
export const NON_RETRYABLE = {
  /** Every activity: a bad input stays bad. */
  input: [Failure.InvalidInput],
  /** Starting (or adopting) an agent run. */
  agentStart: [Failure.RuntimeUnavailable, Failure.InvalidInput, Failure.NoAgentCommand, Failure.AgentStartRefused],
  /** Supervising an agent run: retries re-attach to the live process. */
  agentSupervise: [Failure.RuntimeUnavailable, Failure.InvalidInput],
  /** Preparing a bead's worktree. */
  worktree: [Failure.InvalidInput, Failure.TargetMissing],
  /** Forge calls (pull requests). */
  forge: [Failure.InvalidInput, Failure.ForgeAuth, Failure.ForgeRejected, Failure.ForgeNotConfigured],
  /** The convoy's town activities (rig config, convoy branch, starting beads). */
  convoy: [Failure.InvalidInput, Failure.UnknownRig, Failure.TargetMissing, Failure.ConvoyBranchMissing],
  /** The escalation webhook. */
  webhook: [Failure.WebhookRefused, Failure.InvalidInput],
} as const satisfies Record<string, readonly FailureType[]>;

const list = (types: readonly FailureType[]): string[] => [...types];

/** Retry policies shared by the workflows' activity proxies (each names its non-retryable failures from above). */
export const RETRY = {
  /** Start-or-adopt by run id: a retry after an uncertain start adopts the agent instead of launching a second. */
  agentStart: {
    initialInterval: '1s',
    maximumInterval: '10s',
    maximumAttempts: 3,
    nonRetryableErrorTypes: list(NON_RETRYABLE.agentStart),
  },
  /** Retries re-attach to the live agent through its handle; they never relaunch it. */
  agentSupervise: {
    initialInterval: '1s',
    maximumInterval: '10s',
    maximumAttempts: 5,
    nonRetryableErrorTypes: list(NON_RETRYABLE.agentSupervise),
  },
  /** A bead's worktree. */
  worktree: {
    initialInterval: '2s',
    maximumInterval: '30s',
    maximumAttempts: 5,
    nonRetryableErrorTypes: list(NON_RETRYABLE.worktree),
  },
  /** The refinery's merges and gates. */
  merge: {
    initialInterval: '2s',
    backoffCoefficient: 2,
    maximumInterval: '2m',
    maximumAttempts: 8,
    nonRetryableErrorTypes: list(NON_RETRYABLE.input),
  },
  /** The refinery's forge calls. */
  refineryForge: {
    initialInterval: '2s',
    backoffCoefficient: 2,
    maximumInterval: '2m',
    maximumAttempts: 10,
    nonRetryableErrorTypes: list(NON_RETRYABLE.forge),
  },
  /** A merge request following its pull request. */
  pullRequest: {
    initialInterval: '2s',
    backoffCoefficient: 2,
    maximumInterval: '1m',
    maximumAttempts: 5,
    nonRetryableErrorTypes: list(NON_RETRYABLE.forge),
  },
  /** The convoy's town activities. */
  convoy: {
    initialInterval: '1s',
    backoffCoefficient: 2,
    maximumInterval: '1m',
    maximumAttempts: 20,
    nonRetryableErrorTypes: list(NON_RETRYABLE.convoy),
  },
  /** About two minutes of attempts at the escalation webhook, then a dead letter. */
  webhook: {
    initialInterval: '1s',
    backoffCoefficient: 2,
    maximumInterval: '30s',
    maximumAttempts: 8,
    nonRetryableErrorTypes: list(NON_RETRYABLE.webhook),
  },
  /** A formula's step activities. */
  formulaSteps: {
    initialInterval: '2s',
    maximumInterval: '1m',
    maximumAttempts: 5,
    nonRetryableErrorTypes: list(NON_RETRYABLE.input),
  },
  /** One bounded read of a run's output (gt logs). */
  logRead: { initialInterval: '500ms', maximumAttempts: 2, nonRetryableErrorTypes: list(NON_RETRYABLE.input) },
} as const satisfies Record<string, RetryPolicy>;
