/**
 * host/spawner.ts runs the worker's git commands, and starts its agents' and gates' wrappers, from a small helper
 * process (a fork of the worker's large process blocked its thread for milliseconds per command). A command must run
 * exactly as execFile would run it in the worker — its own environment and nothing else, its input, its exit status
 * and output — and a helper that dies must fail what it was running and be replaced for the next command. A launch
 * must start a detached group leader with its own environment, directory and log, that outlives the helper. Real
 * processes throughout.
 */
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
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

  it('launches a detached group leader with exactly its environment and directory, logging to its file', async () => {
    const s = new Spawner();
    const dir = mkdtempSync(join(tmpdir(), 'gt-spawner-'));
    const log = join(dir, 'out.log');
    const pid = await s.launch({
      file: 'sh',
      args: ['-c', `pwd; env; echo oops >&2; touch "${dir}/done"`],
      cwd: '/tmp',
      env: { ONLY_THIS: 'yes', PATH },
      log,
    });
    for (let i = 0; i < 100 && !existsSync(join(dir, 'done')); i++) await delay(20);
    expect(readFileSync(log, 'utf8').split('\n').sort()).toEqual(
      ['', '/tmp', 'ONLY_THIS=yes', `PATH=${PATH}`, 'PWD=/tmp', 'oops'].sort(),
    );
    expect(statSync(log).mode & 0o777).toBe(0o600);
    expect(pid).toBeGreaterThan(0);
    await expect(s.launch({ file: 'true', args: [], cwd: '/no/such/dir', env: { PATH }, log })).rejects.toThrow(
      /could not start true: .*ENOENT/,
    );
  });

  it('leaves a launched process running when the helper dies, in a process group of its own', async () => {
    const s = new Spawner();
    const dir = mkdtempSync(join(tmpdir(), 'gt-spawner-'));
    const pid = await s.launch({ file: 'sleep', args: ['30'], cwd: '/', env: { PATH }, log: join(dir, 'log') });
    try {
      const stat = (p: number) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      const [, ppid, pgrp] = stat(pid);
      expect(pgrp).toBe(String(pid));
      // Its parent is the helper, not this process (whose fork is what the helper saves).
      expect(Number(ppid)).not.toBe(process.pid);
      process.kill(Number(ppid), 'SIGKILL');
      for (let i = 0; i < 100 && existsSync(`/proc/${ppid}`); i++) await delay(20);
      await delay(20);
      await expect(s.run({ file: 'true', args: [], cwd: '/', env: { PATH } })).resolves.toMatchObject({ ok: true });
      expect(stat(pid)[0]).not.toBe('Z');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});
