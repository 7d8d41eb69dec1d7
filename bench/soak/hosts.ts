/**
 * Worker hosts of the soak's town: each a real `gt worker` process with a GT_HOME of its own (a separate machine, as
 * far as the town can tell), a fixed gateway port (so agents' GT_GATEWAY_URL stays valid across restarts) and the
 * town's shared queue and gateway secret. A host can be killed whole (worker and its agents, kill -9), paused
 * (SIGSTOP) and started again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface Host {
  name: string;
  gtHome: string;
  gatewayPort: number;
  start(): Promise<void>;
  /** kill -9 of the worker and of every live agent process group of this host; returns how many groups. */
  killAll(soakDir: string): number;
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export async function startHost(options: {
  name: string;
  scratch: string;
  gtBin: string;
  env: Record<string, string>;
  log: (line: string) => void;
}): Promise<Host> {
  const { name, scratch, gtBin, log } = options;
  const gtHome = join(scratch, `home-${name}`);
  mkdirSync(gtHome, { recursive: true });
  const gatewayPort = await freePort();
  const env = { ...process.env, ...options.env, GT_HOME: gtHome, GT_HOST_ID: name };
  let proc: ChildProcess | undefined;
  let output = '';
  let stopping = false;

  const start = async () => {
    output = '';
    const child = spawn(gtBin, ['worker', '--gateway-port', String(gatewayPort)], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc = child;
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('exit', (code, signal) => {
      if (proc === child && !stopping && signal !== 'SIGKILL')
        log(`${name}: worker exited by itself (${signal ?? code}); last output: ${output.slice(-400)}`);
    });
    const deadline = Date.now() + 120_000;
    while (!/gateway http:\/\/127\.0\.0\.1:\d+/.test(output)) {
      if (child.exitCode !== null) throw new Error(`${name}: worker exited (${child.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`${name}: worker did not start within 120 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await start();
  log(`${name}: worker up (GT_HOME ${gtHome}, gateway port ${gatewayPort})`);

  return {
    name,
    gtHome,
    gatewayPort,
    start,
    killAll(soakDir) {
      if (proc?.pid) proc.kill('SIGKILL');
      return killAgentsOf(soakDir, (url) => url.includes(`:${gatewayPort}`) || url.includes(gtHome));
    },
    pause: () => void proc?.kill('SIGSTOP'),
    resume: () => void proc?.kill('SIGCONT'),
    async stop() {
      stopping = true;
      const child = proc;
      if (!child || child.exitCode !== null || child.signalCode) return;
      child.kill('SIGCONT');
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Kills (-9) the process group of every agent whose marks say it runs behind a gateway `ofHost` and is alive. */
function killAgentsOf(soakDir: string, ofHost: (gatewayUrl: string) => boolean): number {
  const dir = join(soakDir, 'marks');
  if (!existsSync(dir)) return 0;
  let killed = 0;
  for (const file of readdirSync(dir)) {
    const text = readFileSync(join(dir, file), 'utf8');
    const start = /^start \d+ (\d+) (\S+)$/m.exec(text);
    if (!start || /^end /m.test(text) || !ofHost(start[2]!)) continue;
    const pgid = processGroupOf(Number(start[1]));
    // Never our own group (an agent not detached from its worker would share the soak's).
    if (!pgid || pgid === processGroupOf(process.pid)) continue;
    try {
      process.kill(-pgid, 'SIGKILL');
      killed++;
    } catch {
      // Gone already.
    }
  }
  return killed;
}

function processGroupOf(pid: number): number | undefined {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid pgrp …"; comm may hold spaces, so read after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
    return pgrp > 1 ? pgrp : undefined;
  } catch {
    return undefined;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
