/**
 * `gt` starts from a plain-JS bundle (dist/gt-cli/, provisioning/cli-bundles.ts) that loads only the invoked command's
 * group, and a group loads what its commands run only when one runs. Checked with real processes: the bundle answers
 * exactly as the sources do (help, version, errors, a read against a real town); every top-level command is found by
 * the group that registers it; a group's registration loads no package but zod; the bundle holds no source
 * outside the directories bin/gt watches; and bin/gt runs it only while it is fresh, rebuilds it when stale (also
 * with two invocations racing), and runs the sources when the rebuild fails; and an old build stays until long after
 * it was replaced.
 */
import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_SOURCE_DIRS, removeRetiredBuilds, RETIRED_BUILD_MS } from '../provisioning/cli-bundles';
import { importGraph } from './helpers/import-graph';
import { createRepo } from './helpers/repo';
import { startTestTown, type TestTown } from './helpers/town';

const root = fileURLToPath(new URL('..', import.meta.url));
type Result = { code: number; stdout: string; stderr: string };

function run(file: string, args: string[], env: NodeJS.ProcessEnv = { PATH: process.env.PATH }): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}
const bundled = (args: string[], env?: NodeJS.ProcessEnv) =>
  run('node', [join(root, 'dist/gt-cli/cli.mjs'), ...args], env);
const sources = (args: string[], env?: NodeJS.ProcessEnv) =>
  run('node', ['--import', join(root, 'node_modules/tsx/dist/loader.mjs'), join(root, 'client/cli.ts'), ...args], env);

describe('the gt bundle', () => {
  let t: TestTown;
  beforeAll(async () => {
    t = await startTestTown();
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('answers as the sources do: version, help, errors, and rig list --json against a real town', async () => {
    const env = t.cliEnv();
    const repo = await createRepo();
    expect((await sources(['rig', 'add', 'bundled', '--repo', repo.origin, '--agent', 'true'], env)).code).toBe(0);
    for (const args of [
      ['--version'],
      ['--help'],
      ['rig', 'list', '--help'],
      ['rig', 'list', '--json'],
      ['rig', 'show', 'nope'],
      ['rig', 'add'],
      ['no-such-command'],
    ]) {
      const [b, s] = await Promise.all([bundled(args, env), sources(args, env)]);
      expect(b, args.join(' ')).toEqual(s);
    }
    expect(JSON.parse((await bundled(['rig', 'list', '--json'], env)).stdout)).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'bundled' })]),
    );
  });

  it('finds every top-level command in the group that registers it', async () => {
    const help = (await bundled(['--help'])).stdout;
    const commands = [...help.split('Commands:\n')[1]!.matchAll(/^ {2}([\w-]+)/gm)]
      .map((m) => m[1]!)
      .filter((c) => c !== 'help');
    expect(commands.length).toBeGreaterThan(20);
    const results = await Promise.all(commands.map((c) => bundled([c, '--help'])));
    results.forEach((r, i) =>
      expect(r.stdout, `gt ${commands[i]} --help`).toMatch(new RegExp(`^Usage: gt ${commands[i]}\\b`)),
    );
  });

  it('holds one copy of the Temporal packages: none is imported from node_modules but by gt up and gt worker', () => {
    // A bundled package meeting its node_modules copy would make two of every class (a failure thrown by one is no
    // instance of the other's); up and worker, which import the worker's packages, run from the sources (bin/gt).
    const dir = join(root, 'dist/gt-cli');
    const files = ['cli.mjs', ...readdirSync(join(dir, 'chunks')).map((f) => `chunks/${f}`)];
    const importers = files.filter((f) =>
      /(?:^import\b[^;]*?from\s*|\bimport\()["']@temporalio\//m.test(readFileSync(join(dir, f), 'utf8')),
    );
    expect(importers.map((f) => f.replace(/-[A-Z0-9]+\.mjs$/, ''))).toEqual(['chunks/serve']);
  });

  it('contains no source outside the directories bin/gt watches', async () => {
    const watched = /^sources="([^"]+)"$/m.exec(readFileSync(join(root, 'bin/gt'), 'utf8'))?.[1]?.split(' ');
    expect(watched).toEqual(BUNDLED_SOURCE_DIRS);
    for (const entry of ['client/cli.ts', 'client/agent-cli.ts']) {
      const metafile = await importGraph(entry);
      const ours = Object.keys(metafile.inputs).filter((p) => !p.includes('node_modules/'));
      for (const input of ours) expect(BUNDLED_SOURCE_DIRS, input).toContain(input.split('/')[0]);
    }
  });
});

