/**
 * GitHub, for rigs that merge through pull requests. Thin and idempotent: a pull request is found by its head
 * branch before one is opened, and a merge re-reads the pull request first, so a retried call finds the effect
 * of the earlier one. The token is read from the worker's own environment (GITHUB_TOKEN; the factory is given it,
 * ForgeDeps.hostEnv) on every call: it never
 * enters a workflow input, a result or history. It goes only to the origins of the worker's GITHUB_API_URL (default
 * https://api.github.com), over https (http only to a loopback test server named there): a rig's forge.apiUrl picks
 * one of them or the call is refused before any request leaves. GitHub's answers become Temporal retry decisions here: rate
 * limits wait for the reset, 5xx and slow answers retry with backoff, 4xx are reported as they are.
 */
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Octokit } from '@octokit/rest';
import { z } from 'zod';
import { MAX_TEXT } from '../domain/bead';
import {
  assessPullRequest,
  boundSnapshot,
  ForgeSettings,
  forgeTokenOrigins,
  forgeTokenRefusal,
  githubRepository,
  type CheckState,
  type PullRequestRef,
  type PullRequestSnapshot,
} from '../domain/forge';
import { MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { parseActivityInput } from '../domain/validation';
import { Failure } from '../domain/failures';
import { CommitId } from '../domain/ids';

const MAX_BODY = 2000;
const MAX_RATE_LIMIT_WAIT_MS = 15 * 60_000;

const clip = (s: string | null | undefined, n = MAX_BODY) => (s ?? '').slice(0, n);

interface Forge {
  octokit: Octokit;
  owner: string;
  repo: string;
  settings: ForgeSettings;
}

export interface ForgeDeps {
  /**
   * The worker's environment, the only source of the GitHub token (GITHUB_TOKEN, else GH_TOKEN) and of the origins it
   * may go to (GITHUB_API_URL); read on every call (default: process.env).
   */
  hostEnv?: NodeJS.ProcessEnv;
}

function forgeOf(rig: RigConfig, env: NodeJS.ProcessEnv): Forge {
  const settings = rig.forge ?? ForgeSettings.parse({});
  const repository = githubRepository(rig.repo, rig.forge);
  if (!repository)
    throw ApplicationFailure.nonRetryable(
      `rig ${rig.name} merges by pull request but has no GitHub repository (set forge.repository, e.g. \`gt rig add … --github-repo owner/name\`)`,
      Failure.ForgeNotConfigured,
    );
  const token = env.GITHUB_TOKEN ?? env.GH_TOKEN;
  if (!token)
    throw ApplicationFailure.nonRetryable(
      'no GitHub token: set GITHUB_TOKEN in the environment of the worker',
      Failure.ForgeNotConfigured,
    );
  const allowed = forgeTokenOrigins(env.GITHUB_API_URL);
  if ('error' in allowed) throw ApplicationFailure.nonRetryable(allowed.error, Failure.ForgeNotConfigured);
  const refusal = forgeTokenRefusal(settings.apiUrl, allowed.origins);
  if (refusal) throw ApplicationFailure.nonRetryable(`rig ${rig.name}: ${refusal}`, Failure.ForgeNotConfigured);
  const [owner, repo] = repository.split('/') as [string, string];
  const octokit = new Octokit({
    auth: token,
    baseUrl: settings.apiUrl.replace(/\/+$/, ''),
    userAgent: 'gastown-temporal',
    log: {
      debug: () => undefined,
      info: () => undefined,
      warn: (m: string) => void log.warn(m),
      error: (m: string) => void log.warn(m),
    },
    request: { fetch: tokenFetch(allowed.origins, settings.requestTimeout) },
  });
  return { octokit, owner, repo, settings };
}

const MAX_REDIRECTS = 5;

/**
 * Octokit's fetch. Every URL it is asked for — the API base, a pagination link, a redirect — is checked against the
 * worker's allowed origins before the request (which carries the token) leaves: redirects are followed here, one
 * checked hop at a time, never by fetch itself.
 */
function tokenFetch(origins: readonly string[], timeoutMs: number) {
  return async (url: string, init: RequestInit): Promise<Response> => {
    for (let hop = 0; ; hop++) {
      const refusal = forgeTokenRefusal(url, origins);
      if (refusal) throw ApplicationFailure.nonRetryable(refusal, Failure.ForgeNotConfigured);
      const response = await fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || !location) return response;
      if (hop >= MAX_REDIRECTS)
        throw ApplicationFailure.retryable(
          `GitHub redirected more than ${MAX_REDIRECTS} times from ${url}`,
          Failure.ForgeUnavailable,
        );
      url = new URL(location, url).toString();
    }
  };
}

/** Turns a GitHub failure into the retry decision it calls for. */
async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asFailure(what, err);
  }
}

