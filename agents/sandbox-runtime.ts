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
 * - namespaces: pid, ipc, uts, cgroup (if possible) and net, always; with its own pid namespace the run cannot see or
 *   signal the worker, other agents or any host process, nor read their /proc.
 *   All capabilities are dropped (bwrap also sets no_new_privs): a worker running as root otherwise hands the
 *   run CAP_SYS_ADMIN/CAP_MKNOD, enough to mount the host's disk. The run is still uid 0 then, so it can read
 *   root-owned 0600 files, but only those that are visible, listed above.
 * - the network: without `launch.allowNetwork`, only its own loopback. With it, still its own network namespace (so
 *   never the host's loopback services: the Temporal frontend on 127.0.0.1:7233, the gateway's TCP port; nor the
 *   host's abstract unix sockets, which belong to the host's network namespace), to which slirp4netns attaches a
 *   user-mode network: tap0 10.0.2.100/24, default route via 10.0.2.2, MTU 65520, `--disable-host-loopback` (so
 *   10.0.2.2 does not lead to the host's 127.0.0.1), `--enable-sandbox --enable-seccomp` (slirp4netns parses the
 *   run's packets as the worker's user: its own mount namespace, a syscall filter). Outbound TCP/UDP leaves from
 *   the host's stack as the worker's connections would: the internet, the host's LAN, and services of this host
 *   bound to a non-loopback address or 0.0.0.0 are reachable. No IPv6. DNS: the host's /etc/resolv.conf, so a
 *   resolver on the host's loopback (127.0.0.53) does not answer the run. The unix sockets of mounted directories
 *   (the gateway's) work as without network. See networkScript for how slirp4netns is started, gated and ended: the
 *   run's command starts only once the network is up; a slirp4netns that cannot attach fails the run before its
 *   command starts (exit 125, one line in the output log, slirp4netns's own words in runDir/slirp4netns.log); a
 *   host without slirp4netns fails a networked launch at once (SLIRP_MISSING), never falls back to the host's
 *   network. A worker that is not root cannot attach it (tried: slirp4netns gets EPERM joining the namespace bwrap
 *   made; /dev/net/tun may also be root-only), so networked sandbox runs then fail that way.
 * - `--new-session` (no TIOCSTI into a terminal) and `--die-with-parent`: bwrap's parent is the detached worker-side
 *   wrapper (the wrapper's inner subshell in a networked run, which waits for bwrap and slirp4netns and is in the
 *   wrapper's process group), so a worker crash leaves the run alive and adoptable, while the end of the wrapper
 *   (stop() signals its group; bwrap, the subshell and slirp4netns die of the TERM) SIGKILLs the namespace's init,
 *   and with it every process of the namespace, background and setsid'd ones included. stop() is therefore immediate
 *   here: the grace period is not a grace. slirp4netns never outlives the sandbox: it also ends when the sandbox's
 *   init and bwrap are gone (--exit-fd), and the subshell reaps it before the wrapper records the exit code.
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
 * The wrapper stays outside the groups (the inner subshell joins them before it starts bwrap, and slirp4netns in a
 * networked run, which is then inside the groups too: its memory for the run's connections counts), so an OOM kill
 * never takes the bookkeeping with it; a failure to join fails the run rather than running it unlimited. The
 * groups are recorded in runDir/cgroups and removed once the run is seen exited (status()).
 */
import { spawnSync } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { delimiter, isAbsolute, join, resolve, sep } from 'node:path';
import { ProcessRuntime, shellQuote, type InnerPlan } from './process-runtime';
import type { AgentLaunch } from './runtime';
import type { ResourceLimits } from '../domain/rig';

/** The system directories a run may read, bound as the host has them (a directory or a usrmerge symlink). */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
/** What of /etc a run may read: name resolution, users and groups (no shadow), CA certificates, the loader, time. */
const ETC_FILES = [
  'passwd',
  'group',
  'hosts',
  'host.conf',
  'resolv.conf',
  'nsswitch.conf',
  'gai.conf',
  'protocols',
  'services',
  'ssl/certs',
  'ssl/openssl.cnf',
  'ca-certificates',
  'ca-certificates.conf',
  'alternatives',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'localtime',
  'timezone',
  'mime.types',
  'os-release',
].map((f) => `/etc/${f}`);
// Always a network namespace of its own: the host's loopback services (the Temporal frontend, the gateway's TCP port)
// and abstract unix sockets belong to the host's namespace. A rig with network gets a user-mode network (slirp4netns).
const NAMESPACES = ['--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try', '--unshare-net'];
const GUARDS = ['--die-with-parent', '--new-session', '--cap-drop', 'ALL'];

/** Where the run's cgroup paths are recorded (worker-owned, like everything in the run directory). */
export const cgroupRecord = (runDir: string) => join(runDir, 'cgroups');
const CGROUP_FS = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;

/** slirp4netns of a networked run: no host loopback, its own mount namespace and a syscall filter. */
const SLIRP_OPTIONS = ['--configure', '--mtu=65520', '--disable-host-loopback', '--enable-sandbox', '--enable-seccomp'];
/** The descriptors bwrap gets in a networked run (see networkScript). */
const FD = { block: 4, info: 5, sync: 6 } as const;
/** What slirp4netns says (its startup banner, its errors): worker-owned, next to the run's output log. */
export const slirpLog = (runDir: string) => join(runDir, 'slirp4netns.log');
export const SLIRP_MISSING =
  'slirp4netns not found: a sandboxed run with network needs it (install the Debian package slirp4netns)';

/** An executable `name` (a path, or looked up on the worker's PATH and the system directories), or null. */
function executable(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin', '/bin', '/sbin'].filter(Boolean);
  for (const candidate of isAbsolute(name) ? [name] : dirs.map((d) => join(d, name))) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

/**
 * Shell code (evaluated by the wrapper's inner subshell, "$@" being bwrap's argv) that starts bwrap in the
 * background with `--info-fd`, `--sync-fd` and `--block-fd` on FIFOs of the run directory, reads the sandbox's pid,
 * attaches slirp4netns to its network namespace, and lets the run's command start only once slirp4netns says the
 * network is up; otherwise it kills the sandbox before the command ever starts, and the run fails. The
 * subshell stays bwrap's and slirp4netns's parent: it returns bwrap's exit code once both are reaped, so nothing is
 * orphaned. slirp4netns also ends by itself when the sandbox does (its --exit-fd is the read end of the FIFO whose
 * write end only bwrap and the sandbox's pid 1 hold, as --sync-fd), and with the wrapper's group on stop().
 * No variable is assigned before bwrap is started, so the run's environment is passed on untouched.
 */
function networkScript(runDir: string, slirp: string, launcher: string): string {
  const dir = join(runDir, 'net');
  const q = (name: string) => shellQuote(join(dir, name));
  const fail = (why: string) => `echo ${shellQuote(`gt sandbox: ${why}`)} >&2`;
  return [
    `/bin/rm -rf ${shellQuote(dir)} && /bin/mkdir -m 700 ${shellQuote(dir)} && /usr/bin/mkfifo ${q('info')} ${q('alive')} ${q('ready')} ${q('up')} || exit 125`,
    // The FIFOs are opened in the same order on both sides (each open waits for its partner).
    `${launcher}"$@" ${FD.info}>${q('info')} ${FD.sync}>${q('alive')} ${FD.block}<${q('ready')} &`,
    'gt_bwrap=$!',
    `exec 3<${q('info')} 7<${q('alive')} 8>${q('ready')}`,
    // bwrap's JSON, one member a line: the pid of the sandbox's first process and its network namespace.
    'gt_pid= gt_netns=',
    'while read -r gt_line <&3; do',
    '  gt_value=${gt_line#*: }; gt_value=${gt_value%,}',
    `  case $gt_line in *'"child-pid"'*) gt_pid=$gt_value ;; *'"net-namespace"'*) gt_netns=$gt_value ;; esac`,
    'done',
    'exec 3<&-',
    'gt_up= gt_lo= gt_i=0',
    // bwrap's first process sets up the namespace's loopback (an address, then up) and fails if it is up already,
    // which slirp4netns --configure does: slirp4netns starts once the host sees 127.0.0.1 routed in the namespace.
    'case $gt_pid in ""|*[!0-9]*) ;; *)',
    '  while [ $gt_i -lt 1000 ] && [ -e /proc/$gt_pid ]; do',
    '    while read -r gt_line; do case $gt_line in *127.0.0.1*) gt_lo=1; break ;; esac; done 2>/dev/null </proc/$gt_pid/net/fib_trie',
    '    [ -n "$gt_lo" ] && break',
    '    /bin/sleep 0.01; gt_i=$((gt_i + 1))',
    '  done ;;',
    'esac',
    'if [ -n "$gt_lo" ]; then',
    `  ${shellQuote(slirp)} ${SLIRP_OPTIONS.join(' ')} --exit-fd=7 --ready-fd=9 "$gt_pid" tap0 9>${q('up')} 8>&- >> ${shellQuote(slirpLog(runDir))} 2>&1 &`,
    '  gt_slirp=$!',
    `  exec 9<${q('up')}`,
    '  read -r gt_up <&9 || :',
    '  exec 9<&-',
    'fi',
    'exec 7<&-',
    `/bin/rm -rf ${shellQuote(dir)}`,
    'if [ "$gt_up" = 1 ]; then (printf 1 >&8) 2>/dev/null; exec 8>&-; wait $gt_bwrap; gt_rc=$?',
    // The sandbox's first process waits for the byte (it has no death signal yet: killing bwrap alone would let it
    // go on once fd 8 closes), so it is killed first, if it is still the one in the sandbox's network namespace.
    'elif [ -n "$gt_pid" ]; then',
    '  [ "$(/bin/readlink /proc/$gt_pid/ns/net 2>/dev/null)" = "net:[$gt_netns]" ] && kill -KILL $gt_pid',
    `  kill -KILL $gt_bwrap; exec 8>&-; wait $gt_bwrap 2>/dev/null; ${fail(`the run's network could not be attached; see ${slirpLog(runDir)}`)}; gt_rc=125`,
    // No pid: bwrap itself failed (and said why in the log).
    'else exec 8>&-; wait $gt_bwrap; gt_rc=$?',
    'fi',
    // Reaped here, never orphaned. Its --exit-fd has hung up with bwrap already; the kill only makes sure it ends.
    'if [ -n "${gt_slirp:-}" ]; then kill $gt_slirp 2>/dev/null; wait $gt_slirp 2>/dev/null; fi',
    'exit $gt_rc',
  ].join('\n');
}

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
const within = (inner: string, outer: string) =>
  inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);
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
      const enable = (dir: string) =>
        writeFileSync(join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
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
    const group = (controller: string) =>
      make(join(CGROUP_FS, controller, own.get(controller) ?? '/', 'gastown', name));
    const pids = group('pids');
    writeFileSync(join(pids, 'pids.max'), String(limits.pids));
    const mem = group('memory');
    writeFileSync(join(mem, 'memory.limit_in_bytes'), memory);
    if (existsSync(join(mem, 'memory.memsw.limit_in_bytes')))
      writeFileSync(join(mem, 'memory.memsw.limit_in_bytes'), memory);
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

  constructor(
    private readonly bwrap = process.env.GT_BWRAP ?? 'bwrap',
    private readonly slirp4netns = process.env.GT_SLIRP4NETNS ?? 'slirp4netns',
  ) {
    super();
  }

  override available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const probe = spawnSync(
      this.bwrap,
      [...NAMESPACES, ...GUARDS, ...systemBinds(), '--proc', '/proc', '--dev', '/dev', '/bin/true'],
      {
        encoding: 'utf8',
        timeout: 10_000,
      },
    );
    if (probe.error)
      return Promise.resolve({
        ok: false,
        reason: `cannot run ${this.bwrap} (${probe.error.message}); install the Debian package bubblewrap`,
      });
    if (probe.status !== 0)
      return Promise.resolve({
        ok: false,
        reason: `bubblewrap cannot create a sandbox here: ${probe.stderr.trim() || `exit ${probe.status}`}`,
      });
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
    if (exposing)
      throw new Error(
        `run ${launch.runId}: its run directory ${launch.runDir} would be visible to it through ${exposing.path}`,
      );
    // Parents before children, so a path bound inside another keeps its own mode.
    const slirp = launch.allowNetwork ? executable(this.slirp4netns) : null;
    if (launch.allowNetwork && !slirp) throw new Error(SLIRP_MISSING);
    const binds = visible
      .sort((a, b) => resolve(a.path).split(sep).length - resolve(b.path).split(sep).length)
      .flatMap((v) => [
        v.writable ? (v.required ? '--bind' : '--bind-try') : v.required ? '--ro-bind' : '--ro-bind-try',
        v.path,
        v.path,
      ]);
    const args = [
      ...NAMESPACES,
      ...GUARDS,
      ...systemBinds(),
      ...ETC_FILES.flatMap((f) => ['--ro-bind-try', f, f]),
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '--tmpfs',
      '/tmp',
      ...binds,
      '--chdir',
      launch.cwd,
      ...(slirp ? ['--info-fd', String(FD.info), '--sync-fd', String(FD.sync), '--block-fd', String(FD.block)] : []),
      '--',
      '/bin/sh',
      '-c',
      launch.command,
    ];
    const { setup, launcher } = this.confine(launch);
    // A failure to join a group fails the run rather than running it unlimited.
    const prelude = slirp
      ? [
          ...(setup.length ? [`${setup.join(' && ')} || exit 1`] : []),
          networkScript(launch.runDir, slirp, launcher),
        ].join('\n')
      : [...setup, `exec ${launcher}"$@"`].join(' && ');
    return { argv: [this.bwrap, ...args], prelude };
  }

  /**
   * How the inner subshell puts itself under the run's limits (see the module header): commands that must succeed
   * first, and what bwrap is started with.
   */
  private confine(launch: AgentLaunch): { setup: string[]; launcher: string } {
    const groups = createCgroups(launch.runId, launch.limits);
    if (groups) {
      writeFileSync(cgroupRecord(launch.runDir), groups.join('\n'));
      // Writing 0 to cgroup.procs moves the writer itself: the subshell, and so bwrap and everything below it.
      return { setup: groups.map((g) => `echo 0 > ${shellQuote(join(g, 'cgroup.procs'))}`), launcher: '' };
    }
    if (process.getuid?.() !== 0) return { setup: [], launcher: `/usr/bin/prlimit --nproc=${launch.limits.pids} -- ` };
    return { setup: [], launcher: '' };
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
