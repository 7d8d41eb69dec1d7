/** What the figures were measured on: the machine, the versions, and the code (commit and uncommitted changes). */
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { ResolvedCli } from '../provisioning/temporal-cli';
import { exec } from './git';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  platform: string;
  loadAverageAtStart: number[];
  node: string;
  temporalSdk: string;
  temporalCli: string;
  git: string;
  code: { commit: string; uncommittedFiles: number };
  /** `gt --version`, median of 3, in reports from before the CLI start-up section (bench/cli-startup.ts). */
  gtCommandStartMs?: number;
}

const firstLine = (s: string) => s.trim().split('\n')[0] ?? '';
const tryExec = (cmd: string, args: string[], cwd?: string) =>
  exec(cmd, args, { cwd }).then(firstLine, () => 'unknown');

/** `cli`: the Temporal CLI in use (none when only the CLI start-up is measured). */
export async function machineInfo(cli?: ResolvedCli): Promise<MachineInfo> {
  const sdk = JSON.parse(
    readFileSync(new URL('../node_modules/@temporalio/worker/package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  // Reports themselves are not code.
  const status = await exec('git', ['status', '--porcelain', '--', '.', ':!bench/reports'], { cwd: repoRoot }).catch(
    () => '',
  );
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform} ${release()} ${process.arch}`,
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    temporalSdk: sdk.version,
    temporalCli: !cli
      ? 'no Temporal server'
      : cli.path
        ? `${await tryExec(cli.path, ['--version'])} (${cli.source})`
        : cli.source,
    git: await tryExec('git', ['--version']),
    code: {
      commit: await tryExec('git', ['rev-parse', '--short', 'HEAD'], repoRoot),
      uncommittedFiles: status.split('\n').filter(Boolean).length,
    },
  };
}
