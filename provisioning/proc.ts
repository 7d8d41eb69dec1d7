/**
 * What Linux's /proc says about a process: its start time (which, with its pid, names one process for good — a pid
 * alone can be reused), its command line, and the TCP ports it listens on. Every function answers `undefined` or
 * empty where /proc is not there or the process is gone, never throws: callers decide what an unknown means.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

/** Clock ticks after boot when `pid` started (field 22 of /proc/<pid>/stat); undefined if gone or a zombie. */
export function processStartTime(pid: number): string | undefined {
  const stat = read(`/proc/${pid}/stat`);
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const fields = stat?.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (!fields || fields[0] === 'Z') return undefined;
  return fields[19];
}

/** The parent pid (field 4 of /proc/<pid>/stat). */
export function parentPid(pid: number): number | undefined {
  const stat = read(`/proc/${pid}/stat`);
  const ppid = stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
  return ppid === undefined ? undefined : Number(ppid);
}

/** Whether the process that started at `startTime` with this pid still runs. */
export function isSameProcessAlive(pid: number, startTime: string): boolean {
  return processStartTime(pid) === startTime;
}

export function commandLine(pid: number): string[] | undefined {
  return read(`/proc/${pid}/cmdline`)?.split('\0').slice(0, -1);
}

export function allPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number);
  } catch {
    return [];
  }
}

export interface Listener {
  ip: string;
  port: number;
  inode: string;
}

/** Every listening TCP socket of the machine (IPv4 and IPv6; addresses as printed by `ss`). */
export function tcpListeners(): Listener[] {
  return ['/proc/net/tcp', '/proc/net/tcp6'].flatMap((file) =>
    (read(file) ?? '')
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      // Field 3 is the state; 0A is LISTEN.
      .filter((f) => f.length > 9 && f[3] === '0A')
      .map((f) => {
        const [hexIp, hexPort] = f[1]!.split(':') as [string, string];
        return { ip: decodeIp(hexIp), port: parseInt(hexPort, 16), inode: f[9]! };
      }),
  );
}

/** /proc/net prints addresses as host-order 32-bit words. */
function decodeIp(hex: string): string {
  const words = hex.match(/.{8}/g)!.map((w) => w.match(/../g)!.reverse().join(''));
  if (words.length === 1)
    return words[0]!
      .match(/../g)!
      .map((b) => parseInt(b, 16))
      .join('.');
  const v6 = words.join('');
  if (v6.startsWith('00000000000000000000FFFF')) return `::ffff:${decodeIp(hex.slice(24))}`;
  return v6
    .match(/.{4}/g)!
    .map((g) => g.replace(/^0+(?=.)/, '').toLowerCase())
    .join(':')
    .replace(/(^|:)0(:0)+(:|$)/, '::');
}

/** The TCP sockets `pid` listens on. */
export function listenersOf(pid: number): Listener[] {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const inodes = new Set(
    fds.flatMap((fd) => {
      try {
        return [/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? ''];
      } catch {
        return [];
      }
    }),
  );
  return tcpListeners().filter((l) => inodes.has(l.inode));
}
