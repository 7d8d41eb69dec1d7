/** `gt step approve|reject` (and the MCP tools): a human's decision on a bead's approval step, as a typed function. */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { StepDecision, type StepRecord } from '../domain/formula';
import { stepDecisionUpdate } from '../domain/messages';
import { parseInput, UserError, type Town } from './town';

/**
 * A human's decision on a bead's approval step. Refused (one line, nothing changes) unless the bead is waiting for
 * exactly that step; answers with the step as the bead records it.
 */
export async function decideStep(town: Town, beadId: string, raw: StepDecision): Promise<StepRecord> {
  const decision = parseInput(StepDecision, raw, 'step decision');
  const handle = town.beadHandle(beadId);
  try {
    return await handle.executeUpdate(stepDecisionUpdate, { args: [decision] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw new UserError(err.cause?.message ?? err.message);
    const state = await town.beadState(beadId);
    if (!state.steps)
      throw new UserError(`bead ${beadId} runs formula ${state.formula ?? 'work'}, which has no approval step`);
    throw new UserError(
      `bead ${beadId} is ${state.status}: it is not waiting for approval of step '${decision.stepId}'`,
    );
  }
}