function asFailure(what: string, err: unknown): ApplicationFailure {
  // A refusal of tokenFetch, wrapped by Octokit as a 500: it stays the refusal (non-retryable, saying what to set).
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof ApplicationFailure) return cause;
  const e = err as {
    status?: number;
    message?: string;
    response?: { headers?: Record<string, string | number | undefined> };
  };
  const status = typeof e.status === 'number' ? e.status : undefined;
  const headers = e.response?.headers ?? {};
  const message = `GitHub ${what}: ${status ? `${status} ` : ''}${clip(e.message, 500)}`;
  const rateLimited =
    status === 429 ||
    (status === 403 && (String(headers['x-ratelimit-remaining']) === '0' || headers['retry-after'] !== undefined));
  if (rateLimited) {
    const retryAfter = Number(headers['retry-after']);
    const reset = Number(headers['x-ratelimit-reset']);
    const waitMs = retryAfter > 0 ? retryAfter * 1000 : reset > 0 ? reset * 1000 - Date.now() : 60_000;
    return ApplicationFailure.create({
      message: `${message} (rate limited)`,
      type: Failure.ForgeRateLimited,
      nextRetryDelay: Math.min(Math.max(waitMs, 1000), MAX_RATE_LIMIT_WAIT_MS),
    });
  }
  if (status === 401)
    return ApplicationFailure.nonRetryable(`${message} (check the worker's GITHUB_TOKEN)`, Failure.ForgeAuth);
  if (status !== undefined && status >= 400 && status < 500)
    return ApplicationFailure.nonRetryable(message, Failure.ForgeRejected);
  // 5xx, timeouts, refused connections: GitHub is having a moment; retry with backoff.
  return ApplicationFailure.retryable(message, Failure.ForgeUnavailable);
}

export const OpenPullRequestInput = z.object({ rig: RigConfig, ticket: MergeTicket });
export type OpenPullRequestInput = z.input<typeof OpenPullRequestInput>;

export type OpenPullRequestResult = { kind: 'open'; pr: PullRequestRef } | { kind: 'closed'; url: string };

export const PullRequestInput = z.object({ rig: RigConfig, number: z.number().int().positive() });
export type PullRequestInput = z.input<typeof PullRequestInput>;

export const MergePullRequestInput = PullRequestInput.extend({
  headSha: CommitId,
  title: z.string().max(500),
});
export type MergePullRequestInput = z.input<typeof MergePullRequestInput>;

export type MergePullRequestResult = { merged: true; commit: string } | { merged: false; reason: string };

const THREADS_QUERY = `query($owner: String!, $name: String!, $number: Int!) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 100) {
        nodes { isResolved isOutdated comments(first: 20) { nodes { body path author { login } originalCommit { oid } } } }
      }
    }
  }
}`;

interface ThreadsAnswer {
  repository: {
    pullRequest: {
      reviewThreads: {
        nodes: {
          isResolved: boolean;
          isOutdated: boolean;
          comments: {
            nodes: {
              body: string;
              path?: string;
              author?: { login: string } | null;
              originalCommit?: { oid: string } | null;
            }[];
          };
        }[];
      };
    } | null;
  } | null;
}

async function snapshot(f: Forge, number: number): Promise<PullRequestSnapshot> {
  const { octokit, owner, repo } = f;
  const { data: pr } = await call('get pull request', () => octokit.pulls.get({ owner, repo, pull_number: number }));
  const [reviews, checkRuns, statuses, threads] = await Promise.all([
    call('list reviews', () => octokit.pulls.listReviews({ owner, repo, pull_number: number, per_page: 100 })),
    call('list check runs', () => octokit.checks.listForRef({ owner, repo, ref: pr.head.sha, per_page: 100 })),
    call('get commit status', () =>
      octokit.repos.getCombinedStatusForRef({ owner, repo, ref: pr.head.sha, per_page: 100 }),
    ),
    call('list review threads', () => octokit.graphql<ThreadsAnswer>(THREADS_QUERY, { owner, name: repo, number })),
  ]);
  const checkState = (status: string, conclusion: string | null): CheckState =>
    status !== 'completed'
      ? 'pending'
      : ['success', 'neutral', 'skipped'].includes(conclusion ?? '')
        ? 'success'
        : 'failure';
  const statusState = (s: string): CheckState =>
    s === 'success' ? 'success' : s === 'pending' ? 'pending' : 'failure';
  return boundSnapshot({
    number,
    url: pr.html_url,
    state: pr.state === 'closed' ? 'closed' : 'open',
    merged: pr.merged,
    mergeCommitSha: pr.merged ? (pr.merge_commit_sha ?? undefined) : undefined,
    headSha: pr.head.sha,
    mergeable: pr.mergeable,
    reviews: reviews.data.map((r) => ({
      author: r.user?.login ?? 'unknown',
      state: r.state,
      body: clip(r.body),
      commitId: r.commit_id ?? undefined,
    })),
    threads: (threads.repository?.pullRequest?.reviewThreads.nodes ?? []).map((t) => ({
      resolved: t.isResolved,
      outdated: t.isOutdated,
      comments: t.comments.nodes.map((c) => ({
        author: c.author?.login ?? 'unknown',
        body: clip(c.body),
        path: c.path,
        commitId: c.originalCommit?.oid,
      })),
    })),
    checks: [
      ...checkRuns.data.check_runs.map((c) => ({
        name: c.name,
        state: checkState(c.status, c.conclusion),
        detail: clip([c.output?.title, c.output?.summary].filter(Boolean).join(': ')),
      })),
      ...statuses.data.statuses.map((s) => ({
        name: s.context,
        state: statusState(s.state),
        detail: clip(s.description),
      })),
    ],
  });
}

