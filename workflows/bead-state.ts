/**
 * The bead workflow's state (workflows/bead.ts is the process, workflows/bead-messages.ts its handlers): what the
 * bead knows and shows (BeadState, its status line and search attributes) and its polecat runs as the fence admits
 * them (only the live run may speak: workflows/agent-run.ts). What it keeps is bounded by domain/caps.ts, so no
 * input, update answer or result can pass Temporal's payload limit.
 */
import { proxyLocalActivities, setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { z } from 'zod';
import type { TownQueueActivities } from '../activities';
import {
  startingRound,
  type BeadWorkflowInput,
  type BeadState,
  type BeadStatus,
  type RoundRecord,
  type RunRecord,
} from '../domain/bead';
import { appendFeedback } from '../domain/caps';
import { formulaLabel } from '../domain/formula';
import { beadBranch, mergeRequestWorkflowId } from '../domain/ids';
import { SA } from '../domain/search-attributes';
import { AgentRun, AgentRuns, townActivities } from './agent-run';
import type { SingleSession } from './formula-host';
import type { Patches } from './patches';

/** The bead's town activities (dispatch slots, hosts, escalations). */
export const town = townActivities(20);
/**
 * The dispatch request and the host claim as local activities (workflows/bead-runs.ts says when): a marker in the
 * workflow task instead of an activity task and the workflow task that takes its result. As patient as `town`.
 */
export const townLocally = proxyLocalActivities<TownQueueActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20 },
});

export type BeadInput = z.output<typeof BeadWorkflowInput>;

/**
 * patched() id (in the bead's baseline only): the status search attributes are written when they change. The run's
 * start re-wrote the status, round and run id its launch had written: one event per run.
 */
export const STATUS_ON_CHANGE = 'bead-status-on-change';

/** A polecat run of the bead: what its agent said (gt done, gt handoff), its record and how far it read the inbox. */
export class PolecatRun extends AgentRun {
  /** `exitGraceOnHost`: the agent's own host stops it should it not exit within the grace (domain/bead.ts DoneUpdate). */
  done?: { summary: string; exitGraceOnHost?: true };
  /** Set by `gt handoff`: the run ends on purpose, its checkpoint already saved. */
  handedOff?: boolean;

  constructor(
    runId: string,
    readonly record: RunRecord,
    public inboxCursor: number,
  ) {
    super(runId);
  }

  override ending() {
    return this.done ? ('done' as const) : this.handedOff ? ('handed_off' as const) : undefined;
  }
}

export class Bead {
  readonly state: BeadState;
  readonly runs: AgentRuns<PolecatRun>;
  /** Runs the dispatch gate has let through. */
  readonly grants = new Set<string>();
  /** The formula step under way ("step 3/5 self-review"), shown before what the bead waits for. */
  stepLabel: string | undefined;
  /** While a `session = "single"` formula's run walks its steps: `gt step done` and the guard on `gt done` (workflows/formula.ts). */
  singleSession: SingleSession | undefined;
  /** The round a continued run starts in, and the first round of this workflow run (rounds number on after retries). */
  readonly firstRound: number;
  /** The retry this workflow run is (`gt bead retry`), if it is one. */
  readonly retry: number | undefined;
  private inboxSeq: number;
  /** The status search attributes as last written (by the start, a continue-as-new's copy or an upsert). */
  private shown: { status: unknown; round: unknown; runId: unknown };

