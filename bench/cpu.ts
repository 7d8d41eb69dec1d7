/**
 * CPU time over one run of the bench (Linux, from /proc): the whole machine's, the Temporal server's and this
 * process's, which hosts the town's worker (its workflow threads and the SDK's core included). The rest of the
 * machine's busy time over a convoy is the processes the town starts — git, the agents and their `gt done`, the
 * worker's process helper — and anything else that ran meanwhile, which is why reports also give the load average.
 *
 * Why the bench measures it: with more agents than cores the machine is saturated, and a convoy's makespan against the
 * floor's is then the ratio of their CPU per bead, whatever the critical path (docs/performance.md).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export interface CpuMark {
  at: number;
  /** Ticks the machine's cores spent busy (user, nice, system, irq, softirq; not idle, iowait or steal). */
  machineTicks: number;
  serverTicks?: number;
  /** process.cpuUsage(), µs. */
  selfMicros: number;
}

/** One run's CPU time, ms; no `serverMs` when the run has no server of its own to read (the floor). */
export interface CpuSpent {
  wallMs: number;
  machineMs: number;
  serverMs?: number;
  selfMs: number;
  /** Cores on the machine: machineMs / (wallMs × cores) is how busy it was. */
  cores: number;
}

let ticksPerSecond: number | undefined;
/** USER_HZ: 100 on every Linux the bench has met, asked once anyway. */
function hz(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** Ticks the machine's cores spent busy so far, from /proc/stat's first line. */
function machineTicks(): number | undefined {
  try {
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .split(/\s+/)
      .slice(1)
      .map(Number);
    return user + nice + system + irq + softirq;
  } catch {
    return undefined;
  }
}

function processTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces), from field 3: utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** CPU ms these processes have spent so far (a process gone meanwhile counts 0); undefined off Linux. */
export function processesCpuMs(pids: readonly number[]): number | undefined {
  let ticks = 0;
  for (const pid of pids) {
    const t = processTicks(pid);
    if (t === undefined && !existsSync('/proc/self/stat')) return undefined;
    ticks += t ?? 0;
  }
  return (ticks * 1000) / hz();
}

/** Where the counters stand now; undefined where /proc cannot be read (not Linux). */
export function cpuMark(serverPid?: number): CpuMark | undefined {
  const machine = machineTicks();
  if (machine === undefined) return undefined;
  const { user, system } = process.cpuUsage();
  return {
    at: Date.now(),
    machineTicks: machine,
    ...(serverPid !== undefined ? { serverTicks: processTicks(serverPid) } : {}),
    selfMicros: user + system,
  };
}

/** What was spent between two marks of the same process (and server). */
export function cpuSpent(from: CpuMark | undefined, to: CpuMark | undefined): CpuSpent | undefined {
  if (!from || !to) return undefined;
  const ms = (ticks: number) => (ticks * 1000) / hz();
  return {
    wallMs: to.at - from.at,
    machineMs: ms(to.machineTicks - from.machineTicks),
    ...(from.serverTicks !== undefined && to.serverTicks !== undefined
      ? { serverMs: ms(to.serverTicks - from.serverTicks) }
      : {}),
    selfMs: (to.selfMicros - from.selfMicros) / 1000,
    cores: cpus().length,
  };
}
