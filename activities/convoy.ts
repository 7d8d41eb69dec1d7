/**
 * What the convoy workflow cannot do itself: read its rig's configuration, create and read the convoy branch, and
 * start, stop and inspect its beads' workflows. Each is idempotent and keyed by business ids: a bead's workflow
 * id is derived from the convoy and the bead, so a retried start finds the bead it started before.
 */
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { log } from '@temporalio/activity';
import { z } from 'zod';
import { BeadSpec, startingRound } from '../domain/bead';
import { isSingleRun } from '../domain/formula';
import type { DispatchAsksAhead } from './dispatch';
import type { LaunchWhenGrantedInput } from './agent-runs';
import type { LaunchesAhead } from './launch-ahead';
import { CAPS, capText } from '../domain/caps';
import { MergeMode, type StartedBead } from '../domain/convoy';
import { dispatchRequestOf } from '../domain/dispatch';
import { beadWorkflowId, CommitId, convoyBranch, ConvoyId, MAX_AFTER_COMMITS, RigName, runIdOf } from '../domain/ids';
import type { BeadReport } from '../domain/messages';
import { refineryRigConfig } from './rig-config';
import type { RigConfig } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import type { BeadResult } from '../domain/bead';
import { retryBeadRun } from './bead-retry';
import { beadStart } from '../domain/starts';
import { FormulaName, FormulaVarValues } from '../domain/formula-ref';
import { FormulaError, formulaForBead } from './formulas';
import { gitStatus, remoteBranchSha, syncMirror } from './git';
import type { TownDeps } from './town';
import { parseActivityInput } from '../domain/validation';
import { Failure } from '../domain/failures';

export const PrepareConvoyInput = z.object({ convoyId: ConvoyId, rig: RigName, mergeMode: MergeMode });
export type PrepareConvoyInput = z.input<typeof PrepareConvoyInput>;
export interface PreparedConvoy {
  targetBranch: string;
  convoyBranch?: string;
  /** The rig's maxPolecats: the convoy never has more beads in flight. */
  capacity: number;
}

/** Bounded so one activity's input stays small whatever the convoy's size. */
export const MAX_START_BATCH = 50;
export const StartConvoyBeadsInput = z.object({
  convoyId: ConvoyId,
  rig: RigName,
  /** Where the beads merge: the rig's branch, or the convoy branch in review-then-land. */
  targetBranch: z.string().min(1),
  beads: z
    .array(
      BeadSpec.extend({
        formula: FormulaName.optional(),
        vars: FormulaVarValues.optional(),
        /** The bead's dependencies' merges (BeadWorkflowInput's `convoy.after`). */
        after: z.array(CommitId).max(MAX_AFTER_COMMITS).optional(),
      }),
    )
    .min(1)
    .max(MAX_START_BATCH),
});
export type StartConvoyBeadsInput = z.input<typeof StartConvoyBeadsInput>;

export const BeadIdsInput = z.object({ convoyId: ConvoyId, beadIds: z.array(z.string().min(1)).max(5000) });
export type BeadIdsInput = z.input<typeof BeadIdsInput>;

export const RestartConvoyBeadsInput = z.object({
  convoyId: ConvoyId,
  beads: z
    .array(
      z.object({
        beadId: z.string().min(1),
        retry: z.number().int().min(1),
        fresh: z.boolean(),
        note: z.string().max(4000),
        by: z.string().max(200),
      }),
    )
    .min(1)
    .max(MAX_START_BATCH),
});
export type RestartConvoyBeadsInput = z.input<typeof RestartConvoyBeadsInput>;

export const ConvoyBranchInput = z.object({ convoyId: ConvoyId, rig: RigName });
export type ConvoyBranchInput = z.input<typeof ConvoyBranchInput>;

const CONCURRENCY = 8;

async function eachLimited<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
  return results;
}

const isNotFound = (err: unknown) =>
  err instanceof WorkflowNotFoundError || (err instanceof Error && /not found|NOT_FOUND/i.test(err.message));

export interface ConvoyDeps extends TownDeps {
  /** Asks the rig's gate for a started bead's first run ahead of its launch (activities/dispatch.ts dispatchAsksAhead). */
  asksAhead?: Pick<DispatchAsksAhead, 'ask'>;
  /** Launches a started bead's first run on this worker's host ahead of its bead's launch (activities/launch-ahead.ts). */
  launchesAhead?: Pick<LaunchesAhead, 'begin'>;
}

