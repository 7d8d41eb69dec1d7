/**
 * The environment of an agent or gate run, built by allow-list: a run gets the contract's GT_* variables, the
 * rig's declared env, the model keys the worker declares (GT_AGENT_PASSTHROUGH), a git identity and a handful of
 * harmless host basics (locale, terminal, time zone) — nothing else of the worker's environment, whatever it holds
 * (Temporal, codec, forge, cloud or npm credentials, ssh agents). Runtimes add nothing to it (agents/runtime.ts).
 *
 * The run's token is never in the environment (container env is visible through the engine, process env through
 * /proc): it is a file in the run's own directory, named by GT_RUN_TOKEN_FILE.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentRuntime, RigConfig } from '../domain/rig';

/** Host variables every run may have: they configure tools, they grant nothing. */
const HOST_BASICS = ['LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TERM', 'TZ', 'COLORTERM', 'NO_COLOR'];
/** Model keys passed to agents when the worker does not declare its own list (GT_AGENT_PASSTHROUGH). */
const DEFAULT_PASSTHROUGH = ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'OPENROUTER_API_KEY'];
/** Never passed, even when declared: the worker's own credentials and what would redirect git or the loader. */
const NEVER = /^(TEMPORAL_|GT_|GIT_|GITHUB_TOKEN$|GH_TOKEN$|GITLAB_TOKEN$|LD_|NODE_OPTIONS$|SSH_AUTH_SOCK$)/;

/** Writes the run's gateway token to an owner-only file in the run's own directory and returns its path. */
export function writeRunToken(agentDir: string, token: string): string {
  mkdirSync(agentDir, { recursive: true, mode: 0o700 });
  const file = join(agentDir, 'token');
  writeFileSync(file, token, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

export interface RunEnvOptions {
  runtime: AgentRuntime;
  rig: RigConfig;
  /** The worker's environment (passed in, so what reaches a run is decided here and testable). */
  hostEnv: NodeJS.ProcessEnv;
  /** The run's own directory: HOME and TMPDIR of contained runs live there. */
  agentDir: string;
  /** Directory of the `gt` command, first on PATH. */
  gtBinDir: string;
  /** The run's contract variables (GT_ROLE, GT_RUN_ID, GT_RUN_TOKEN_FILE, …). */
  gt: Record<string, string>;
  identity?: { name: string; email: string };
}

export function runEnv(options: RunEnvOptions): Record<string, string> {
  const { hostEnv, rig } = options;
  const pick = (names: string[]) =>
    Object.fromEntries(
      names.flatMap((k) => {
        const v = hostEnv[k];
        return v !== undefined && !NEVER.test(k) ? [[k, v]] : [];
      }),
    );
  const declared =
    hostEnv.GT_AGENT_PASSTHROUGH?.split(',')
      .map((s) => s.trim())
      .filter(Boolean) ?? DEFAULT_PASSTHROUGH;
  // Contained runs get a home and temp dir of their own; the process runtime (trusted agents) keeps the user's,
  // where their agent CLI's login and settings live.
  const contained = options.runtime !== 'process';
  const home = contained ? join(options.agentDir, 'home') : (hostEnv.HOME ?? options.agentDir);
  const tmp = contained ? join(options.agentDir, 'tmp') : (hostEnv.TMPDIR ?? '/tmp');
  if (contained) for (const dir of [home, tmp]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const identity: Record<string, string> = options.identity
    ? {
        GIT_AUTHOR_NAME: options.identity.name,
        GIT_AUTHOR_EMAIL: options.identity.email,
        GIT_COMMITTER_NAME: options.identity.name,
        GIT_COMMITTER_EMAIL: options.identity.email,
      }
    : {};
  return {
    ...pick(HOST_BASICS),
    ...pick(declared),
    ...Object.fromEntries(Object.entries(rig.env).filter(([k]) => !NEVER.test(k))),
    ...identity,
    GIT_TERMINAL_PROMPT: '0',
    HOME: home,
    TMPDIR: tmp,
    USER: hostEnv.USER ?? 'agent',
    PATH: `${options.gtBinDir}:${hostEnv.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
    ...options.gt,
  };
}
