/** The agent runtimes this host offers. Unavailable ones stay registered and say why when a rig asks for them. */
import type { AgentRuntime } from '../domain/rig';
import { ProcessRuntime } from './process-runtime';
import type { AgentRuntimeDriver } from './runtime';

export function defaultRuntimes(): Partial<Record<AgentRuntime, AgentRuntimeDriver>> {
  return { process: new ProcessRuntime() };
}
