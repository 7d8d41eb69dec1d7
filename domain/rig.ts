/** A rig: a repository under management and how work on it is dispatched, reviewed, gated and merged. */
import { z } from 'zod';
import { DurationMs } from './durations';
import { ForgeSettings } from './forge';
import { FormulaName, FormulaVarValues } from './formula-ref';
import { RigName } from './ids';

export const AgentRuntime = z.enum(['process', 'sandbox', 'docker']);
export type AgentRuntime = z.infer<typeof AgentRuntime>;

/** Timeouts and bounds of agent runs (durations in ms; inputs also accept `30s`, `10m`, …). Every retry loop in the system is bounded by one of these. */
export const RunPolicy = z.object({
  /** How long a run may take to show its first sign of life (the process started / container running). */
  startTimeout: DurationMs.default(120_000),
  /** Supervision heartbeat: if the owning worker stops heartbeating this long, the run is re-attached elsewhere. */
  heartbeatTimeout: DurationMs.default(60_000),
  /** GUPP: no progress (gt progress / gt done) for this long stops the run and redispatches. */
  stallTimeout: DurationMs.default(1_800_000),
  /** Hard cap on one run. */
  runTimeout: DurationMs.default(14_400_000),
  /** Attempts per round (a crashed, hung or silent agent uses one). */
  maxAttempts: z.number().int().min(1).max(20).default(3),
  /** First backoff between attempts; doubles each attempt, capped at 10 minutes. */
  retryBackoff: DurationMs.default(10_000),
  /**
   * Hand-offs per bead (`gt handoff`: a run ends on purpose and the next starts at once with its checkpoint, using no
   * attempt and no backoff). Bounds how many runs an agent that keeps handing off can make a bead use.
   */
  maxHandoffs: z.number().int().min(0).max(100).default(10),
  /** Rounds of rework (conflict, failed gates, requested changes) before the bead fails. */
  maxRounds: z.number().int().min(1).max(20).default(3),
  /** Rig-wide circuit breaker: this many consecutive agent start failures pause dispatch on the rig and escalate once. */
  breakerThreshold: z.number().int().min(1).max(1000).default(5),
  /** While the breaker is open, one waiting run is let through this often as a probe; its successful start closes the breaker. */
  breakerProbeInterval: DurationMs.default(300_000),
});
export type RunPolicy = z.infer<typeof RunPolicy>;

/** The image `gt image build` makes: Debian with git, node and a shell, built from Debian's packages only. */
export const DEFAULT_AGENT_IMAGE = 'gastown/agent:bookworm';

/** Limits of one agent or gate run (sandbox: pids and memory through rlimits; docker: all three). */
export const ResourceLimits = z.object({
  pids: z.number().int().min(16).max(65_536).default(1024),
  memoryMb: z.number().int().min(64).max(1_048_576).default(4096),
  cpus: z.number().min(0.1).max(256).default(2),
});
export type ResourceLimits = z.infer<typeof ResourceLimits>;

export const MergeStrategy = z.enum(['merge', 'squash', 'rebase']);

/** Text a rig's settings may hold in all: the rig is part of almost every activity input of its beads and merges. */
export const MAX_RIG_TEXT = 64_000;
const MAX_RIG_ENV = 100;
const rigText = (r: {
  repo: string;
  gates: string[];
  agent: string;
  reviewer?: string;
  env: Record<string, string>;
  image: string;
}) =>
  r.repo.length +
  r.agent.length +
  (r.reviewer?.length ?? 0) +
  r.image.length +
  r.gates.reduce((n, g) => n + g.length, 0) +
  Object.entries(r.env).reduce((n, [k, v]) => n + k.length + v.length, 0);

/**
 * A rig's batch size unless it says otherwise: with 16 agents finishing together a queue of one-at-a-time merges
 * falls behind (docs/performance.md, "Merge queue"), and a batch only forms when MRs are waiting.
 */
export const DEFAULT_BATCH_SIZE = 8;
/** A rig's target branch: the characters git's ref names and our commands take without quoting. */
export const BranchName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._/-]+$/, 'branch names may hold A-Z a-z 0-9 . _ / -');