export function createConvoyActivities(deps: ConvoyDeps) {
  const { client } = deps;

  const rigConfig = async (name: string): Promise<RigConfig> => {
    try {
      // On the critical path (startConvoyBeads runs in the convoy's workflow task): the memo, not a query.
      return (await refineryRigConfig(client, name)).config;
    } catch (err) {
      if (isNotFound(err))
        throw ApplicationFailure.nonRetryable(`unknown rig '${name}' (was it removed?)`, Failure.UnknownRig);
      throw err;
    }
  };

  return {
    /** Reads the rig and, in review-then-land, makes sure `convoy/<id>` exists (created from the target's tip). */
    async prepareConvoy(raw: PrepareConvoyInput): Promise<PreparedConvoy> {
      const input = parseActivityInput(PrepareConvoyInput, raw);
      const rig = await rigConfig(input.rig);
      if (input.mergeMode === 'review-and-merge') return { targetBranch: rig.branch, capacity: rig.maxPolecats };
      const branch = convoyBranch(input.convoyId);
      await ensureBranch(deps.gtHome, rig, branch, rig.branch);
      return { targetBranch: rig.branch, convoyBranch: branch, capacity: rig.maxPolecats };
    },

    /**
     * Starts bead workflows (once each: a bead id is never reused), reporting to the convoy when they end. The convoy
     * runs it as a local activity, which may run again when its workflow task is retried: a repeat finds its beads
     * `existing`.
     */
    async startConvoyBeads(raw: StartConvoyBeadsInput): Promise<{ results: StartedBead[]; capacity: number }> {
      const input = parseActivityInput(StartConvoyBeadsInput, raw);
      const rig = await rigConfig(input.rig);
      const results = await eachLimited(input.beads, (bead) =>
        startBead(deps, input.convoyId, rig, input.targetBranch, bead),
      );
      return { results, capacity: rig.maxPolecats };
    },

    /**
     * Starts the new workflow runs of retried beads (activities/bead-retry.ts). Idempotent by the retry's number: a
     * repeated start finds the run it started. A bead that cannot be retried is an `error` the convoy records.
     */
    async restartConvoyBeads(raw: RestartConvoyBeadsInput): Promise<StartedBead[]> {
      const input = parseActivityInput(RestartConvoyBeadsInput, raw);
      return eachLimited(input.beads, async ({ beadId, retry, ...req }): Promise<StartedBead> => {
        const started = await retryBeadRun(client, beadId, req, retry, input.convoyId);
        if (!started.ok) return { beadId, outcome: 'error', error: started.error };
        return { beadId, outcome: started.existing ? 'existing' : 'started' };
      });
    },

    /** Asks running beads to stop; each stops its agent run and reports `cancelled`. Ended or unknown beads are skipped. */
    async cancelConvoyBeads(raw: BeadIdsInput): Promise<void> {
      const input = parseActivityInput(BeadIdsInput, raw);
      await eachLimited(input.beadIds, async (beadId) => {
        try {
          await client.workflow.getHandle(beadWorkflowId(beadId)).cancel();
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      });
    },

    /**
     * What the convoy would have been told, for beads whose workflow has ended: a report may be lost (a bead
     * terminated by hand never sends one), so the convoy asks Temporal directly from time to time.
     */
    async inspectConvoyBeads(raw: BeadIdsInput): Promise<BeadReport[]> {
      const input = parseActivityInput(BeadIdsInput, raw);
      const reports = await eachLimited(input.beadIds, async (beadId): Promise<BeadReport | undefined> => {
        const handle = client.workflow.getHandle<() => Promise<BeadResult>>(beadWorkflowId(beadId));
        let status: string;
        try {
          status = (await handle.describe()).status.name;
        } catch (err) {
          if (isNotFound(err))
            return { beadId, status: 'failed', reason: `the workflow of bead ${beadId} does not exist` };
          throw err;
        }
        if (status === 'RUNNING') return undefined;
        if (status === 'COMPLETED') {
          const result = await handle.result();
          const terminal = result.status === 'closed' || result.status === 'failed' || result.status === 'cancelled';
          // Capped: one answer holds the reports of up to every bead of the convoy.
          const reason = result.reason === undefined ? undefined : capText(result.reason, CAPS.beadReason);
          return terminal
            ? { beadId, status: result.status as BeadReport['status'], commit: result.commit, reason }
            : { beadId, status: 'failed', reason: `bead ended ${result.status}` };
        }
        if (status === 'CANCELLED') return { beadId, status: 'cancelled', reason: 'the bead workflow was cancelled' };
        return {
          beadId,
          status: 'failed',
          reason: `the bead workflow ended ${status.toLowerCase()} without reporting`,
        };
      });
      return reports.filter((r): r is BeadReport => !!r);
    },

    /** The convoy branch's tip and the rig's current configuration: what the landing merge request needs. */
    async convoyBranchHead(raw: ConvoyBranchInput): Promise<{ headSha: string; rig: RigConfig }> {
      const input = parseActivityInput(ConvoyBranchInput, raw);
      const rig = await rigConfig(input.rig);
      const mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
      const branch = convoyBranch(input.convoyId);
      const headSha = await remoteBranchSha(mirror, branch);
      if (!headSha)
        throw ApplicationFailure.nonRetryable(
          `convoy branch ${branch} does not exist in ${rig.repo}`,
          Failure.ConvoyBranchMissing,
        );
      return { headSha, rig };
    },
  };
}

/** Creates `branch` at the tip of `from` unless it exists; a concurrent or earlier creation is found, not repeated. */
async function ensureBranch(gtHome: string, rig: RigConfig, branch: string, from: string): Promise<string> {
  const mirror = await syncMirror(rig.name, rig.repo, gtHome);
  const existing = await remoteBranchSha(mirror, branch);
  if (existing) return existing;
  const base = await remoteBranchSha(mirror, from);
  if (!base)
    throw ApplicationFailure.nonRetryable(
      `target branch '${from}' does not exist in ${rig.repo}`,
      Failure.TargetMissing,
    );
  const push = await gitStatus(mirror, ['push', 'origin', `${base}:refs/heads/${branch}`]);
  await syncMirror(rig.name, rig.repo, gtHome);
  const created = await remoteBranchSha(mirror, branch);
  if (created) return created;
  throw ApplicationFailure.retryable(
    `could not create ${branch} in ${rig.repo}: ${push.stderr.trim()}`,
    Failure.BranchCreateFailed,
  );
}

/**
 * The launch input a bead started by a convoy gives its first run (workflows/bead-runs.ts, the `bead-asks-in-launch`
 * path: round 1, attempt 1, nothing carried over, the dependencies' merges as what the target holds). The host's take
 * compares it with the bead's own exactly: a difference costs that attempt, never a run with other settings.
 */
function firstLaunchOf(
  bead: z.output<typeof BeadSpec>,
  rig: RigConfig,
  convoy: { targetBranch: string; after?: string[] },
): LaunchWhenGrantedInput {
  const workflowId = beadWorkflowId(bead.id);
  const round = startingRound(undefined);
  const runId = runIdOf(bead.id, round, 1);
  return {
    rig,
    bead,
    runId,
    round,
    attempt: 1,
    targetBranch: convoy.targetBranch,
    feedback: [],
    checkpoints: [],
    messages: [],
    ...(convoy.after ? { targetHas: convoy.after } : {}),
    workflowId,
    reportStart: true,
    request: dispatchRequestOf(bead.id, runId, workflowId, rig),
  };
}

async function startBead(
  { client, taskQueue, hostQueue, gtHome, asksAhead, launchesAhead }: ConvoyDeps,
  convoyId: string,
  rig: RigConfig,
  targetBranch: string,
  { formula: formulaName, vars, after, ...bead }: z.output<typeof StartConvoyBeadsInput>['beads'][number],
): Promise<StartedBead> {
  const workflowId = beadWorkflowId(bead.id);
  let formula;
  try {
    // Checked when the convoy started; resolved again here, on the worker, because files or the rig may have changed.
    formula = formulaForBead(rig, formulaName, vars, gtHome);
  } catch (err) {
    if (!(err instanceof FormulaError)) throw err;
    return { beadId: bead.id, outcome: 'error', error: err.message };
  }
  try {
    const convoy = { id: convoyId, targetBranch, ...(after?.length ? { after } : {}) };
    // Its first run goes to this worker's host (`startedOn`), as the host claim of the bead's first workflow task
    // would take it when that task runs here.
    const start = beadStart({ taskQueue, input: { bead, rig, convoy, formula, startedOn: hostQueue } });
    // Eagerly: the server hands the bead's first workflow task back in the start's answer, to this worker (whose
    // connection the client shares, worker/worker.ts), instead of through matching: a dependent bead starts its
    // first task ≈ 4 ms sooner after its dependency merged (docs/performance.md). With no free slot here the server
    // dispatches it as usual.
    const started = await client.workflow.start(start.workflowType, { ...start.options, requestEagerStart: true });
    // Only for a bead whose first run is r1/a1's single agent (a formula of several steps may begin with legs, or with
    // no agent at all, and a slot asked for a run that does not come would be held for nothing).
    if (isSingleRun(formula)) {
      const launch = firstLaunchOf(bead, rig, convoy);
      // Its first run launched now, beside the bead's first workflow task, when that task is this worker's (handed
      // over eagerly, so decided by this code): the launch activity it schedules on this host takes it. Otherwise
      // only its request is asked now, and the run's launch on this worker takes the answer.
      if (!(started.eagerlyStarted && launchesAhead?.begin(launch))) asksAhead?.ask(rig.name, launch.request);
    }
    return { beadId: bead.id, outcome: 'started' };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    // Ours from an earlier attempt of this start, or someone else's bead that happens to have this id.
    const existing = await client.workflow.getHandle(workflowId).describe();
    const owner = existing.typedSearchAttributes.get(SA.convoyId);
    if (owner === convoyId) return { beadId: bead.id, outcome: 'existing' };
    log.warn('bead id already taken', { beadId: bead.id, convoyId, owner });
    return {
      beadId: bead.id,
      outcome: 'error',
      error: `workflow ${workflowId} already exists${owner ? ` (it belongs to convoy ${owner})` : ' (a bead outside this convoy)'}; rename the bead`,
    };
  }
}
