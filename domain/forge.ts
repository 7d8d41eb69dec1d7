/**
 * The PR strategy's vocabulary: a rig's GitHub settings, what we read of a pull request, and the pure decision of
 * what a pull request's state means for its bead. The decision only counts feedback given on the MR's own head
 * commit, so review comments that an earlier round already answered never bounce a later round again.
 */
import { z } from 'zod';
import type { MergeOutcome } from './bead';
import { DurationMs } from './durations';

export const ForgeSettings = z.object({
  /** `owner/name` on GitHub; default: taken from a github.com repository URL. */
  repository: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, 'repository must look like owner/name')
    .optional(),
  /** REST API base URL (GitHub Enterprise: https://host/api/v3). The token is the worker's GITHUB_TOKEN, never config. */
  apiUrl: z.string().url('apiUrl must be a URL').default('https://api.github.com'),
  /** How often a merge request looks at its pull request (a durable timer; nothing holds the merge queue meanwhile). */
  pollInterval: DurationMs.default(60_000),
  /** Merge through the GitHub API once the PR is green and approved, `autoMergeDelay` after it first looked so. */
  autoMerge: z.boolean().default(false),
  autoMergeDelay: DurationMs.default(300_000),
  /** A GitHub answer slower than this counts as a failed call (retried with backoff). */
  requestTimeout: DurationMs.default(30_000),
});
export type ForgeSettings = z.infer<typeof ForgeSettings>;
export type ForgeSettingsInput = z.input<typeof ForgeSettings>;

/** `owner/name` of a rig: explicit, or parsed from a GitHub remote URL (https or ssh). */
export function githubRepository(repo: string, forge?: { repository?: string }): string | undefined {
  if (forge?.repository) return forge.repository;
  const m = /github\.com[/:]([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+?)(?:\.git)?\/?$/.exec(repo);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

export const PullRequestRef = z.object({
  number: z.number().int().positive(),
  url: z.string(),
  /** Whether this call opened it (false: an open pull request for the branch already existed). */
  created: z.boolean(),
});
export type PullRequestRef = z.infer<typeof PullRequestRef>;

export type CheckState = 'pending' | 'success' | 'failure';

/** What a merge request reads of its pull request on each look. Bounded text only: bodies are truncated. */
export interface PullRequestSnapshot {
  number: number;
  url: string;
  state: 'open' | 'closed';
  merged: boolean;
  mergeCommitSha?: string;
  headSha: string;
  /** null while GitHub is still computing it. */
  mergeable: boolean | null;
  reviews: { author: string; state: string; body: string; commitId?: string }[];
  threads: { resolved: boolean; outdated: boolean; comments: { author: string; body: string; path?: string; commitId?: string }[] }[];
  checks: { name: string; state: CheckState; detail: string }[];
}

export type PullRequestVerdict =
  | { kind: 'merged'; commit: string }
  | { kind: 'closed' }
  | { kind: 'rework'; outcome: Extract<MergeOutcome, { kind: 'conflict' | 'gates_failed' | 'changes_requested' }> }
  /** Green, approved, mergeable, no open threads: what auto-merge waits for. */
  | { kind: 'ready' }
  | { kind: 'waiting'; reason: string };

/** Latest review state per reviewer, ignoring plain comments (they neither approve nor block). */
function latestReviewStates(reviews: PullRequestSnapshot['reviews']): Map<string, string> {
  const latest = new Map<string, string>();
  for (const r of reviews) if (['APPROVED', 'CHANGES_REQUESTED', 'DISMISSED'].includes(r.state)) latest.set(r.author, r.state);
  return latest;
}

export function assessPullRequest(pr: PullRequestSnapshot, headSha: string): PullRequestVerdict {
  if (pr.merged) return { kind: 'merged', commit: pr.mergeCommitSha ?? pr.headSha };
  if (pr.state === 'closed') return { kind: 'closed' };
  if (pr.headSha !== headSha) return { kind: 'waiting', reason: `the pull request's head moved to ${pr.headSha.slice(0, 10)}` };
  if (pr.mergeable === false) {
    return {
      kind: 'rework',
      outcome: {
        kind: 'conflict',
        paths: [],
        feedback: `Your branch conflicts with the target branch: GitHub reports that pull request #${pr.number} (${pr.url}) cannot be merged cleanly.\nMerge the target branch into your branch, resolve the conflicts, commit, and call gt done again.`,
      },
    };
  }
  const failing = pr.checks.filter((c) => c.state === 'failure');
  if (failing.length) {
    return {
      kind: 'rework',
      outcome: {
        kind: 'gates_failed',
        gate: `GitHub checks: ${failing.map((c) => c.name).join(', ')}`,
        feedback: [`Checks failed on pull request #${pr.number} (${pr.url}):`, ...failing.map((c) => `- ${c.name}: ${c.detail || 'failed'}`)].join('\n'),
      },
    };
  }
  const requested = pr.reviews.filter((r) => r.state === 'CHANGES_REQUESTED' && r.commitId === headSha);
  const newThreads = pr.threads.filter((t) => !t.resolved && !t.outdated && t.comments.some((c) => c.commitId === headSha));
  if (requested.length || newThreads.length) {
    const lines = [`Review on pull request #${pr.number} (${pr.url}) asks for changes:`];
    for (const r of requested) lines.push(`- ${r.author}: ${r.body || '(changes requested)'}`);
    for (const t of newThreads) {
      const first = t.comments[0]!;
      lines.push(`- ${first.path ? `${first.path}: ` : ''}${t.comments.map((c) => `${c.author}: ${c.body}`).join(' / ')}`);
    }
    return { kind: 'rework', outcome: { kind: 'changes_requested', feedback: lines.join('\n') } };
  }
  const pending = pr.checks.filter((c) => c.state === 'pending');
  if (pending.length) return { kind: 'waiting', reason: `checks running: ${pending.map((c) => c.name).join(', ')}` };
  if (pr.mergeable === null) return { kind: 'waiting', reason: 'GitHub is computing mergeability' };
  const states = [...latestReviewStates(pr.reviews).values()];
  if (!states.includes('APPROVED') || states.includes('CHANGES_REQUESTED')) return { kind: 'waiting', reason: 'waiting for an approving review' };
  if (pr.threads.some((t) => !t.resolved && !t.outdated)) return { kind: 'waiting', reason: 'waiting for open review threads to be resolved' };
  return { kind: 'ready' };
}
