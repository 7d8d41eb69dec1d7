/**
 * The `sandbox` runtime: the process runtime (same worker-side wrapper, pid/exit/output bookkeeping and adoption)
 * whose inner command is bubblewrap. For untrusted agents and gates (docs/security.md).
 *
 * What a run sees (bwrap starts from an empty root):
 * - its worktree `cwd` and its own `agentDir`, read-write; `launch.mounts` at the same path (read-only unless a
 *   mount says otherwise); the system: /usr (and /bin, /sbin, /lib* as the host has them: symlinks on usrmerge),
 *   a curated read-only subset of /etc (ETC_FILES: no shadow, no ssh keys, no ssl private keys); a private /proc of
 *   its own pid namespace, a minimal /dev, an empty tmpfs /tmp. Nothing else: not $HOME, GT_HOME, /root, /work,
 *   other runs' directories, nor its own `runDir` (startOrAdopt refuses a launch that would expose it).
 * - exactly `launch.env`: bwrap is started with it and passes it on (a shell adds PWD). It is not given as
 *   `--setenv` arguments because argv is world-readable in /proc/<pid>/cmdline on the host.
 * - namespaces: pid, ipc, uts, cgroup (if possible), and net unless the rig allows the network; with its own pid
 *   namespace the run cannot see or signal the worker, other agents or any host process, nor read their /proc.
 *   All capabilities are dropped (bwrap also sets no_new_privs): a worker running as root otherwise hands the
 *   run CAP_SYS_ADMIN/CAP_MKNOD, enough to mount the host's disk. The run is still uid 0 then, so it can read
 *   root-owned 0600 files, but only those that are visible, listed above.
 * - `--new-session` (no TIOCSTI into a terminal) and `--die-with-parent`: bwrap's parent is the detached worker-side
 *   wrapper, so a worker crash leaves the run alive and adoptable, while the end of the wrapper (stop() signals its
 *   group; bwrap dies of the TERM) SIGKILLs the namespace's init, and with it every process of the namespace,
 *   background and setsid'd ones included. stop() is therefore immediate here: the grace period is not a grace.
 *
 * Resource limits (`launch.limits`), where they are enforced:
 * - cgroup v2 (/sys/fs/cgroup/cgroup.controllers exists and /sys/fs/cgroup/gastown can be created with the pids,
 *   memory (and cpu, where offered) controllers, i.e. the worker is root in the host's cgroup namespace): a
 *   group per run, gastown/<run>, with pids.max, memory.max (memory.swap.max 0), cpu.max. Not exercised by the
 *   tests so far: the hosts they ran on mount cgroup v1.
 * - cgroup v1 (the per-controller hierarchies /sys/fs/cgroup/{pids,memory,cpu} writable): a group per run under the
 *   worker's own group of each hierarchy (so the worker's own limits still bound its runs), with pids.max,
 *   memory.limit_in_bytes (and memsw, no swap beyond it), cpu.cfs_quota_us (where a cpu hierarchy is mounted).
 * - neither: only the number of processes, by RLIMIT_NPROC, and only for a non-root worker (the kernel does not
 *   enforce it for uid 0) where it counts every process of the worker's uid; memory and CPU are then NOT limited.
 * The wrapper stays outside the groups (the inner subshell joins them before it execs bwrap), so an OOM kill
 * never takes the bookkeeping with it; a failure to join fails the run rather than running it unlimited. The
 * groups are recorded in runDir/cgroups and removed once the run is seen exited (status()).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { ProcessRuntime, shellQuote, type InnerPlan } from './process-runtime';
import type { AgentLaunch } from './runtime';
import type { ResourceLimits } from '../domain/rig';

/** The system directories a run may read, bound as the host has them (a directory or a usrmerge symlink). */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
/** What of /etc a run may read: name resolution, users and groups (no shadow), CA certificates, the loader, time. */
const ETC_FILES = [
  'passwd', 'group', 'hosts', 'host.conf', 'resolv.conf', 'nsswitch.conf', 'gai.conf', 'protocols', 'services',
  'ssl/certs', 'ssl/openssl.cnf', 'ca-certificates', 'ca-certificates.conf', 'alternatives',
  'ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'localtime', 'timezone', 'mime.types', 'os-release',
].map((f) => `/etc/${f}`);
const NAMESPACES = ['--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try'];
const GUARDS = ['--die-with-parent', '--new-session', '--cap-drop', 'ALL'];

/** Where the run's cgroup paths are recorded (worker-owned, like everything in the run directory). */
export const cgroupRecord = (runDir: string) => join(runDir, 'cgroups');
const CGROUP_FS = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;

function systemBinds(): string[] {
  return SYSTEM_DIRS.flatMap((dir) => {
    try {
      const stat = lstatSync(dir);
      if (stat.isSymbolicLink()) return ['--symlink', readlinkSync(dir), dir];
      return stat.isDirectory() ? ['--ro-bind', dir, dir] : [];
    } catch {
      return [];
    }
  });
}

/** `inner` is `outer` or below it. */
const within = (inner: string, outer: string) => inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);
const real = (path: string) => {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
};

