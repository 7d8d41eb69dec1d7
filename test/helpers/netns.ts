/**
 * A test host of our own for network tests: a network namespace this test run makes, joined to this machine by a veth
 * pair (10.213.<n>.1 on this side, 10.213.<n>.2 in the namespace), with a TCP service that greets. Tests that need
 * "somewhere outside" connect there, never to an address of this machine's real interfaces or beyond. Needs root and
 * iproute2 (`ip`); returns the reason when it cannot be made.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

export interface TestHost {
  /** `address:port` of the greeting service in the namespace. */
  target: string;
  close(): void;
}

let made = 0;

export async function startTestHost(greeting: string): Promise<TestHost | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: 'making a network namespace needs root' };
  const n = (process.pid % 200) + (made++ % 50);
  const ns = `gt-testhost-${process.pid}-${made}`;
  const [here, there] = [`gtth${process.pid % 10000}a${made}`, `gtth${process.pid % 10000}b${made}`];
  const [local, remote] = [`10.213.${n}.1`, `10.213.${n}.2`];
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const running: { server?: ChildProcess } = {};
  const close = () => {
    running.server?.kill('SIGKILL');
    for (const cleanup of [() => ip('netns', 'del', ns), () => ip('link', 'del', here)]) {
      try {
        cleanup();
      } catch {
        // Already gone (deleting the namespace takes the pair with it).
      }
    }
  };
  try {
    ip('netns', 'add', ns);
    ip('link', 'add', here, 'type', 'veth', 'peer', 'name', there);
    ip('link', 'set', there, 'netns', ns);
    ip('addr', 'add', `${local}/30`, 'dev', here);
    ip('link', 'set', here, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${remote}/30`, 'dev', there);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', there, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    close();
    return { skip: `cannot make a test host namespace: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}` };
  }
  const port = 7000 + (made % 1000);
  const script = `require('net').createServer((s) => { s.on('error', () => {}); s.end(${JSON.stringify(`${greeting}\n`)}); }).listen(${port}, ${JSON.stringify(remote)})`;
  running.server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, remote, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return { target: `${remote}:${port}`, close };
    await delay(100);
  }
  close();
  return { skip: 'the test host service did not start' };
}
