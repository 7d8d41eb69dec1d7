import type { Command } from 'commander';
import { githubRepository } from '../../domain/forge';
import type { RigConfig, RigConfigInput } from '../../domain/rig';
import { printJson, table } from '../output';
import { UserError } from '../town';
import { parseEnvFlags, registerRigDispatchCommands } from './dispatch';
import { collect, intArg, withTown } from './with-town';

interface RigAddOptions {
  repo: string;
  branch: string;
  merge: string;
  strategy: string;
  gate: string[];
  agent?: string;
  reviewer?: string;
  runtime: string;
  maxPolecats: number;
  stallTimeout?: string;
  maxAttempts?: number;
  maxRounds?: number;
  retryBackoff?: string;
  heartbeatTimeout?: string;
  startTimeout?: string;
  env: string[];
  network?: boolean;
  image?: string;
  gitName?: string;
  gitEmail?: string;
  breakerThreshold?: number;
  breakerProbeInterval?: string;
  batchSize?: number;
  githubRepo?: string;
  githubApiUrl?: string;
  prPoll?: string;
  autoMerge?: boolean;
  autoMergeDelay?: string;
  json?: boolean;
}

/** GitHub settings of a `--merge pr` rig; the token never goes here (the worker reads GITHUB_TOKEN). */
function forgeOptions(o: RigAddOptions): RigConfigInput['forge'] {
  const given = { repository: o.githubRepo, apiUrl: o.githubApiUrl, pollInterval: o.prPoll, autoMerge: o.autoMerge, autoMergeDelay: o.autoMergeDelay };
  const forge = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  if (o.merge === 'pr' && !githubRepository(o.repo, forge)) {
    throw new UserError('--merge pr needs the GitHub repository: add --github-repo owner/name (or use a github.com --repo URL)');
  }
  return Object.keys(forge).length ? forge : undefined;
}

const rigRow = (r: RigConfig) => ({
  name: r.name,
  repo: r.repo,
  branch: r.branch,
  merge: r.merge,
  runtime: r.runtime,
  gates: r.gates.length,
  polecats: r.maxPolecats,
});

export function registerRigCommands(program: Command): void {
  const rig = program.command('rig').description('repositories under management (each has its own merge queue)');
  rig
    .command('add')
    .description('add a rig: a repository, its target branch, gates and agent command')
    .argument('<name>', 'rig name (a-z, 0-9, -, _)')
    .requiredOption('--repo <path|url>', 'the repository (local path or URL); the refinery pushes its target branch there')
    .option('--branch <name>', 'target branch', 'main')
    .option('--merge <mode>', 'direct | pr', 'direct')
    .option('--strategy <how>', 'merge | squash | rebase', 'merge')
    .option('--gate <cmd>', 'gate command run on every merge candidate (repeatable)', collect, [])
    .option('--agent <cmd>', 'polecat command, run in the worktree with GT_* set (default: gt-example-agent, the bundled scripted agent)')
    .option('--reviewer <cmd>', 'reviewer agent command (enables review)')
    .option('--runtime <kind>', 'process | sandbox | docker', 'process')
    .option('--max-polecats <n>', 'concurrent polecats on this rig', intArg('--max-polecats'), 4)
    .option('--stall-timeout <duration>', 'stop a run that reports no progress for this long (e.g. 30m)')
    .option('--max-attempts <n>', 'attempts per round', intArg('--max-attempts'))
    .option('--max-rounds <n>', 'rework rounds before a bead fails', intArg('--max-rounds'))
    .option('--retry-backoff <duration>', 'first backoff between attempts (doubles)')
    .option('--heartbeat-timeout <duration>', 'how long a run may go without a supervision heartbeat before it is re-attached elsewhere')
    .option('--start-timeout <duration>', 'how long a run may wait for a host to pick it up')
    .option('--env <KEY=VALUE>', 'environment variable for its agents (repeatable; no secrets: see `gt credential`)', collect, [])
    .option('--network', 'let sandboxed/containerized agents use the network (off by default)')
    .option('--image <image>', 'container image of the docker runtime')
    .option('--git-name <name>', "author/committer name of the agents' commits")
    .option('--git-email <email>', "author/committer email of the agents' commits")
    .option('--breaker-threshold <n>', 'consecutive agent start failures that pause dispatch on the rig', intArg('--breaker-threshold'))
    .option('--breaker-probe-interval <duration>', 'while the breaker is open, let one run through as a probe this often')
    .option('--batch-size <n>', 'merge up to n queued MRs as one gated candidate, bisecting to the culprits when it fails (default 1: one at a time)', intArg('--batch-size'))
    .option('--github-repo <owner/name>', "GitHub repository for --merge pr (default: from a github.com --repo URL); the token is the worker's GITHUB_TOKEN")
    .option('--github-api-url <url>', 'GitHub API base URL (GitHub Enterprise: https://host/api/v3)')
    .option('--pr-poll <duration>', 'how often a merge request looks at its pull request (default 60s)')
    .option('--auto-merge', 'merge pull requests through the GitHub API once green and approved')
    .option('--auto-merge-delay <duration>', 'how long a pull request must stay green and approved before auto-merge (default 5m)')
    .option('--json', 'print the rig as JSON')
    .addHelpText('after', '\nExample:\n  gt rig add webapp --repo ~/src/webapp --gate "npm test" --agent "claude -p \\"$(cat $GT_PROMPT_FILE)\\""')
    .action(async (name: string, o: RigAddOptions) => {
      const policy = Object.fromEntries(
        Object.entries({
          stallTimeout: o.stallTimeout,
          maxAttempts: o.maxAttempts,
          maxRounds: o.maxRounds,
          retryBackoff: o.retryBackoff,
          heartbeatTimeout: o.heartbeatTimeout,
          startTimeout: o.startTimeout,
          breakerThreshold: o.breakerThreshold,
          breakerProbeInterval: o.breakerProbeInterval,
        }).filter(([, v]) => v !== undefined),
      );
      const added = await withTown((town) =>
        town.addRig({
          name,
          repo: o.repo,
          branch: o.branch,
          merge: o.merge as RigConfig['merge'],
          mergeStrategy: o.strategy as RigConfig['mergeStrategy'],
          gates: o.gate,
          agent: o.agent ?? 'gt-example-agent',
          reviewer: o.reviewer,
          runtime: o.runtime as RigConfig['runtime'],
          maxPolecats: o.maxPolecats,
          policy,
          env: parseEnvFlags(o.env),
          network: o.network ?? false,
          image: o.image,
          gitIdentity: o.gitName || o.gitEmail ? { name: o.gitName ?? '', email: o.gitEmail ?? '' } : undefined,
          batchSize: o.batchSize,
          forge: forgeOptions(o),
        }),
      );
      if (o.json) printJson(added);
      else console.log(`rig ${added.name} added: ${added.repo} → ${added.branch} (merge queue refinery:${added.name})`);
    });
  rig
    .command('list')
    .description('list rigs')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const rigs = await withTown((town) => town.listRigs());
      if (o.json) printJson(rigs);
      else console.log(table(rigs.map(rigRow)));
    });
  rig
    .command('show')
    .description("show a rig's configuration")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await withTown((town) => town.getRig(name));
      if (o.json) printJson(r);
      else console.log(Object.entries(r).map(([k, v]) => `${k.padEnd(14)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('\n'));
    });
  registerRigDispatchCommands(rig);
}