/** The packages a module loads before any of its code runs: its static imports, followed through our own modules. */
async function packagesLoadedBy(entry: string): Promise<Map<string, string>> {
  const metafile = await importGraph(entry);
  const loaded = new Map<string, string>();
  const seen = new Set<string>();
  const walk = (input: string) => {
    if (seen.has(input)) return;
    seen.add(input);
    for (const i of metafile.inputs[input]?.imports ?? []) {
      if (i.kind !== 'import-statement') continue;
      if (!i.external) walk(i.path);
      else if (!i.path.startsWith('node:')) {
        const name = i.path
          .split('/')
          .slice(0, i.path.startsWith('@') ? 2 : 1)
          .join('/');
        if (!loaded.has(name)) loaded.set(name, input);
      }
    }
  };
  walk(entry);
  return loaded;
}

describe('a command group', () => {
  it('registers its commands loading no package but zod: help and argument errors start at once', async () => {
    // What a command runs (the Temporal client, Docker's, the MCP SDK, the codec server…) is imported by its action.
    const groups = readdirSync(join(root, 'client/commands'));
    expect(groups.length).toBeGreaterThan(10);
    const found: Record<string, string[]> = {};
    for (const group of groups) {
      found[group] = [...(await packagesLoadedBy(`client/commands/${group}`))]
        .filter(([name]) => name !== 'zod')
        .map(([name, by]) => `${name} (imported by ${by})`);
    }
    expect(found).toEqual(Object.fromEntries(groups.map((g) => [g, []])));
  });
});