/** The run's cgroups, created and limited, or null when this host does not let the worker create them. */
function createCgroups(runId: string, limits: ResourceLimits): string[] | null {
  const name = `gt-${runId.replace(/[^A-Za-z0-9._-]/g, '_')}`;
  const memory = String(limits.memoryMb * 1024 * 1024);
  const quota = String(Math.round(limits.cpus * CPU_PERIOD_US));
  const created: string[] = [];
  const make = (dir: string) => {
    try {
      rmdirSync(dir); // a leftover of an earlier launch of the same run id: start from fresh limits
    } catch {
      // Absent, as it should be.
    }
    mkdirSync(dir, { recursive: true });
    created.push(dir);
    return dir;
  };
  try {
    if (existsSync(join(CGROUP_FS, 'cgroup.controllers'))) {
      // CPU is limited where the controller is offered (it is not while real-time processes run outside it).
      const cpu = readFileSync(join(CGROUP_FS, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu');
      const wanted = ['pids', 'memory', ...(cpu ? ['cpu'] : [])];
      const enable = (dir: string) => writeFileSync(join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
      enable(CGROUP_FS);
      const base = join(CGROUP_FS, 'gastown');
      mkdirSync(base, { recursive: true });
      enable(base);
      const dir = make(join(base, name));
      writeFileSync(join(dir, 'pids.max'), String(limits.pids));
      writeFileSync(join(dir, 'memory.max'), memory);
      if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
      if (cpu) writeFileSync(join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      return created;
    }
    // v1: one hierarchy per controller; the worker's own group in each comes from /proc/self/cgroup
    // ("id:controller[,controller]:path").
    const own = new Map<string, string>();
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const [, controllers, path] = line.split(':');
      for (const c of controllers?.split(',') ?? []) if (path !== undefined) own.set(c, path);
    }
    const group = (controller: string) => make(join(CGROUP_FS, controller, own.get(controller) ?? '/', 'gastown', name));
    const pids = group('pids');
    writeFileSync(join(pids, 'pids.max'), String(limits.pids));
    const mem = group('memory');
    writeFileSync(join(mem, 'memory.limit_in_bytes'), memory);
    if (existsSync(join(mem, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(mem, 'memory.memsw.limit_in_bytes'), memory);
    if (existsSync(join(CGROUP_FS, 'cpu'))) {
      const cpu = group('cpu');
      writeFileSync(join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      writeFileSync(join(cpu, 'cpu.cfs_quota_us'), quota);
    }
    return created;
  } catch {
    removeCgroups(created);
    return null;
  }
}

/** Removes the groups; a group that still holds processes (the namespace being torn down) is left for a later call. */
function removeCgroups(dirs: string[]): boolean {
  let all = true;
  for (const dir of [...dirs].reverse()) {
    try {
      rmdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') all = false;
    }
  }
  return all;
}

export class SandboxRuntime extends ProcessRuntime {
  override readonly name = 'sandbox' as const;

  constructor(private readonly bwrap = process.env.GT_BWRAP ?? 'bwrap') {
    super();
  }

  override available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const probe = spawnSync(this.bwrap, [...NAMESPACES, '--unshare-net', ...GUARDS, ...systemBinds(), '--proc', '/proc', '--dev', '/dev', '/bin/true'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    if (probe.error) return Promise.resolve({ ok: false, reason: `cannot run ${this.bwrap} (${probe.error.message}); install the Debian package bubblewrap` });
    if (probe.status !== 0) return Promise.resolve({ ok: false, reason: `bubblewrap cannot create a sandbox here: ${probe.stderr.trim() || `exit ${probe.status}`}` });
    return Promise.resolve({ ok: true });
  }

  protected override inner(launch: AgentLaunch): InnerPlan {
    const visible = [
      { path: launch.cwd, writable: true, required: true },
      { path: launch.agentDir, writable: true, required: true },
      ...launch.mounts.map((m) => ({ ...m, required: false })),
    ];
    const runDir = real(launch.runDir);
    const exposing = visible.find((v) => within(runDir, real(v.path)));
    if (exposing) throw new Error(`run ${launch.runId}: its run directory ${launch.runDir} would be visible to it through ${exposing.path}`);
    // Parents before children, so a path bound inside another keeps its own mode.
    const binds = visible
      .sort((a, b) => resolve(a.path).split(sep).length - resolve(b.path).split(sep).length)
      .flatMap((v) => [v.writable ? (v.required ? '--bind' : '--bind-try') : (v.required ? '--ro-bind' : '--ro-bind-try'), v.path, v.path]);
    const args = [
      ...NAMESPACES,
      ...(launch.allowNetwork ? [] : ['--unshare-net']),
      ...GUARDS,
      ...systemBinds(),
      ...ETC_FILES.flatMap((f) => ['--ro-bind-try', f, f]),
      '--proc', '/proc',
      '--dev', '/dev',
      '--tmpfs', '/tmp',
      ...binds,
      '--chdir', launch.cwd,
      '--',
      '/bin/sh', '-c', launch.command,
    ];
    return { argv: [this.bwrap, ...args], prelude: this.confine(launch) };
  }

  /** Shell code that puts the inner subshell under the run's limits, then execs bwrap (see the module header). */
  private confine(launch: AgentLaunch): string {
    const groups = createCgroups(launch.runId, launch.limits);
    if (groups) {
      writeFileSync(cgroupRecord(launch.runDir), groups.join('\n'));
      // Writing 0 to cgroup.procs moves the writer itself: the subshell, and so bwrap and everything below it.
      return [...groups.map((g) => `echo 0 > ${shellQuote(join(g, 'cgroup.procs'))}`), 'exec "$@"'].join(' && ');
    }
    if (process.getuid?.() !== 0) return `exec /usr/bin/prlimit --nproc=${launch.limits.pids} -- "$@"`;
    return 'exec "$@"';
  }

  protected override release(runDir: string): void {
    let dirs: string[];
    try {
      dirs = readFileSync(cgroupRecord(runDir), 'utf8').split('\n').filter(Boolean);
    } catch {
      return;
    }
    if (removeCgroups(dirs)) writeFileSync(cgroupRecord(runDir), '');
  }
}
