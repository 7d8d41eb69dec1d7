/**
 * Activities of formula steps that are not agent runs. A `gate` step runs commands on the bead's branch as it stands
 * (the head its last agent step published), through the same contained gate runner and runtime as the refinery's
 * gates (activities/gates.ts): the code under test is the agents', so it gets no secrets and its output is capped.
 * A gate step decides nothing about merging: the refinery still gates the merge result itself.
 */
import { z } from 'zod';
import { CAPS, capText } from '../domain/caps';
import { BeadId, CommitId, fsSafe } from '../domain/ids';
import { RigConfig } from '../domain/rig';
import { runGates } from './gates';
import { createCandidateTree, syncMirror } from './git';
import { attemptTree, discardAttemptTree, gateLaunch, gateRuntime, type MergeDeps } from './merge';
import { parseActivityInput } from '../domain/validation';

export const StepGatesInput = z.object({
  rig: RigConfig,
  beadId: BeadId,
  stepId: z.string().min(1).max(63),
  /** Unique per step iteration: names the gate runs and their tree. */
  key: z.string().min(1).max(200),
  headSha: CommitId,
  gates: z.array(z.string().min(1).max(4_000)).min(1).max(20),
  timeoutMs: z.number().int().min(1),
});
export type StepGatesInput = z.input<typeof StepGatesInput>;

export interface StepGatesResult {
  ok: boolean;
  /** The first gate that failed. */
  gate?: string;
  /** What the step's output becomes: which gates passed, or the failing gate's exit and the tail of its output. */
  output: string;
}

export function createFormulaStepActivities(deps: MergeDeps) {
  return {
    async runStepGates(raw: StepGatesInput): Promise<StepGatesResult> {
      const input = parseActivityInput(StepGatesInput, raw);
      const { rig } = input;
      const mirror = await syncMirror(rig.name, rig.repo, deps.gtHome);
      // A tree and gate run ids per activity attempt: a gate of a killed attempt may still be running in the old one.
      const tree = await attemptTree(deps, rig.name, fsSafe(input.key));
      const { attempt, dir } = tree;
      const key = `${fsSafe(input.key)}-a${attempt}`;
      try {
        await createCandidateTree(mirror, dir, input.headSha);
        const results = await runGates(
          await gateRuntime(deps, rig),
          input.gates,
          key,
          gateLaunch(deps, rig, tree, key, {
            GT_BEAD_ID: input.beadId,
            GT_STEP_ID: input.stepId,
            GT_CANDIDATE_SHA: input.headSha,
          }),
          input.timeoutMs,
        );
        const failed = results.find((r) => !r.ok);
        if (!failed)
          return { ok: true, output: `gates passed on ${input.headSha.slice(0, 10)}: ${input.gates.join('; ')}` };
        const why = failed.timedOut ? `timed out after ${input.timeoutMs} ms` : `exited with ${failed.exitCode}`;
        return {
          ok: false,
          gate: failed.gate,
          output: capText(
            `Gate \`${failed.gate}\` ${why} on ${input.headSha.slice(0, 10)} of your branch.\nLast output:\n${failed.tail}`,
            CAPS.feedback,
          ),
        };
      } finally {
        discardAttemptTree(deps, rig.name, tree);
      }
    },
  };
}
