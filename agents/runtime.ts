/**
 * Agent runtimes: where a polecat or reviewer process lives. Every runtime is *start-or-adopt by run id*:
 * asking twice for the same run id never yields two agents, which is what makes an uncertain start safe to retry.
 */
import type { AgentRuntime } from '../domain/rig';

export interface AgentLaunch {
  runId: string;
  beadId: string;
  role: 'polecat' | 'reviewer';
  /** Shell command of the rig (`--agent` / `--reviewer`). */
  command: string;
  /** The worktree: the only place the agent is meant to write. */
  cwd: string;
  /** The run's own variables (GT_*, the rig's env, git identity, credential helper). */
  env: Record<string, string>;
  /** The worker host's environment, minus what must never reach an agent; used by runtimes that run on the host. */
  hostEnv: Record<string, string>;
  /** Per-run directory on this host: output log and the runtime's own bookkeeping. */
  runDir: string;
  allowNetwork: boolean;
  /** Host paths the agent needs besides the worktree and run directory, in order (a later read-only mount inside a writable one protects it). */
  mounts: Mount[];
  /** Container image (docker runtime). */
  image?: string;
}

export interface Mount {
  path: string;
  writable: boolean;
}

/** Serializable: travels in supervision heartbeats so a retried activity re-attaches. */
export interface AgentHandle {
  runtime: AgentRuntime;
  runId: string;
  /** Process id (process/sandbox) or container id (docker). */
  ref: string;
}

export type AgentStatus =
  | { state: 'running' }
  | { state: 'exited'; exitCode: number | null }
  /** The probe itself failed: never to be read as death (failure class 3). */
  | { state: 'unknown'; detail: string };

export interface AgentRuntimeDriver {
  readonly name: AgentRuntime;
  /** Whether this host can run it; the reason is shown to the operator when not. */
  available(): Promise<{ ok: true } | { ok: false; reason: string }>;
  startOrAdopt(launch: AgentLaunch): Promise<{ handle: AgentHandle; adopted: boolean }>;
  status(handle: AgentHandle, runDir: string): Promise<AgentStatus>;
  /** SIGTERM-like, then forceful after `graceMs`. Stopping an already-gone agent is not an error. */
  stop(handle: AgentHandle, graceMs: number): Promise<void>;
  /** The run's output so far (at most the last `maxBytes`). */
  logs(handle: AgentHandle, runDir: string, maxBytes?: number): Promise<string>;
  /**
   * Optional: settles as soon as the agent may have exited, so supervision probes at once instead of at its next
   * poll (the poll stays the authority; a hint that never comes only costs latency).
   */
  exitHint?(handle: AgentHandle, runDir: string): ExitHint;
}

export interface ExitHint {
  promise: Promise<void>;
  close(): void;
}

/** Every runtime writes the agent's output here (in the run directory), which is what `gt logs` reads. */
export const OUTPUT_LOG = 'output.log';
