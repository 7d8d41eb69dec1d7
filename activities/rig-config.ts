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
import { RigConfig } from '../domain/rig';
import { parseActivityInput } from '../domain/validation';

export const CurrentRigInput = z.object({ rig: RigName });

/**
 * The configuration rig `rig`'s refinery holds, and whether it runs. From the refinery's memo (written at its start,
 * kept current by every `gt rig update`), read with `describe()` — the server's record, no query: a query waits for
 * the refinery's worker (busy merging) and replays its history when it is not cached. A refinery started before its
 * memo held the configuration is asked by a query. Throws WorkflowNotFoundError for a rig that has no refinery.
 */
export async function refineryRigConfig(client: Client, rig: string): Promise<{ config: RigConfig; running: boolean }> {
  const handle = client.workflow.getHandle(refineryWorkflowId(rig));
  const description = await handle.describe();
  const running = description.status.name === 'RUNNING';
  const inMemo = RigConfig.safeParse(description.memo?.config);
  return { config: inMemo.success ? inMemo.data : await handle.query(rigConfigQuery), running };
}

/** The configuration of rig `rig` if its refinery runs; null for a removed rig or one never added. */
export async function runningRigConfig(client: Client, rig: string): Promise<RigConfig | null> {
  try {
    const { config, running } = await refineryRigConfig(client, rig);
    return running ? config : null;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

export function createRigConfigActivities(deps: { client: Client }) {
  return {
    async currentRigConfig(raw: z.input<typeof CurrentRigInput>): Promise<RigConfig | null> {
      const { rig } = parseActivityInput(CurrentRigInput, raw);
      return runningRigConfig(deps.client, rig);
    },
  };
}
