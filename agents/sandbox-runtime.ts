/**
 * The `sandbox` runtime: the process runtime under bubblewrap. The host is mounted read-only; only the worktree,
 * the run directory (with a scratch dir as TMPDIR) and the mounts the run asks for (the git directory of the
 * worktree) are writable; /tmp is private; the network is cut off unless the rig allows it (agents then reach the
 * gateway through its unix socket). No pid namespace: the wrapper's pid must be a host pid so a restarted worker
 * can re-attach to it, and `--new-session` makes it a process-group leader so stop() reaches the whole agent.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { processTag, ProcessRuntime, wrapperScript, type SpawnPlan } from './process-runtime';
import type { AgentLaunch } from './runtime';

export class SandboxRuntime extends ProcessRuntime {
  override readonly name = 'sandbox' as const;

  constructor(private readonly bwrap = process.env.GT_BWRAP ?? 'bwrap') {
    super();
  }

  override available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const probe = spawnSync(this.bwrap, ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--unshare-net', '--new-session', '/bin/true'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    if (probe.error) return Promise.resolve({ ok: false, reason: `cannot run ${this.bwrap} (${probe.error.message}); install the Debian package bubblewrap` });
    if (probe.status !== 0) return Promise.resolve({ ok: false, reason: `bubblewrap cannot create a sandbox here: ${probe.stderr.trim() || `exit ${probe.status}`}` });
    return Promise.resolve({ ok: true });
  }

  protected override plan(launch: AgentLaunch): SpawnPlan {
    const scratch = join(launch.runDir, 'scratch');
    mkdirSync(scratch, { recursive: true });
    const mounts = launch.mounts
      .filter((m) => existsSync(m.path))
      .flatMap((m) => [m.writable ? '--bind' : '--ro-bind', m.path, m.path]);
    const args = [
      '--ro-bind', '/', '/',
      '--dev', '/dev',
      '--proc', '/proc',
      '--tmpfs', '/tmp',
      ...mounts,
      '--bind', launch.runDir, launch.runDir,
      '--bind', launch.cwd, launch.cwd,
      ...(launch.allowNetwork ? [] : ['--unshare-net']),
      '--new-session',
      '--chdir', launch.cwd,
      '/bin/sh', '-c', wrapperScript(launch.command), processTag(launch.runId),
    ];
    return { file: this.bwrap, args, env: { TMPDIR: scratch, GT_SCRATCH: scratch } };
  }
}
