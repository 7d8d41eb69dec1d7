import type { Command } from 'commander';
import { forgeApiUrlProblem, forgeTokenOrigins, forgeTokenRefusal, githubRepository } from '../../domain/forge';
import type { RigConfig, RigConfigInput } from '../../domain/rig';
import { formatMs } from '../../domain/durations';
import { endProgress, printJson, progress, table } from '../output';
import { UserError } from '../errors';
import { parseEnvFlags, registerRigDispatchCommands } from './dispatch';
import { collect, intArg, varFlags, withTown } from './with-town';

/** The settings `rig add` and `rig update` share; for `update` every one is optional (only what is given changes). */
interface RigSettingOptions {
  merge?: string;
  strategy?: string;
  gate?: string[];
  agent?: string;
  reviewer?: string;
  runtime?: string;
  maxPolecats?: number;
  stallTimeout?: string;
  maxAttempts?: number;
  maxHandoffs?: number;
  maxRounds?: number;
  retryBackoff?: string;
  heartbeatTimeout?: string;
  startTimeout?: string;
  env: string[];
  network?: boolean;
  image?: string;
  pidsLimit?: number;
  memoryLimit?: number;
  cpus?: number;
  gitName?: string;
  gitEmail?: string;
  breakerThreshold?: number;
  breakerProbeInterval?: string;
  batchSize?: number;
  speculation?: number;
  githubRepo?: string;
  githubApiUrl?: string;
  prPoll?: string;
  autoMerge?: boolean;
  autoMergeDelay?: string;
  formula?: string;
  formulaVar?: string[];
  json?: boolean;
}

interface RigAddOptions extends RigSettingOptions {
  repo: string;
  branch: string;
}

const given = <T extends object>(o: T): Partial<T> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;

/** GitHub settings of a `--merge pr` rig (on top of `current`); the token never goes here (the worker reads GITHUB_TOKEN). */
function forgeOptions(
  o: RigSettingOptions,
  repo: string,
  merge: string,
  current?: RigConfigInput['forge'],
): RigConfigInput['forge'] {
  const forge = {
    ...current,
    ...given({
      repository: o.githubRepo,
      apiUrl: o.githubApiUrl,
      pollInterval: o.prPoll,
      autoMerge: o.autoMerge,
      autoMergeDelay: o.autoMergeDelay,
    }),
  };
  if (merge === 'pr' && !githubRepository(repo, forge)) {
    throw new UserError(
      '--merge pr needs the GitHub repository: add --github-repo owner/name (or use a github.com --repo URL)',
    );
  }
  if (o.githubApiUrl !== undefined) checkApiUrl(o.githubApiUrl);
  return Object.keys(forge).length ? forge : undefined;
}

/** The resource limits given on the command line (on top of `current`). */
const limitOptions = (
  o: RigSettingOptions,
  current?: RigConfigInput['limits'],
): RigConfigInput['limits'] | undefined => {
  const limits = given({ pids: o.pidsLimit, memoryMb: o.memoryLimit, cpus: o.cpus });
  return Object.keys(limits).length ? { ...current, ...limits } : undefined;
};

/**
 * `--github-api-url` is where the worker would send its GITHUB_TOKEN: never anything but https (or a loopback test
 * server). Whether the worker allows the origin is the worker's setting (its GITHUB_API_URL), which this process can
 * only guess from its own environment: a likely mismatch is a warning, the worker refuses it for certain.
 */
function checkApiUrl(apiUrl: string): void {
  const problem = forgeApiUrlProblem(apiUrl);
  if (problem) throw new UserError(`--github-api-url: ${problem}`);
  const allowed = forgeTokenOrigins(process.env.GITHUB_API_URL);
  const refusal = 'error' in allowed ? allowed.error : forgeTokenRefusal(apiUrl, allowed.origins);
  if (refusal) console.error(`gt: warning: --github-api-url ${apiUrl}: ${refusal}`);
}

