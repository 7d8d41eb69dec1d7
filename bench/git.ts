/** Plain git for the bench: a scratch origin per scenario, and a promise-returning exec that fails loudly. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Spawner } from '../host/spawner';

export const GIT_IDENTITY = {
  GIT_AUTHOR_NAME: 'Bench',
  GIT_AUTHOR_EMAIL: 'bench@gastown.local',
  GIT_COMMITTER_NAME: 'Bench',
  GIT_COMMITTER_EMAIL: 'bench@gastown.local',
};

/**
 * The floor's processes start from a small helper process, as a plain script's would: started from the bench's own
 * process (which holds the town's worker), each fork would pay for that process's size (host/spawner.ts).
 */
const plain = new Spawner();

/** Runs a command; a non-zero exit rejects with its stderr (git's exit status is the answer, so it is never ignored). */
export async function exec(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const r = await plain.run({ file: cmd, args, cwd: options.cwd ?? process.cwd(), env: options.env ?? process.env });
  if (!r.ok)
    throw new Error(`${cmd} ${args.join(' ')} failed in ${options.cwd ?? '.'}: ${r.stderr.trim() || 'no output'}`);
  return r.stdout;
}

export const git = (cwd: string, ...args: string[]) =>
  exec('git', args, { cwd, env: { ...process.env, ...GIT_IDENTITY } });

/** A bare repository with one commit on `main`: what a rig (or the floor script) points at. */
export async function createOrigin(root: string): Promise<string> {
  const origin = join(root, 'origin.git');
  const seed = join(root, 'seed');
  mkdirSync(seed, { recursive: true });
  await git(root, 'init', '-q', '--bare', '-b', 'main', origin);
  await git(seed, 'init', '-q', '-b', 'main');
  writeFileSync(join(seed, 'README.md'), '# bench repository\n');
  await git(seed, 'add', 'README.md');
  await git(seed, 'commit', '-q', '-m', 'initial commit');
  await git(seed, 'push', '-q', origin, 'main');
  return origin;
}

/** How many beads' files `main` of a repository holds: both the floor and the town must end with all of them. */
export async function mergedWorkFiles(origin: string): Promise<number> {
  const out = await git(origin, 'ls-tree', '--name-only', 'main', 'work/');
  return out.split('\n').filter((l) => l.endsWith('.txt')).length;
}
