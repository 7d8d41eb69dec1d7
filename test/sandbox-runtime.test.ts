/**
 * Issue 3 acceptance: the sandbox runtime (bubblewrap) lets an agent write its worktree and its own directory
 * (HOME, TMPDIR) and nothing else of the host, cuts the network off unless the rig allows it, and still lets the agent
 * commit and speak to the gateway (through its unix socket), so a bead runs end to end in it. Skipped, with the
 * reason, where bubblewrap cannot run. The boundary itself, attack by attack: sandbox-boundary.test.ts.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentLaunch } from '../agents/runtime';
import { SandboxRuntime } from '../agents/sandbox-runtime';
import { runToExit, testLaunch } from './helpers/launch';
import { startTestHost } from './helpers/netns';
import { createRepo } from './helpers/repo';
import { startTestTown, type TestTown } from './helpers/town';

const sandbox = new SandboxRuntime();
const check = await sandbox.available();
if (!check.ok) console.warn(`sandbox tests skipped: ${check.reason}`);

describe.runIf(check.ok)('the sandbox runtime', () => {
  let t: TestTown;
  let server: Server;
  let port: number;
  beforeAll(async () => {
    t = await startTestTown();
    server = createServer((s) => s.on('error', () => undefined).end('hello\n'));
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server?.close();
    await t?.stop();
  });

  const launch = (command: string, allowNetwork: boolean): AgentLaunch => testLaunch('sbx', command, { allowNetwork });

  it('lets the agent write its worktree and nothing outside it', async () => {
    // Outside: a directory of the host (not under /tmp, which the sandbox replaces) and GT_HOME.
    const outside = mkdtempSync('/var/tmp/gt-outside-');
    const l = launch(
      [
        'echo inside > in-worktree.txt && echo ok-worktree >> results',
        `echo evil 2>>errors > ${outside}/evil.txt && echo wrote-outside >> results || echo refused-outside >> results`,
        `echo evil 2>>errors > ${t.gtHome}/evil.txt && echo wrote-home >> results || echo refused-home >> results`,
        `echo evil 2>>errors > ${process.cwd()}/evil.txt && echo wrote-repo >> results || echo refused-repo >> results`,
        'echo scratch > "$TMPDIR/scratch.txt" && echo ok-scratch >> results',
      ].join('\n'),
      false,
    );
    expect(await runToExit(sandbox, l)).toEqual({ state: 'exited', exitCode: 0 });
    expect(readFileSync(join(l.cwd, 'results'), 'utf8').trim().split('\n')).toEqual([
      'ok-worktree',
      'refused-outside',
      'refused-home',
      'refused-repo',
      'ok-scratch',
    ]);
    // Nothing of the host outside the run's paths is even visible.
    expect(readFileSync(join(l.cwd, 'errors'), 'utf8')).toMatch(
      /Directory nonexistent|No such file or directory|Read-only file system/,
    );
    expect(readFileSync(join(l.agentDir, 'tmp', 'scratch.txt'), 'utf8')).toBe('scratch\n');
    expect(existsSync(join(outside, 'evil.txt'))).toBe(false);
    expect(existsSync(join(t.gtHome, 'evil.txt'))).toBe(false);
    expect(existsSync(join(process.cwd(), 'evil.txt'))).toBe(false);
    expect(readFileSync(join(l.cwd, 'in-worktree.txt'), 'utf8')).toBe('inside\n');
  });

  it("cuts the network off unless the rig allows it, and never lets it reach the host's loopback", async () => {
    const probe = (target: string) => {
      const [host, p] = target.split(':');
      return `node -e "require('net').connect(${p}, '${host}').on('connect', () => process.exit(0)).on('error', () => process.exit(9))"`;
    };
    expect(await runToExit(sandbox, launch(probe(`127.0.0.1:${port}`), false))).toEqual({
      state: 'exited',
      exitCode: 9,
    });
    // With network the run has a network namespace of its own (slirp4netns): 127.0.0.1 is its own loopback.
    expect(await runToExit(sandbox, launch(probe(`127.0.0.1:${port}`), true))).toEqual({
      state: 'exited',
      exitCode: 9,
    });
    // Somewhere outside: a test host of our own in a network namespace (more in sandbox-network.test.ts).
    const outside = await startTestHost('outside');
    if ('skip' in outside) return console.warn(`outside probe skipped: ${outside.skip}`);
    try {
      expect(await runToExit(sandbox, launch(probe(outside.target), false))).toEqual({ state: 'exited', exitCode: 9 });
      expect(await runToExit(sandbox, launch(probe(outside.target), true))).toEqual({ state: 'exited', exitCode: 0 });
    } finally {
      outside.close();
    }
  });

  it('runs a bead end to end: the sandboxed agent commits and reaches the gateway through its unix socket', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'sbx-rig', repo: repo.origin, runtime: 'sandbox' });
    const { handle } = await t.town.sling('sbx-rig', { id: 'b-sbx', title: 'Work in a sandbox' });
    expect((await handle.result()).status).toBe('closed');
    expect(await repo.show('work/b-sbx.txt')).toBe('done by b-sbx/r1/a1\n');
    const log = readFileSync(join(t.gtHome, 'runs', 'b-sbx_r1_a1', 'output.log'), 'utf8');
    expect(log).not.toMatch(/cannot reach the gateway/);
  });
});
