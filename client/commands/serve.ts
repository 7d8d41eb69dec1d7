/**
 * `gt up` (embedded stack in the foreground) and `gt worker` (worker + gateway against any cluster).
 *
 * `gt up` owns one dev server per GT_HOME (provisioning/dev-server.ts): it stops a leftover of an earlier `gt up`
 * before starting, says "up" only once its own server answers, takes its server down with it even on kill -9, and
 * exits non-zero with the reason if the server dies under it — the next `gt up` resumes the work from the same file.
 */
import type { Command } from 'commander';
import type { UpOptions } from '../serve';
import { intArg } from './with-town';

export function registerServeCommands(program: Command): void {
  program
    .command('up')
    .description(
      'run the embedded stack in the foreground: Temporal dev server (SQLite in GT_HOME, Web UI), worker, agent gateway.\nCtrl-C stops it; the next `gt up` resumes all work from the same file.',
    )
    .option(
      '--bind <ip>',
      'address the Temporal frontend and Web UI listen on; the dev server has no authentication, so 0.0.0.0 opens the town to the network',
      '127.0.0.1',
    )
    .option('--port <n>', 'Temporal gRPC port', intArg('--port'), 7233)
    .option('--ui-port <n>', 'Temporal Web UI port', intArg('--ui-port'), 8233)
    .option('--no-ui', 'run without the Web UI')
    .option('--gateway-port <n>', 'agent gateway port', intArg('--gateway-port'), 7380)
    .option('--namespace <ns>', 'Temporal namespace', process.env.TEMPORAL_NAMESPACE ?? 'default')
    .action(async (o: UpOptions) => (await import('../serve')).runUp(o));

  program
    .command('worker')
    .description(
      'run a worker and agent gateway against an existing Temporal (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, profiles)',
    )
    .option('--gateway-port <n>', 'agent gateway port (0 = any free port)', intArg('--gateway-port'), 7380)
    .option('--gateway-host <ip>', 'address the gateway binds to', '127.0.0.1')
    .action(async (o: { gatewayPort: number; gatewayHost: string }) => (await import('../serve')).runWorker(o));
}
