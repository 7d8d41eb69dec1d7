/**
 * A run's handle recorded in its run directory (worker-owned, never visible to a contained run): how a host finds a run
 * it did not start in this process (a stale agent of the bead, a gate a killed worker left running) and stops it.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { AgentHandle } from '../agents/runtime';
import { RunId } from '../domain/ids';
import { AgentRuntime } from '../domain/rig';

export const AgentHandleSchema = z.object({ runtime: AgentRuntime, runId: RunId, ref: z.string().min(1).max(200) });
/** A recorded handle: an agent run's, or a gate run's (whose id is its section's, not a bead's `<bead>/r<n>/a<n>`). */
const RecordedHandle = AgentHandleSchema.extend({ runId: z.string().min(1).max(500) });

const HANDLE_FILE = 'handle.json';

export function recordHandle(runDir: string, handle: AgentHandle): void {
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, HANDLE_FILE), JSON.stringify(handle));
}

export function readHandle(runDir: string): AgentHandle | undefined {
  try {
    const parsed = RecordedHandle.safeParse(JSON.parse(readFileSync(join(runDir, HANDLE_FILE), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
