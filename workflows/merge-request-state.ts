/**
 * The merge request workflow's input, state and status line (workflows/merge-request.ts is the process): what it
 * shows (MergeRequestState, its phase and search attributes), the refinery's answer as its signal delivers it (matched
 * on MR id and head sha), and the rig's current configuration as its refinery holds it.
 */
import {
  CancellationScope,
  getExternalWorkflowHandle,
  log,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import { BeadSpec } from '../domain/bead';
import { CommitId, ConvoyId, refineryWorkflowId } from '../domain/ids';
import { mergeRequestStateQuery, mergeResultSignal, withdrawSignal } from '../domain/messages';
import {
  MergeResult,
  MergeTicket,
  type MergeRequestState,
  type MergeTicketInput,
  type MergeTicketTemplate,
} from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import { townActivities } from './agent-run';
import { parseSignal } from './handlers';

/** The merge request's town activities (the merge queue, hosts, escalations). */
export const town = townActivities(50);

/** Reads the rig's current configuration (a query of its refinery): one marker event, no task of its own. */
const local = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 5 },
});

/**
 * The ticket's signal-with-start of the refinery as a local activity (patched() 'merge-request-enqueues-locally'):
 * as patient as the town activity it replaces (`town`: 50 attempts, backoff to a minute), since an MR that cannot
 * reach its refinery has nothing else to do.
 */
export const enqueueLocally = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 50 },
});

export const FollowingState = z.object({
  pr: z.object({ number: z.number().int().positive(), url: z.string(), created: z.boolean() }),
  looks: z.number().int().min(0),
  failedLooks: z.number().int().min(0),
  escalated: z.boolean(),
  /** Workflow time the PR first looked ready for auto-merge (reset whenever it stops looking ready). */
  readySince: z.number().optional(),
});
export type FollowingState = z.infer<typeof FollowingState>;

export const MergeRequestInput = z.object({
  mrId: z.string(),
  bead: BeadSpec,
  rig: RigConfig,
  round: z.number().int().min(1),
  branch: z.string(),
  headSha: CommitId,
  targetBranch: z.string(),
  convoyId: ConvoyId.optional(),
  /** Set by a convoy member bead (not a landing): the refinery reports the merge to the convoy (MergeTicket). */
  convoyBead: MergeTicket.shape.convoyBead,
  /** Set when a run that was following a pull request continued as new. */
  following: FollowingState.optional(),
  /**
   * Set when the bead handed this merge request's ticket to the refinery itself, as it started it (`rig` is then the
   * configuration that hand-off went by, which has no review): the merge request only waits for the answer.
   */
  queued: z.literal(true).optional(),
});
export type MergeRequestInput = z.input<typeof MergeRequestInput>;

/**
 * A merge request's ticket for its refinery, stamped now (workflow time): built by the merge request, or by its bead
 * when the bead hands it over itself (the same fields either way; the refinery knows a ticket by MR id and head).
 */
export function mergeTicket(input: MergeRequestInput): MergeTicketInput {
  return { ...ticketTemplate(input), headSha: input.headSha, enqueuedAt: Date.now() };
}

/** The ticket but for its head and time: what a run's supervision stamps with the head it publishes. */
export function ticketTemplate(input: Omit<MergeRequestInput, 'headSha' | 'rig'>): MergeTicketTemplate {
  return {
    mrId: input.mrId,
    beadId: input.bead.id,
    round: input.round,
    title: input.bead.title,
    branch: input.branch,
    targetBranch: input.targetBranch,
    priority: input.bead.priority,
    convoyId: input.convoyId,
    convoyBead: input.convoyBead,
    retries: input.round - 1,
  };
}

/**
 * Takes a ticket back from the refinery, unless it is merging already: work nobody wants any more is not merged.
 * Without `headSha`, every ticket of the merge request (WithdrawRequest).
 */
export function withdrawTicket(rig: string, mrId: string, headSha?: string): Promise<void> {
  return CancellationScope.nonCancellable(() =>
    getExternalWorkflowHandle(refineryWorkflowId(rig))
      .signal(withdrawSignal, { mrId, ...(headSha === undefined ? {} : { headSha }) })
      .catch((err: unknown) => log.warn('could not withdraw from the refinery', { mrId, error: String(err) })),
  );
}

export class MergeRequest {
  /** The rig's configuration: the input's, or (since 'merge-request-follows-rig') the newest `readRig` found. */
  rig: RigConfig;
  readonly state: MergeRequestState;
  /** The refinery's answer about this MR's head. */
  result: MergeResult | undefined;
  private shownAttributes: string | undefined;

  constructor(readonly input: z.output<typeof MergeRequestInput>) {
    this.rig = input.rig;
    this.state = {
      mrId: input.mrId,
      beadId: input.bead.id,
      round: input.round,
      rig: input.rig.name,
      branch: input.branch,
      headSha: input.headSha,
      targetBranch: input.targetBranch,
      phase: input.following ? 'pull_request' : input.rig.reviewer ? 'review' : 'queued',
      waitingFor: 'start',
      reviewRuns: [],
    };
  }

  setPhase(phase: MergeRequestState['phase'], waitingFor: string, runId?: string): void {
    this.state.phase = phase;
    this.state.waitingFor = waitingFor;
    // Only on change: every upsert is a history event, and a followed PR sets its phase on every look.
    if (`${phase}|${runId}` !== this.shownAttributes) {
      this.shownAttributes = `${phase}|${runId}`;
      upsertSearchAttributes([
        { key: SA.status, value: phase },
        { key: SA.round, value: this.input.round },
        { key: SA.runId, value: runId ?? null },
      ]);
    }
    setCurrentDetails(`**${phase}** — ${waitingFor}`);
  }

  /** The rig's current configuration; a removed rig, or one that cannot be read now, leaves `rig` as it is. */
  async readRig(): Promise<void> {
    try {
      const current = RigConfig.safeParse(await local.currentRigConfig({ rig: this.rig.name }));
      if (current.success && current.data) this.rig = current.data;
    } catch (err) {
      log.warn('could not read the rig configuration; keeping the one this merge request has', {
        mrId: this.input.mrId,
        error: String(err),
      });
    }
  }

  /**
   * Reads the rig's current configuration and, unless it asks for a review, hands the ticket to the refinery: one local
   * activity (activities/town.ts queueMergeRequest). True when the ticket was handed over.
   */
  async queueUnlessReviewed(ticket: MergeTicketInput): Promise<boolean> {
    const { rig, queued } = await enqueueLocally.queueMergeRequest({ rig: this.rig, ticket });
    const current = RigConfig.safeParse(rig);
    if (current.success) this.rig = current.data;
    return queued;
  }

  handleMessages(): void {
    setHandler(mergeResultSignal, (raw) => {
      const r = parseSignal(MergeResult, raw, 'merge result');
      if (r?.mrId === this.input.mrId && r.headSha === this.input.headSha) this.result ??= r;
    });
    setHandler(mergeRequestStateQuery, () => this.state);
  }
}
