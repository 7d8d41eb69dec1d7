/**
 * The rig's current configuration, for work slung before a `gt rig update`: the refinery holds the one current
 * configuration of a rig (its `updateRig` update changes it), and the dispatch gate and merge requests ask for it
 * here instead of trusting the snapshot their bead was slung with. Read-only; a rig whose refinery is not running
 * (removed, or never added) answers null and the caller keeps what it has.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { z } from 'zod';
import { RigName, refineryWorkflowId } from '../domain/ids';
import { rigConfigQuery } from '../domain/messages';
import type { RigConfig } from '../domain/rig';
import { parseActivityInput } from '../domain/validation';

export const CurrentRigInput = z.object({ rig: RigName });

export function createRigConfigActivities(deps: { client: Client }) {
  return {
    async currentRigConfig(raw: z.input<typeof CurrentRigInput>): Promise<RigConfig | null> {
      const { rig } = parseActivityInput(CurrentRigInput, raw);
      const handle = deps.client.workflow.getHandle(refineryWorkflowId(rig));
      try {
        const [description, config] = await Promise.all([handle.describe(), handle.query(rigConfigQuery)]);
        return description.status.name === 'RUNNING' ? config : null;
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return null;
        throw err;
      }
    },
  };
}
