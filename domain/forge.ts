/**
 * The PR strategy's vocabulary: a rig's GitHub settings, what we read of a pull request, and the pure decision of
 * what a pull request's state means for its bead. The decision only counts feedback given on the MR's own head
 * commit, so review comments that an earlier round already answered never bounce a later round again.
 * Where the worker's token may go is decided by the worker (its GITHUB_API_URL), never by a rig's settings.
 */
import { z } from 'zod';
import type { MergeOutcome } from './outcomes';
import { CAPS, capText, listText } from './caps';
import { DurationMs } from './durations';

/** Where a worker sends its GitHub token unless its GITHUB_API_URL says otherwise. */
export const DEFAULT_GITHUB_API_URL = 'https://api.github.com';

/** A test server on this machine: the only place the token may go over plain http (and only when named explicitly). */
const isLoopback = (hostname: string) =>
  hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
const parseUrl = (s: string): URL | undefined => {
  try {
    return new URL(s);
  } catch {
    return undefined;
  }
};

/**
 * Why a rig's forge API URL can never receive the token, whatever the worker allows: it must be https, or http to a
 * loopback test server. `gt rig add/update` refuse such a URL; the worker refuses it again (ForgeNotConfigured).
 */
export function forgeApiUrlProblem(apiUrl: string): string | undefined {
  const url = parseUrl(apiUrl);
  if (!url)
    return `the GitHub API URL ${JSON.stringify(apiUrl)} is not a URL (GitHub Enterprise: https://<host>/api/v3)`;
  if (url.username || url.password)
    return `the GitHub API URL ${url.origin} must not carry credentials: the token is the worker's GITHUB_TOKEN`;
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && isLoopback(url.hostname)) return undefined;
  return `the GitHub API URL ${apiUrl} is not https: the worker's GITHUB_TOKEN is sent only over https (plain http only to a loopback test server)`;
}

/**
 * The origins (scheme://host:port) a worker sends its GitHub token to, from its GITHUB_API_URL: comma-separated API
 * base URLs, default GitHub.com. The worker owns this list, not the rigs: a rig names one of these, or gets nothing.
 */
export function forgeTokenOrigins(setting: string | undefined): { origins: string[] } | { error: string } {
  const entries = (setting?.trim() ? setting : DEFAULT_GITHUB_API_URL)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const origins: string[] = [];
  for (const entry of entries) {
    const problem = forgeApiUrlProblem(entry);
    if (problem) return { error: `GITHUB_API_URL of the worker: ${problem}` };
    origins.push(new URL(entry).origin);
  }
  return { origins };
}

/** Why the worker must not send its token to `url` (the rig's API URL, a pagination link, a redirect), or undefined. */
export function forgeTokenRefusal(url: string, origins: readonly string[]): string | undefined {
  const problem = forgeApiUrlProblem(url);
  if (problem) return problem;
  const origin = new URL(url).origin;
  if (origins.includes(origin)) return undefined;
  return `the worker sends its GitHub token only to ${origins.join(', ')}, not to ${origin}: if ${origin} is your GitHub (Enterprise) API, add it to GITHUB_API_URL in the worker's environment (comma-separated API URLs, e.g. GITHUB_API_URL=${origin}/api/v3); otherwise fix the rig's forge.apiUrl (\`gt rig update <rig> --github-api-url …\`)`;
}

export const ForgeSettings = z.object({
  /** `owner/name` on GitHub; default: taken from a github.com repository URL. */
  repository: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, 'repository must look like owner/name')
    .optional(),
  /**
   * REST API base URL (GitHub Enterprise: https://host/api/v3). The token is the worker's GITHUB_TOKEN, never config,
   * and goes only to an origin the worker's GITHUB_API_URL allows (forgeTokenRefusal): a rig cannot redirect it.
   */
  apiUrl: z.string().url('apiUrl must be a URL').default(DEFAULT_GITHUB_API_URL),
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

/** What a merge request reads of its pull request on each look. Bounded text only (boundSnapshot). */
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
  threads: {
    resolved: boolean;
    outdated: boolean;
    comments: { author: string; body: string; path?: string; commitId?: string }[];
  }[];
  checks: { name: string; state: CheckState; detail: string }[];
}

/** GitHub logins are at most 39 characters, object ids 40 (SHA-1) or 64 (SHA-256) hex digits, states short words. */
const MAX_ID = 64;