describe('bin/gt and the bundle', () => {
  it('runs it while fresh, rebuilds it when stale (two at once too), and runs the sources when that fails', async () => {
    // A copy of the sources as bin/gt finds them, without any bundle.
    const copy = mkdtempSync(join(tmpdir(), 'gt-cli-bundle-'));
    const skip = new Set(['node_modules', 'dist', 'test', 'bench', 'docs']);
    for (const e of readdirSync(root, { withFileTypes: true })) {
      if (e.isDirectory() && !e.name.startsWith('.') && !skip.has(e.name))
        cpSync(join(root, e.name), join(copy, e.name), { recursive: true });
    }
    cpSync(join(root, 'package.json'), join(copy, 'package.json'));
    // The packages, each linked, and a record of the last install of its own (an install makes the bundle stale).
    mkdirSync(join(copy, 'node_modules'));
    for (const e of readdirSync(join(root, 'node_modules')))
      if (e !== '.package-lock.json') symlinkSync(join(root, 'node_modules', e), join(copy, 'node_modules', e));
    const installed = join(copy, 'node_modules/.package-lock.json');
    writeFileSync(installed, '{}\n');
    utimesSync(installed, new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));
    const gt = join(copy, 'bin/gt');
    const entry = join(copy, 'dist/gt-cli/cli.mjs');
    const help = await sources(['rig', 'list', '--help']);
    const past = new Date(Date.now() - 60_000);
    const standIn = (mtime: Date) => {
      writeFileSync(entry, "console.log('from the bundle');\n");
      utimesSync(entry, mtime, mtime);
    };

    // No bundle: built, then run.
    expect(await run(gt, ['--version'])).toMatchObject({ code: 0, stdout: '0.1.0\n' });
    expect(lstatSync(join(copy, 'dist/gt-cli')).isSymbolicLink()).toBe(true);
    const first = readlinkSync(join(copy, 'dist/gt-cli'));

    // Fresh: run as it is.
    standIn(new Date());
    expect((await run(gt, ['rig', 'list', '--help'])).stdout).toBe('from the bundle\n');
    // Reached through a link to it, by a path relative to the working directory, and on the PATH through a linked
    // directory: the same installation each time, fresh and stale (a check that looked elsewhere would run the stale one).
    const links = mkdtempSync(join(tmpdir(), 'gt-links-'));
    symlinkSync(gt, join(links, 'gt'));
    symlinkSync(join(copy, 'bin'), join(links, 'bin'));
    const ways: [string, string[], NodeJS.ProcessEnv?][] = [
      [join(links, 'gt'), []],
      ['sh', ['-c', 'cd "$0" && bin/gt "$@"', copy]],
      ['sh', ['-c', 'gt "$@"', 'gt'], { PATH: `${join(links, 'bin')}:${process.env.PATH}` }],
    ];
    for (const [file, args, env] of ways) {
      standIn(new Date());
      expect((await run(file, [...args, 'rig', 'list', '--help'], env)).stdout).toBe('from the bundle\n');
      standIn(past);
      expect(await run(file, [...args, 'rig', 'list', '--help'], env)).toEqual(help);
    }
    rmSync(links, { recursive: true, force: true });

    // Stale, two invocations at once: each answers from a complete bundle, and a new build is published.
    standIn(past);
    const racing = await Promise.all([run(gt, ['rig', 'list', '--help']), run(gt, ['rig', 'list', '--help'])]);
    for (const r of racing) expect(r).toEqual(help);
    expect(readlinkSync(join(copy, 'dist/gt-cli'))).not.toBe(first);
    expect(readFileSync(entry, 'utf8')).not.toContain('from the bundle');
    expect(readdirSync(join(copy, 'dist')).filter((e) => e.startsWith('.'))).toEqual([]);

    // Newer than every source, but packages were installed after it (the install's record is dated ahead, so the
    // bundle stays older than it even once rebuilt): rebuilt, as the bundle holds packages.
    standIn(new Date());
    utimesSync(installed, new Date(Date.now() + 60_000), new Date(Date.now() + 60_000));
    expect(await run(gt, ['rig', 'list', '--help'])).toEqual(help);
    expect(readFileSync(entry, 'utf8')).not.toContain('from the bundle');
    utimesSync(installed, new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));

    // Stale and the rebuild cannot be published (dist/gt-cli is a directory, not the symlink): the sources answer.
    rmSync(join(copy, 'dist/gt-cli'));
    mkdirSync(join(copy, 'dist/gt-cli'));
    standIn(past);
    expect(await run(gt, ['rig', 'list', '--help'])).toEqual(help);

    rmSync(copy, { recursive: true, force: true });
  }, 120_000);
});

describe('old builds', () => {
  it('are removed only long after they stopped being the published one, however old they are', () => {
    // The published build (dist/gt-cli → b), the one a build just published (c; a concurrent build published b after
    // it), and one from long ago (a): all built an hour ago.
    const dist = mkdtempSync(join(tmpdir(), 'gt-cli-builds-'));
    const hourAgo = new Date(Date.now() - 3_600_000);
    for (const b of ['a', 'b', 'c']) {
      mkdirSync(join(dist, `gt-cli-${b}/chunks`), { recursive: true });
      utimesSync(join(dist, `gt-cli-${b}`), hourAgo, hourAgo);
    }
    symlinkSync('gt-cli-b', join(dist, 'gt-cli'));
    const left = () => readdirSync(dist).filter((e) => e.startsWith('gt-cli-'));

    // Just replaced: a process that resolved the link a moment ago may still import a's chunks.
    removeRetiredBuilds(dist, 'gt-cli-c');
    expect(left()).toEqual(['gt-cli-a', 'gt-cli-b', 'gt-cli-c']);
    removeRetiredBuilds(dist, 'gt-cli-c', Date.now() + RETIRED_BUILD_MS / 2);
    expect(left()).toEqual(['gt-cli-a', 'gt-cli-b', 'gt-cli-c']);
    // Long after: gone; the published build and the one just built stay, and were never marked.
    removeRetiredBuilds(dist, 'gt-cli-c', Date.now() + RETIRED_BUILD_MS + 1_000);
    expect(left()).toEqual(['gt-cli-b', 'gt-cli-c']);
    expect(existsSync(join(dist, 'gt-cli-b/.retired')) || existsSync(join(dist, 'gt-cli-c/.retired'))).toBe(false);
    rmSync(dist, { recursive: true, force: true });
  });
});
