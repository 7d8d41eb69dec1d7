/** What a module imports, as esbuild records it: our modules followed, packages left as they are named. */
import { resolve } from 'node:path';
import { build, type Metafile } from 'esbuild';
import { repoRoot } from './town';

/** `entry` is a path in the repository (or absolute); the metafile's inputs are named relative to the repository. */
export async function importGraph(entry: string): Promise<Metafile> {
  const { metafile } = await build({
    entryPoints: [resolve(repoRoot, entry)],
    absWorkingDir: repoRoot,
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  return metafile;
}