/** The run policy fields given on the command line. */
const policyOptions = (o: RigSettingOptions) =>
  given({
    stallTimeout: o.stallTimeout,
    maxAttempts: o.maxAttempts,
    maxHandoffs: o.maxHandoffs,
    maxRounds: o.maxRounds,
    retryBackoff: o.retryBackoff,
    heartbeatTimeout: o.heartbeatTimeout,
    startTimeout: o.startTimeout,
    breakerThreshold: o.breakerThreshold,
    breakerProbeInterval: o.breakerProbeInterval,
  });

/** Declares the setting options; `add` gives them their defaults, `update` none (an option not given changes nothing). */
function settingOptions(cmd: Command, defaults: boolean): Command {
  const d = <T>(v: T): T | undefined => (defaults ? v : undefined);
  return cmd
    .option('--merge <mode>', 'direct | pr', d('direct'))
    .option('--strategy <how>', 'merge | squash | rebase', d('merge'))
    .option(
      '--gate <cmd>',
      `gate command run on every merge candidate (repeatable${defaults ? '' : '; replaces the current gates'})`,
      collect,
      d([]),
    )
    .option(
      '--agent <cmd>',
      `polecat command, run in the worktree with GT_* set${defaults ? ' (default: gt-example-agent, the bundled scripted agent)' : ''}`,
    )
    .option('--reviewer <cmd>', 'reviewer agent command (enables review)')
    .option(
      '--runtime <kind>',
      'where agents and gates run: process (on the host, no containment: trusted agents only) | sandbox (bubblewrap) | docker (a container); see docs/security.md',
      d('process'),
    )
    .option('--max-polecats <n>', 'concurrent polecats on this rig', intArg('--max-polecats'), d(4))
    .option('--stall-timeout <duration>', 'stop a run that reports no progress for this long (e.g. 30m)')
    .option('--max-attempts <n>', 'attempts per round', intArg('--max-attempts'))
    .option(
      '--max-handoffs <n>',
      'hand-offs per bead (`gt handoff`: a run ends on purpose, the next starts at once from its checkpoint)',
      intArg('--max-handoffs'),
    )
    .option('--max-rounds <n>', 'rework rounds before a bead fails', intArg('--max-rounds'))
    .option('--retry-backoff <duration>', 'first backoff between attempts (doubles)')
    .option(
      '--heartbeat-timeout <duration>',
      'how long a run may go without a supervision heartbeat before it is re-attached elsewhere',
    )
    .option('--start-timeout <duration>', 'how long a run may wait for a host to pick it up')
    .option(
      '--env <KEY=VALUE>',
      `environment variable for its agents (repeatable${defaults ? '' : '; added to the current ones'}; no secrets: see \`gt credential\`)`,
      collect,
      d([]),
    )
    .option('--network', 'let sandboxed/containerized agents use the network (off by default)')
    .option(
      '--image <image>',
      `container image of the docker runtime${defaults ? ' (default: gastown/agent:bookworm, made by `gt image build`)' : ''}`,
    )
    .option(
      '--pids-limit <n>',
      'most processes one agent or gate run may have (sandbox, docker; default 1024)',
      intArg('--pids-limit'),
    )
    .option(
      '--memory-limit <MiB>',
      'memory cap of one agent or gate run in MiB (sandbox, docker; default 4096)',
      intArg('--memory-limit'),
    )
    .option('--cpus <n>', 'CPUs one agent or gate run may use (docker; default 2)', parseFloat)
    .option('--git-name <name>', "author/committer name of the agents' commits")
    .option('--git-email <email>', "author/committer email of the agents' commits")
    .option(
      '--breaker-threshold <n>',
      'consecutive agent start failures that pause dispatch on the rig',
      intArg('--breaker-threshold'),
    )
    .option(
      '--breaker-probe-interval <duration>',
      'while the breaker is open, let one run through as a probe this often',
    )
    .option(
      '--batch-size <n>',
      'merge up to n waiting MRs as one gated candidate, bisecting to the culprits when it fails; fewer after a failed batch (default 8, or 1 with --speculation; 1: one at a time)',
      intArg('--batch-size'),
    )
    .option(
      '--speculation <n>',
      'gate up to n queued MRs at once, each on the target plus the MRs ahead of it; a failure evicts its MR and re-gates the ones behind (default 1: off; turns batches off unless --batch-size is given)',
      intArg('--speculation'),
    )
    .option(
      '--github-repo <owner/name>',
      "GitHub repository for --merge pr (default: from a github.com --repo URL); the token is the worker's GITHUB_TOKEN",
    )
    .option(
      '--github-api-url <url>',
      "GitHub API base URL (GitHub Enterprise: https://host/api/v3); https only, and one of the worker's GITHUB_API_URL (default https://api.github.com), the only places the worker sends its token",
    )
    .option('--pr-poll <duration>', 'how often a merge request looks at its pull request (default 60s)')
    .option('--auto-merge', 'merge pull requests through the GitHub API once green and approved')
    .option(
      '--auto-merge-delay <duration>',
      'how long a pull request must stay green and approved before auto-merge (default 5m)',
    )
    .option(
      '--formula <name>',
      `the formula beads slung to this rig run unless they name one${defaults ? ' (default: work, one agent run)' : ''}; see \`gt formula list\``,
    )
    .option(
      '--formula-var <name=value>',
      `a variable of the rig's formula (repeatable${defaults ? '' : '; added to the current ones'})`,
      collect,
    )
    .option('--json', 'print the rig as JSON');
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
  const add = rig
    .command('add')
    .description('add a rig: a repository, its target branch, gates and agent command')
    .argument('<name>', 'rig name (a-z, 0-9, -, _)')
    .requiredOption(
      '--repo <path|url>',
      'the repository (local path or URL); the refinery pushes its target branch there',
    )
    .option('--branch <name>', 'target branch', 'main');
  settingOptions(add, true)
    .addHelpText(
      'after',
      '\nExample:\n  gt rig add webapp --repo ~/src/webapp --gate "npm test" --agent "claude -p \\"$(cat $GT_PROMPT_FILE)\\""',
    )
    .action(async (name: string, o: RigAddOptions) => {
      const policy = policyOptions(o);
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
          env: parseEnvFlags(o.env ?? []),
          network: o.network ?? false,
          image: o.image,
          limits: limitOptions(o),
          gitIdentity: o.gitName || o.gitEmail ? { name: o.gitName ?? '', email: o.gitEmail ?? '' } : undefined,
          batchSize: o.batchSize,
          speculation: o.speculation,
          forge: forgeOptions(o, o.repo, o.merge ?? 'direct'),
          formula: o.formula,
          formulaVars: o.formulaVar ? varFlags(o.formulaVar, '--formula-var') : undefined,
        }),
      );
      if (o.json) printJson(added);
      else console.log(`rig ${added.name} added: ${added.repo} → ${added.branch} (merge queue refinery:${added.name})`);
    });
  const update = rig
    .command('update')
    .description(
      "change a rig's settings: only the options given change; beads slung from now on and every later merge use them, and work already slung follows capacity, breaker, reviewer and pull-request settings (docs/operations.md)",
    )
    .argument('<name>');
  settingOptions(update, false)
    .addHelpText('after', '\nExample:\n  gt rig update webapp --gate "npm test" --gate "npm run lint" --max-polecats 8')
    .action(async (name: string, o: RigSettingOptions) => {
      const updated = await withTown(async (town) => {
        const current = await town.getRig(name);
        const policy = policyOptions(o);
        const forgeGiven = [o.githubRepo, o.githubApiUrl, o.prPoll, o.autoMerge, o.autoMergeDelay, o.merge].some(
          (v) => v !== undefined,
        );
        const patch: Partial<RigConfigInput> = given({
          merge: o.merge as RigConfig['merge'] | undefined,
          mergeStrategy: o.strategy as RigConfig['mergeStrategy'] | undefined,
          gates: o.gate,
          agent: o.agent,
          reviewer: o.reviewer,
          runtime: o.runtime as RigConfig['runtime'] | undefined,
          maxPolecats: o.maxPolecats,
          policy: Object.keys(policy).length ? { ...current.policy, ...policy } : undefined,
          env: o.env ? { ...current.env, ...parseEnvFlags(o.env) } : undefined,
          network: o.network,
          image: o.image,
          limits: limitOptions(o, current.limits),
          gitIdentity:
            o.gitName || o.gitEmail
              ? {
                  name: o.gitName ?? current.gitIdentity?.name ?? '',
                  email: o.gitEmail ?? current.gitIdentity?.email ?? '',
                }
              : undefined,
          // Speculation turned on turns batches off (a rig does one or the other) unless the operator said both.
          batchSize:
            o.batchSize ?? (o.speculation !== undefined && o.speculation > 1 && current.batchSize > 1 ? 1 : undefined),
          speculation: o.speculation,
          forge: forgeGiven ? forgeOptions(o, current.repo, o.merge ?? current.merge, current.forge) : undefined,
          formula: o.formula,
          formulaVars: o.formulaVar
            ? {
                ...(o.formula === undefined || o.formula === current.formula ? current.formulaVars : {}),
                ...varFlags(o.formulaVar, '--formula-var'),
              }
            : undefined,
        });
        if (Object.keys(patch).length === 0)
          throw new UserError(
            `nothing to change for rig ${name}: give at least one setting (see \`gt rig update --help\`)`,
          );
        return { rig: await town.updateRig(name, patch), changed: Object.keys(patch) };
      });
      if (o.json) printJson(updated.rig);
      else
        console.log(
          `rig ${name} updated: ${updated.changed.join(', ')} (beads slung from now on and later merges use it; running beads take its capacity, breaker, reviewer and pull-request settings)`,
        );
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
      else
        console.log(
          Object.entries(r)
            .map(([k, v]) => `${k.padEnd(14)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
            .join('\n'),
        );
    });
  rig
    .command('remove')
    .description(
      'remove a rig: refused while it has open work (beads in flight, merge requests, convoys); --drain pauses dispatch and waits for that work to finish first',
    )
    .argument('<name>', 'rig name')
    .option('--drain', 'pause dispatch and wait (printing progress) until the open work is done, then remove')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Examples:
  gt rig remove webapp            # only when nothing is open
  gt rig remove webapp --drain    # running agents and queued merges finish, nothing new starts
Its name can be used again with \`gt rig add\`. The repository is not touched.`,
    )
    .action(async (name: string, o: { drain?: boolean; json?: boolean }) => {
      // Imported here, not by the group: they reach the Temporal client (client/cli.ts).
      const [{ removeRig }, { describeOpenWork }] = await Promise.all([
        import('../rig-removal'),
        import('../town-status'),
      ]);
      let shown = '';
      const r = await withTown((town) =>
        removeRig(town, name, {
          drain: o.drain,
          onProgress: (w, ms) => {
            // A terminal line is redrawn every poll (the clock moves); piped, only a change of the open work is a new line.
            const open = describeOpenWork(w);
            if (o.json || (open === shown && !process.stderr.isTTY)) return;
            shown = open;
            progress(`[${formatMs(Math.floor(ms / 1000) * 1000)}] draining rig ${name}: ${open}`);
          },
        }),
      );
      if (!o.json) endProgress();
      if (o.json) printJson(r);
      else
        console.log(
          `rig ${r.rig} removed${r.drained ? ` after draining for ${formatMs(Math.floor(r.waitedMs / 1000) * 1000)}` : ''}`,
        );
    });
  registerRigDispatchCommands(rig);
}
