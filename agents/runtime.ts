/**
 * Agent runtimes: where a polecat, reviewer or gate process lives. Every runtime is *start-or-adopt by run id*:
 * asking twice for the same run id never yields two agents, which is what makes an uncertain start safe to retry.
 *
 * The trust boundary (docs/security.md): what a launch runs is untrusted. A runtime shows it only `cwd`,
 * `agentDir` and the read-only `mounts`, gives it only `env`, and keeps everything it needs to track the run
 * (pid, exit code, output log, handle) in `runDir`, which is never visible to the run. The `process` runtime
 * cannot enforce any of this and is for trusted agents only.
 */
import type { AgentRuntime, ResourceLimits } from '../domain/rig';

/** What a run is for: an agent that works or reviews, or a gate command of the refinery. */
export type LaunchRole = 'polecat' | 'reviewer' | 'gate';

export interface AgentLaunch {
  /** Unique per launch; also what adoption is keyed by (container name, process tag). */
  runId: string;
  beadId: string;
  role: LaunchRole;
  /** Shell command (`--agent`, `--reviewer`, a gate). */
  command: string;
  /** The run's own work tree: the only project files it may write. */
  cwd: string;
  /**
   * The whole environment of the run, built by allow-list (activities/agent-env.ts): runtimes add nothing from the
   * worker's environment. PATH in it is the host's; container runtimes keep only its first entry (the `gt` directory).
   */
  env: Record<string, string>;
  /** Worker-owned: pid, exit code, output log, handle. Never mounted into the run, never on its env. */
  runDir: string;
  /** The run's own directory (prompt, token file, scratch/HOME): visible to the run, writable. */
  agentDir: string;
  allowNetwork: boolean;
  /** Host paths the run may read besides `cwd` and `agentDir` (read-only, at the same path). */
  mounts: Mount[];
  /** Container image (docker runtime). */
  image?: string;
  limits: ResourceLimits;
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
  /** Optional: frees what the run left behind in the runtime once it is over (a stopped container). */
  remove?(handle: AgentHandle): Promise<void>;
}

export interface ExitHint {
  promise: Promise<void>;
  close(): void;
}

/** Every runtime writes the run's output here (in the worker-owned run directory), which is what `gt logs` reads. */
export const OUTPUT_LOG = 'output.log';