export function createForgeActivities(deps: ForgeDeps = {}) {
  const forgeFor = (rig: RigConfig) => forgeOf(rig, deps.hostEnv ?? process.env);
  return {
    /** Finds the pull request of the MR's branch, or opens one. A pull request a human closed unmerged is reported, never reopened. */
    async openPullRequest(raw: OpenPullRequestInput): Promise<OpenPullRequestResult> {
      const { rig, ticket } = parseActivityInput(OpenPullRequestInput, raw);
      const f = forgeFor(rig);
      const { octokit, owner, repo } = f;
      const find = async () => {
        const { data } = await call('list pull requests', () =>
          octokit.pulls.list({ owner, repo, head: `${owner}:${ticket.branch}`, state: 'all', per_page: 100 }),
        );
        return data;
      };
      const existing = await find();
      const open = existing.find((p) => p.state === 'open');
      if (open) return { kind: 'open', pr: { number: open.number, url: open.html_url, created: false } };
      const closed = existing.find((p) => p.state === 'closed' && !p.merged_at);
      if (closed) return { kind: 'closed', url: closed.html_url };
      try {
        const { data } = await octokit.pulls.create({
          owner,
          repo,
          head: ticket.branch,
          base: ticket.targetBranch,
          title: clip(ticket.title, 250),
          body: clip(
            `Opened by the Gas Town refinery for bead \`${ticket.beadId}\` (merge request \`${ticket.mrId}\`, head ${ticket.headSha}).\n\nReview comments and failing checks go back to the bead's agent as rework on this branch.`,
            MAX_TEXT,
          ),
        });
        log.info('pull request opened', { mrId: ticket.mrId, number: data.number, url: data.html_url });
        return { kind: 'open', pr: { number: data.number, url: data.html_url, created: true } };
      } catch (err) {
        // An earlier attempt may have opened it and lost the answer: find it rather than fail.
        if ((err as { status?: number }).status === 422) {
          const again = (await find()).find((p) => p.state === 'open');
          if (again) return { kind: 'open', pr: { number: again.number, url: again.html_url, created: false } };
        }
        throw asFailure('open pull request', err);
      }
    },

    async pullRequestSnapshot(raw: PullRequestInput): Promise<PullRequestSnapshot> {
      const { rig, number } = parseActivityInput(PullRequestInput, raw);
      return snapshot(forgeFor(rig), number);
    },

    /** Merges through the GitHub API, but only after reading the pull request again: still ready, still at our head. */
    async mergePullRequest(raw: MergePullRequestInput): Promise<MergePullRequestResult> {
      const { rig, number, headSha, title } = parseActivityInput(MergePullRequestInput, raw);
      const f = forgeFor(rig);
      const verdict = assessPullRequest(await snapshot(f, number), headSha);
      if (verdict.kind === 'merged') return { merged: true, commit: verdict.commit };
      if (verdict.kind !== 'ready')
        return { merged: false, reason: verdict.kind === 'waiting' ? verdict.reason : verdict.kind };
      try {
        const { data } = await f.octokit.pulls.merge({
          owner: f.owner,
          repo: f.repo,
          pull_number: number,
          sha: headSha,
          merge_method: rig.mergeStrategy,
          commit_title: clip(title, 250),
        });
        if (data.merged) return { merged: true, commit: data.sha };
        return { merged: false, reason: clip(data.message, 500) };
      } catch (err) {
        const status = (err as { status?: number }).status;
        // 405 not mergeable / 409 head moved: the pull request changed under us; the next look decides.
        if (status === 405 || status === 409) return { merged: false, reason: clip((err as Error).message, 500) };
        throw asFailure('merge pull request', err);
      }
    },
  };
}

export type ForgeActivities = ReturnType<typeof createForgeActivities>;
