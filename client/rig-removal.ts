/**
 * `gt rig remove`: a rig leaves the town only when it has no open work.
 *
 * Invariants:
 * - The refinery itself decides (its `removeRig` update is refused while anything is queued or merging, and it ends
 *   only with an empty queue), so no merge request can slip in between this client's check and the end.
 * - The dispatch gate is terminated only when provably idle: no run holds or waits for a slot, and no bead of the rig
 *   is running (only its beads ask it for slots, and with the refinery ended nothing new can be slung to the rig).
 * - `--drain` pauses dispatch, so nothing new starts, and waits for what runs to finish. Work that would need a new
 *   agent run (a bead still waiting for its first slot, a retry, a rework round) cannot finish while paused: when
 *   only such work is left, the drain stops and names it instead of waiting forever.
 * - After removal the rig's name is free: `gt rig add` starts a fresh refinery (and a fresh gate with the first bead).
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { dispatchGateWorkflowId } from '../domain/dispatch';
import { refineryWorkflowId } from '../domain/ids';
import { removeRigUpdate } from '../domain/messages';
import { describeOpenWork, isIdle, rigOpenWork, type RigOpenWork } from './town-status';
import { UserError, type Town } from './town';

/** How many polls in a row only dispatch-waiting work must be left before a drain gives up on it. */
const STUCK_POLLS = 3;
const REFINERY_END_MS = 30_000;

export interface RigRemoval {
  rig: string;
  removed: true;
  drained: boolean;
  /** Open work when the removal was asked for (what a drain waited for). */
  openWork: RigOpenWork;
  waitedMs: number;
}

/** Open work no paused dispatch will ever finish: no agent runs, nothing merges, beads only wait for a slot. */
const onlyWaitingForDispatch = (w: RigOpenWork) =>
  w.dispatch.running === 0 && w.mergeRequests.length === 0 && w.beads.every((b) => b.status === 'open');

export async function removeRig(
  town: Town,
  name: string,
  o: { drain?: boolean; pollMs?: number; onProgress?: (w: RigOpenWork, elapsedMs: number) => void } = {},
): Promise<RigRemoval> {
  const rig = await town.getRig(name);
  const started = Date.now();
  const openWork = await rigOpenWork(town, rig.name);
  if (!isIdle(openWork) && !o.drain) {
    throw new UserError(
      `rig ${rig.name} has open work: ${describeOpenWork(openWork)}; let it finish, cancel it (\`gt bead cancel\`, \`gt convoy cancel\`), or \`gt rig remove ${rig.name} --drain\``,
    );
  }
  if (o.drain)
    await town.pauseRig(rig.name, `draining for removal (gt rig remove ${rig.name} --drain)`, 'gt rig remove');
  let work = openWork;
  let stuck = 0;
  for (;;) {
    if (isIdle(work)) {
      try {
        await town.client.workflow.getHandle(refineryWorkflowId(rig.name)).executeUpdate(removeRigUpdate, { args: [] });
        break;
      } catch (err) {
        // A merge request reached the queue after the check: drain it too, or refuse.
        if (!(err instanceof WorkflowUpdateFailedError)) throw err;
        if (!o.drain)
          throw new UserError(
            `rig ${rig.name} has open work: ${err.cause?.message ?? err.message}; \`gt rig remove ${rig.name} --drain\` waits for it`,
          );
      }
    } else if (onlyWaitingForDispatch(work) && ++stuck >= STUCK_POLLS) {
      const waiting = work.beads.map((b) => b.beadId).join(', ') || work.convoys.join(', ');
      throw new UserError(
        `rig ${rig.name} is drained of running work, but ${waiting} wait(s) for a new agent run, which cannot start while dispatch is paused: cancel them (\`gt bead cancel\`, \`gt convoy cancel\`) and run this again, or \`gt rig resume ${rig.name}\``,
      );
    } else if (!onlyWaitingForDispatch(work)) stuck = 0;
    o.onProgress?.(work, Date.now() - started);
    await new Promise((r) => setTimeout(r, o.pollMs ?? 1000));
    work = await rigOpenWork(town, rig.name);
  }
  const refinery = town.client.workflow.getHandle(refineryWorkflowId(rig.name));
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    refinery.result().then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), REFINERY_END_MS))),
  ]);
  // A pending timer would keep the CLI alive for its full length.
  clearTimeout(timer);
  if (!ended)
    throw new UserError(
      `refinery:${rig.name} accepted the removal but took a merge request first; it ends once its queue is empty (see \`gt mq ${rig.name}\`)`,
    );
  const gate = town.client.workflow.getHandle(dispatchGateWorkflowId(rig.name));
  const gateState = await rigOpenWork(town, rig.name);
  if (isIdle(gateState)) await gate.terminate(`rig ${rig.name} removed`).catch(() => undefined);
  return { rig: rig.name, removed: true, drained: !!o.drain, openWork, waitedMs: Date.now() - started };
}
