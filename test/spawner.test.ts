/**
 * host/spawner.ts runs the worker's git commands from a small helper process (a fork of the worker's large process
 * blocked its thread for milliseconds per command). A command must run exactly as execFile would run it in the
 * worker — its own environment and nothing else, its input, its exit status and output — and a helper that dies must
 * fail what it was running and be replaced for the next command. Real processes throughout.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Spawner } from '../host/spawner';

const PATH = process.env.PATH ?? '/usr/bin:/bin';

describe('the process helper', () => {
  it('runs a command with exactly its environment, input and working directory, and reports its status', async () => {
    const s = new Spawner();
    const env = await s.run({ file: 'env', args: [], cwd: '/', env: { ONLY_THIS: 'yes', PATH } });
    expect(env).toEqual({ ok: true, stdout: `ONLY_THIS=yes\nPATH=${PATH}\n`, stderr: '' });
    const cat = await s.run({
      file: 'sh',
      args: ['-c', 'pwd; cat; echo oops >&2; exit 3'],
      cwd: '/tmp',
      env: { PATH },
      input: 'in\n',
    });
    expect(cat).toEqual({ ok: false, stdout: '/tmp\nin\n', stderr: 'oops\n' });
    const missing = await s.run({ file: 'true', args: [], cwd: '/no/such/dir', env: { PATH } });
    expect(missing.ok).toBe(false);
    expect(missing.stderr).toMatch(/ENOENT/);
  });

  it('runs commands side by side', async () => {
    const s = new Spawner();
    const dir = mkdtempSync(join(tmpdir(), 'gt-spawner-'));
    // The first waits (up to 10 s) for a file only the second makes: run one after the other, the first would fail.
    const waiter = s.run({
      file: 'sh',
      args: ['-c', `for i in $(seq 200); do [ -f "${dir}/go" ] && exit 0; sleep 0.05; done; exit 1`],
      cwd: '/',
      env: { PATH },
    });
    const maker = s.run({ file: 'touch', args: [join(dir, 'go')], cwd: '/', env: { PATH } });
    expect((await Promise.all([waiter, maker])).map((r) => r.ok)).toEqual([true, true]);
  });

  it('fails the commands of a helper that died, and starts a new one for the next', async () => {
    const s = new Spawner();
    const slow = s.run({ file: 'sleep', args: ['5'], cwd: '/', env: { PATH } });
    // The command's parent is the helper: this kills it.
    const killer = s.run({ file: 'sh', args: ['-c', 'kill -9 $PPID'], cwd: '/', env: { PATH } });
    await expect(slow).rejects.toThrow(/process helper exited/);
    await expect(killer).rejects.toThrow(/process helper exited/);
    expect(await s.run({ file: 'echo', args: ['again'], cwd: '/', env: { PATH } })).toMatchObject({
      ok: true,
      stdout: 'again\n',
    });
  });
});
