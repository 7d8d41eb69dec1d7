/**
 * Debian's PostgreSQL as the production topology's database, run by hand on loopback in a data directory of the
 * caller's (no system cluster, no service manager), the way the compose file's `postgresql` service runs it.
 *
 * Invariants:
 *  - It listens on 127.0.0.1 only, on the caller's port, with its Unix socket inside its own data directory; remote
 *    (TCP) logins need the password (scram-sha-256), the socket only reaches the data directory's owner.
 *  - PostgreSQL refuses to run as root: as root, the data directory belongs to the `postgres` user and every
 *    PostgreSQL program runs as that user. The caller's state directory must then be searchable by it.
 *  - The server is our child and dies with us (`setpriv --pdeathsig KILL`, like the dev server): a kill -9 of the
 *    harness leaves no postmaster holding the port; the next start runs PostgreSQL's own crash recovery.
 *  - A data directory is initialised once (initdb) and reused: the Temporal schema in it survives restarts.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { findOnPath } from './temporal-cli';

const run = promisify(execFile);

export type ResolvedPostgres = { available: true; binDir: string } | { available: false; reason: string };

const isRoot = () => process.getuid?.() === 0;

/** The binaries (initdb, postgres, pg_isready) of the newest Debian PostgreSQL, or of the one on PATH. */
export function resolvePostgres(): ResolvedPostgres {
  const debian = '/usr/lib/postgresql';
  const versions = existsSync(debian)
    ? readdirSync(debian)
        .filter((v) => existsSync(join(debian, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length) return { available: true, binDir: join(debian, versions[0]!, 'bin') };
  const postgres = findOnPath('postgres');
  if (postgres && existsSync(join(dirname(postgres), 'initdb'))) return { available: true, binDir: dirname(postgres) };
  return {
    available: false,
    reason: 'PostgreSQL is not installed: `apt-get install postgresql` (as root; `npm run provision` does it)',
  };
}

/** For `npm run provision`: installs Debian's `postgresql` package when missing and we are root. */
export async function ensurePostgresInstalled(onProgress?: (m: string) => void): Promise<ResolvedPostgres> {
  const found = resolvePostgres();
  if (found.available || !isRoot() || !findOnPath('apt-get') || process.env.GT_SKIP_SYSTEM_PACKAGES === '1')
    return found;
  onProgress?.('Installing postgresql with apt-get (for the production-topology tests)…');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await run('apt-get', ['update', '-qq'], { env });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'postgresql'], { env });
  } catch (err) {
    return { available: false, reason: `apt-get install postgresql failed: ${(err as Error).message}` };
  }
  return resolvePostgres();
}

export interface PostgresOptions {
  dataDir: string;
  port: number;
  /** The superuser made by initdb, and its password (as the compose file's POSTGRES_USER / POSTGRES_PASSWORD). */
  user: string;
  password: string;
  logFile: string;
  onProgress?: (m: string) => void;
}

export interface Postgres {
  host: string;
  port: number;
  pid: number;
  proc: ChildProcess;
  /** Fast shutdown (SIGINT), SIGKILL after a grace period. */
  stop(): Promise<void>;
}

/** argv prefix that runs a PostgreSQL program as its owner, dying with us. */
function asOwner(file: string, args: string[]): [string, string[]] {
  const setpriv = findOnPath('setpriv');
  const owner = isRoot() ? ['--reuid=postgres', '--regid=postgres', '--init-groups'] : [];
  if (!setpriv) {
    if (isRoot())
      throw new Error('running PostgreSQL as root needs setpriv (util-linux) to switch to the postgres user');
    return [file, args];
  }
  return [setpriv, [...owner, '--pdeathsig', 'KILL', '--', file, ...args]];
}

/** Every ancestor of `dir` must be searchable by the postgres user when we are root. */
function assertReachable(dir: string): void {
  if (!isRoot()) return;
  for (let d = dirname(dir); d !== dirname(d); d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0)
      throw new Error(
        `the postgres user cannot reach ${dir}: ${d} is not searchable by others (chmod o+x ${d}, or choose a state directory under /tmp)`,
      );
  }
}

export async function startPostgres(o: PostgresOptions): Promise<Postgres> {
  const pg = resolvePostgres();
  if (!pg.available) throw new Error(pg.reason);
  assertReachable(o.dataDir);
  const bin = (name: string) => join(pg.binDir, name);
  const pgUser = isRoot() ? (await run('id', ['-u', 'postgres'])).stdout.trim() : undefined;
  const pgGroup = isRoot() ? (await run('id', ['-g', 'postgres'])).stdout.trim() : undefined;
  const own = (p: string) => {
    if (pgUser && pgGroup) chownSync(p, Number(pgUser), Number(pgGroup));
  };
  if (!existsSync(join(o.dataDir, 'PG_VERSION'))) {
    o.onProgress?.(`Initialising a PostgreSQL cluster in ${o.dataDir}…`);
    mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
    own(o.dataDir);
    const pwfile = join(o.dataDir, '..', `.pwfile-${process.pid}`);
    writeFileSync(pwfile, `${o.password}\n`, { mode: 0o600 });
    own(pwfile);
    try {
      const [file, args] = asOwner(bin('initdb'), [
        '-D',
        o.dataDir,
        '-U',
        o.user,
        `--pwfile=${pwfile}`,
        '--auth-host=scram-sha-256',
        '--auth-local=peer',
        '--encoding=UTF8',
        '--locale=C',
      ]);
      await run(file, args, { maxBuffer: 16 * 1024 * 1024 });
    } finally {
      await run('rm', ['-f', pwfile]);
    }
  }
  const log = openSync(o.logFile, 'a');
  const [file, args] = asOwner(bin('postgres'), [
    '-D',
    o.dataDir,
    '-p',
    String(o.port),
    '-k',
    o.dataDir,
    '-c',
    'listen_addresses=127.0.0.1',
    // Each Temporal service keeps its own pools (default store 20, visibility 10): four services in one process
    // can hold 120 connections, past PostgreSQL's default of 100.
    '-c',
    'max_connections=300',
  ]);
  const proc = spawn(file, args, { stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  const pid = await new Promise<number>((ok, fail) => {
    proc.once('spawn', () => ok(proc.pid!));
    proc.once('error', fail);
  });
  const exited = new Promise<void>((done) => proc.once('exit', () => done()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`PostgreSQL exited while starting (${proc.exitCode ?? proc.signalCode}); see ${o.logFile}`);
    const ready = await run(bin('pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(o.port)]).then(
      () => true,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`PostgreSQL did not accept connections on 127.0.0.1:${o.port} within 60 s; see ${o.logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    host: '127.0.0.1',
    port: o.port,
    pid,
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGINT');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
