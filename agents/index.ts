/** The agent runtimes this host offers. Unavailable ones stay registered and say why when a rig asks for them. */
import type { AgentRuntime } from '../domain/rig';
import { DockerRuntime } from './docker-runtime';
import { ProcessRuntime } from './process-runtime';
import type { AgentRuntimeDriver } from './runtime';
import { SandboxRuntime } from './sandbox-runtime';

export function defaultRuntimes(): Partial<Record<AgentRuntime, AgentRuntimeDriver>> {
  return { process: new ProcessRuntime(), sandbox: new SandboxRuntime(), docker: new DockerRuntime() };
}