export const RigConfig = z
  .object({
    name: RigName,
    /** Path or URL of the repository; the refinery pushes the target branch here. */
    repo: z.string().min(1).max(2048),
    branch: BranchName.default('main'),
    /** `direct`: the refinery merges into the branch; `pr`: through a GitHub pull request. */
    merge: z.enum(['direct', 'pr']).default('direct'),
    mergeStrategy: MergeStrategy.default('merge'),
    gates: z.array(z.string().min(1).max(4000)).max(20).default([]),
    gateTimeout: DurationMs.default(600_000),
    /** Shell command that runs a polecat in its worktree (GT_* variables in the environment). */
    agent: z.string().min(1).max(4000),
    /** Optional reviewer agent command; when set every MR is reviewed before the refinery's turn. */
    reviewer: z.string().min(1).max(4000).optional(),
    runtime: AgentRuntime.default('process'),
    maxPolecats: z.number().int().min(1).max(1000).default(4),
    policy: RunPolicy.default(RunPolicy.parse({})),
    /**
     * Merge up to this many queued MRs as one gated candidate, bisecting to the culprits on failure; 1 = one at a time.
     * A batch takes what is waiting, so a shallow queue merges one at a time anyway; fewer after a failed batch
     * (domain/refinery.ts nextBatchLimit). Default DEFAULT_BATCH_SIZE, or 1 on a speculative rig.
     */
    batchSize: z.number().int().min(1).max(32).optional(),
    /**
     * Gate up to this many queued MRs at once on speculative stacks (MR k on target + MR 1..k−1, Zuul-style); a failure
     * evicts its MR and rebuilds what stood behind it. 1 = no speculation (today's one section at a time).
     */
    speculation: z.number().int().min(1).max(16).default(1),
    /** GitHub settings for `merge: pr` (the token is the worker's GITHUB_TOKEN, never part of the rig). */
    forge: ForgeSettings.optional(),
    /** Extra environment for agents (never credentials: those come from the worker host). */
    env: z
      .record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/), z.string().max(4000))
      .refine(
        (env) => Object.keys(env).length <= MAX_RIG_ENV,
        `a rig passes at most ${MAX_RIG_ENV} environment variables to its agents`,
      )
      .default({}),
    /** Whether sandboxed/containerized agents may use the network (the process runtime cannot take it away). */
    network: z.boolean().default(false),
    /** Container image of the docker runtime (`gt image build` makes the default one offline). */
    image: z.string().min(1).max(500).default(DEFAULT_AGENT_IMAGE),
    /** Per-run resource limits of sandboxed/containerized agents and gates. */
    limits: ResourceLimits.default(ResourceLimits.parse({})),
    /** Author and committer of the agents' commits; defaults to `Gas Town <role>` per run. */
    /** The formula beads slung to this rig run unless they name one (default: `work`, one agent run); see docs/formulas.md. */
    formula: FormulaName.optional(),
    /** Variable values for the rig's formula (a sling's `--var` wins). */
    formulaVars: FormulaVarValues.optional(),
    gitIdentity: z
      .object({ name: z.string().trim().min(1).max(200), email: z.string().trim().min(3).max(320) })
      .optional(),
  })
  .transform((r) => ({ ...r, batchSize: r.batchSize ?? (r.speculation > 1 ? 1 : DEFAULT_BATCH_SIZE) }))
  .refine((r) => r.speculation === 1 || r.batchSize === 1, {
    message:
      'a rig merges either in batches (batchSize > 1) or speculatively (speculation > 1), not both: set the other to 1',
    path: ['speculation'],
  })
  .refine((r) => rigText(r) <= MAX_RIG_TEXT, {
    message: `a rig's settings hold at most ${MAX_RIG_TEXT} characters of text (gates, agent and reviewer commands, env): keep long scripts in the repository and call them`,
  });
export type RigConfig = z.infer<typeof RigConfig>;
export type RigConfigInput = z.input<typeof RigConfig>;