  constructor(
    readonly input: BeadInput,
    /** Which changes this run takes (its baseline asked as it started: workflows/patches.ts). */
    readonly patches: Patches,
  ) {
    const { bead, rig, convoy, formula, resume, continued } = input;
    // A retried bead (a new workflow run of the same id) goes on from what its earlier runs left, unless --fresh.
    // Nothing differs for a bead without `resume`, so histories from before retries replay unchanged.
    this.retry = resume?.retries.at(-1)?.retry;
    // A run continued as new takes what the run before it knew; a retry takes what the failed run left (unless --fresh).
    const carried = continued?.state ?? resume?.carried;
    // …and where its formula stood (workflows/formula.ts goes on from there).
    const progress = continued ? continued.formula : resume?.carried?.formula;
    this.firstRound = continued?.firstRound ?? startingRound(resume);
    this.state = {
      beadId: bead.id,
      title: bead.title,
      rig: rig.name,
      convoyId: convoy?.id,
      status: 'open',
      round: 0,
      waitingFor: 'dispatch',
      runs: (carried?.runs as RunRecord[] | undefined) ?? [],
      rounds: (carried?.rounds as RoundRecord[] | undefined) ?? [],
      feedback: carried?.feedback ?? [],
      targetBranch: convoy?.targetBranch ?? rig.branch,
      checkpoints: carried?.checkpoints ?? [],
      inbox: carried?.inbox ?? [],
      handoffs: continued?.handoffs ?? 0,
      ...(continued ? { continuedAsNew: continued.continuedAsNew } : {}),
      ...(resume ? { retries: resume.retries } : {}),
      ...(formula ? { formula: formulaLabel(formula) } : {}),
      ...(progress ? { steps: progress.steps, formulaAt: progress.at } : {}),
    };
    const lastRetry = resume?.retries.at(-1);
    // The operator's note is the first thing the retried run reads (feedback heads its prompt).
    if (lastRetry?.note && !continued)
      this.state.feedback = appendFeedback(
        this.state.feedback,
        `[retry ${lastRetry.retry} by ${lastRetry.by}] ${lastRetry.note}`,
      );
    this.inboxSeq = this.inbox.reduce((n, m) => Math.max(n, m.seq), 0);
    const sa = workflowInfo().typedSearchAttributes;
    this.shown = { status: sa.get(SA.status), round: sa.get(SA.round), runId: sa.get(SA.runId) };
    this.runs = new AgentRuns<PolecatRun>(
      (runId, current) =>
        `run ${runId} is not the current run of bead ${bead.id}: ${current ? `the current run is ${current.runId}` : `no run is active (bead is ${this.state.status})`}`,
      (e) => town.raiseEscalation({ ...e, rig: rig.name, beadId: bead.id, convoyId: convoy?.id }),
    );
  }

  get checkpoints() {
    return this.state.checkpoints!;
  }
  get inbox() {
    return this.state.inbox!;
  }
  /** The next message's sequence number after the newest (a run reads from here on). */
  get inboxHead() {
    return this.inboxSeq;
  }

  /**
   * Round `round`'s merge request but for its head: what the bead starts once the round's branch is published, and what
   * its run's supervision builds the ticket from (workflows/bead-runs.ts).
   */
  mergeRequestOf(round: number) {
    const { bead, rig, convoy } = this.input;
    return {
      mrId: mergeRequestWorkflowId(bead.id, round),
      bead,
      rig,
      round,
      branch: beadBranch(bead.id),
      targetBranch: this.state.targetBranch,
      convoyId: convoy?.id,
      convoyBead: convoy ? { retry: this.retry } : undefined,
    };
  }

  setStatus(status: BeadStatus, waitingFor: string): void {
    const current = this.runs.current;
    this.state.status = status;
    this.state.waitingFor = waitingFor;
    this.state.currentRunId = current?.runId;
    setCurrentDetails(`**${status}** — ${this.stepLabel ? `${this.stepLabel}: ` : ''}${waitingFor}`);
    const next = { status, round: this.state.round, runId: current?.runId };
    const { shown } = this;
    const same = next.status === shown.status && next.round === shown.round && next.runId === shown.runId;
    if (same && this.patches.has(STATUS_ON_CHANGE)) return;
    upsertSearchAttributes([
      { key: SA.status, value: status },
      { key: SA.round, value: this.state.round },
      { key: SA.runId, value: current?.runId ?? null },
    ]);
    this.shown = next;
  }

  /** The sequence number of a new inbox message. */
  nextInboxSeq(): number {
    return ++this.inboxSeq;
  }
}