/**
 * The snapshot with its free text (bodies, paths, check names and details) within CAPS.forgeTotal, each piece within
 * CAPS.forgeBody, and identifiers within MAX_ID: a pull request with thousands of long comments must not make an
 * activity result of megabytes. Identifiers, states and the lists themselves (what the verdict is decided on) are
 * never dropped, so the verdict is the same as on the whole snapshot.
 */
export function boundSnapshot(pr: PullRequestSnapshot): PullRequestSnapshot {
  let left = CAPS.forgeTotal;
  const text = (s: string) => {
    const kept = capText(s, Math.min(CAPS.forgeBody, Math.max(left, 0)));
    left -= kept.length;
    return kept;
  };
  const id = (s: string) => capText(s, MAX_ID);
  const optional = <T>(s: string | undefined, f: (s: string) => T) => (s === undefined ? undefined : f(s));
  return {
    ...pr,
    url: capText(pr.url, CAPS.name),
    mergeCommitSha: optional(pr.mergeCommitSha, id),
    headSha: id(pr.headSha),
    reviews: pr.reviews.map((r) => ({
      author: id(r.author),
      state: id(r.state),
      body: text(r.body),
      commitId: optional(r.commitId, id),
    })),
    threads: pr.threads.map((t) => ({
      resolved: t.resolved,
      outdated: t.outdated,
      comments: t.comments.map((c) => ({
        author: id(c.author),
        body: text(c.body),
        path: optional(c.path, text),
        commitId: optional(c.commitId, id),
      })),
    })),
    checks: pr.checks.map((c) => ({ name: text(c.name), state: c.state, detail: text(c.detail) })),
  };
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
  for (const r of reviews)
    if (['APPROVED', 'CHANGES_REQUESTED', 'DISMISSED'].includes(r.state)) latest.set(r.author, r.state);
  return latest;
}

export function assessPullRequest(pr: PullRequestSnapshot, headSha: string): PullRequestVerdict {
  if (pr.merged) return { kind: 'merged', commit: pr.mergeCommitSha ?? pr.headSha };
  if (pr.state === 'closed') return { kind: 'closed' };
  if (pr.headSha !== headSha)
    return { kind: 'waiting', reason: `the pull request's head moved to ${pr.headSha.slice(0, 10)}` };
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
        gate: `GitHub checks: ${listText(
          failing.map((c) => c.name),
          20,
        )}`,
        feedback: capText(
          [
            `Checks failed on pull request #${pr.number} (${pr.url}):`,
            ...failing.map((c) => `- ${c.name}: ${c.detail || 'failed'}`),
          ].join('\n'),
          CAPS.feedback,
        ),
      },
    };
  }
  const requested = pr.reviews.filter((r) => r.state === 'CHANGES_REQUESTED' && r.commitId === headSha);
  const newThreads = pr.threads.filter(
    (t) => !t.resolved && !t.outdated && t.comments.some((c) => c.commitId === headSha),
  );
  if (requested.length || newThreads.length) {
    const lines = [`Review on pull request #${pr.number} (${pr.url}) asks for changes:`];
    for (const r of requested) lines.push(`- ${r.author}: ${r.body || '(changes requested)'}`);
    for (const t of newThreads) {
      const first = t.comments[0]!;
      lines.push(
        `- ${first.path ? `${first.path}: ` : ''}${t.comments.map((c) => `${c.author}: ${c.body}`).join(' / ')}`,
      );
    }
    return {
      kind: 'rework',
      outcome: { kind: 'changes_requested', feedback: capText(lines.join('\n'), CAPS.feedback) },
    };
  }
  const pending = pr.checks.filter((c) => c.state === 'pending');
  if (pending.length) return { kind: 'waiting', reason: `checks running: ${pending.map((c) => c.name).join(', ')}` };
  if (pr.mergeable === null) return { kind: 'waiting', reason: 'GitHub is computing mergeability' };
  const states = [...latestReviewStates(pr.reviews).values()];
  if (!states.includes('APPROVED') || states.includes('CHANGES_REQUESTED'))
    return { kind: 'waiting', reason: 'waiting for an approving review' };
  if (pr.threads.some((t) => !t.resolved && !t.outdated))
    return { kind: 'waiting', reason: 'waiting for open review threads to be resolved' };
  return { kind: 'ready' };
}
