/**
 * A fake GitHub API for PR-strategy tests: a real HTTP server in the test process that speaks the REST and GraphQL
 * subset the forge activities use, backed by a real bare repository (head shas are read from it, merges are real
 * git merges pushed to it). Failure injection: 5xx, rate limits (403/429 with reset headers), slow answers.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: 'GitHub',
  GIT_AUTHOR_EMAIL: 'noreply@github.example',
  GIT_COMMITTER_NAME: 'GitHub',
  GIT_COMMITTER_EMAIL: 'noreply@github.example',
};
const git = async (cwd: string, args: string[]) => (await run('git', args, { cwd, env: gitEnv })).stdout.trim();
const gitOk = (cwd: string, args: string[]) =>
  run('git', args, { cwd, env: gitEnv }).then(
    () => true,
    () => false,
  );

export interface FakeReview {
  author: string;
  state: 'APPROVED' | 'CHANGES_REQUESTED' | 'COMMENTED';
  body: string;
  commitId: string;
}

export interface FakeThread {
  resolved: boolean;
  comments: { author: string; body: string; path: string; commitId: string }[];
}

export interface FakePullRequest {
  number: number;
  title: string;
  body: string;
  head: string;
  base: string;
  state: 'open' | 'closed';
  merged: boolean;
  mergeCommitSha?: string;
  reviews: FakeReview[];
  threads: FakeThread[];
  /** Unset: computed from the repository with `git merge-tree`. */
  mergeable?: boolean | null;
}

export interface RecordedRequest {
  method: string;
  path: string;
  authorization?: string;
  body?: unknown;
}

interface Injection {
  match: RegExp;
  remaining: number;
  status?: number;
  headers?: Record<string, string>;
  delayMs?: number;
}

export interface FakeGitHub {
  url: string;
  token: string;
  requests: RecordedRequest[];
  pulls: FakePullRequest[];
  /** The next `times` requests whose `METHOD path` matches fail with `status` (and headers, e.g. rate-limit resets). */
  failNext(times: number, status: number, options?: { match?: RegExp; headers?: Record<string, string> }): void;
  /** The next `times` matching requests are answered only after `delayMs`. */
  slowNext(times: number, delayMs: number, match?: RegExp): void;
  pull(number: number): FakePullRequest;
  pullForBranch(branch: string): FakePullRequest | undefined;
  headSha(pr: FakePullRequest): Promise<string>;
  review(number: number, author: string, state: FakeReview['state'], body?: string): Promise<void>;
  comment(number: number, author: string, path: string, body: string): Promise<void>;
  setCheck(
    sha: string,
    name: string,
    status: 'queued' | 'in_progress' | 'completed',
    conclusion?: 'success' | 'failure',
  ): void;
  /** A human presses "Merge": a real merge commit on the base branch of the repository. */
  merge(number: number): Promise<string>;
  close(number: number): void;
  stop(): Promise<void>;
}

export async function startFakeGitHub(options: {
  repository: string;
  origin: string;
  token?: string;
}): Promise<FakeGitHub> {
  const token = options.token ?? `ghp_fake_${Math.random().toString(36).slice(2)}`;
  const [owner, name] = options.repository.split('/') as [string, string];
  const requests: RecordedRequest[] = [];
  const pulls: FakePullRequest[] = [];
  const checks = new Map<string, { name: string; status: string; conclusion: string | null }[]>();
  const injections: Injection[] = [];
  const origin = options.origin;

  const branchSha = async (branch: string) =>
    git(origin, ['rev-parse', `refs/heads/${branch}`]).catch(() => '0'.repeat(40));
  const headSha = (pr: FakePullRequest) => branchSha(pr.head);
  const mergeable = async (pr: FakePullRequest) => {
    if (pr.mergeable !== undefined) return pr.mergeable;
    return gitOk(origin, ['merge-tree', '--write-tree', `refs/heads/${pr.base}`, `refs/heads/${pr.head}`]);
  };
  const htmlUrl = (pr: FakePullRequest) => `https://github.example/${options.repository}/pull/${pr.number}`;
  const pullJson = async (pr: FakePullRequest) => ({
    number: pr.number,
    title: pr.title,
    body: pr.body,
    html_url: htmlUrl(pr),
    state: pr.state,
    merged: pr.merged,
    merged_at: pr.merged ? new Date().toISOString() : null,
    merge_commit_sha: pr.mergeCommitSha ?? null,
    mergeable: pr.state === 'open' ? await mergeable(pr) : null,
    head: { ref: pr.head, sha: await headSha(pr), label: `${owner}:${pr.head}` },
    base: { ref: pr.base },
  });

  const doMerge = async (pr: FakePullRequest, method = 'merge', title?: string) => {
    const work = mkdtempSync(join(tmpdir(), 'fake-gh-merge-'));
    try {
      await git(work, ['clone', '-q', origin, '.']);
      await git(work, ['checkout', '-q', pr.base]);
      const head = await headSha(pr);
      const message = title ?? `Merge pull request #${pr.number} from ${owner}/${pr.head}`;
      if (method === 'squash') {
        await git(work, ['merge', '--squash', head]);
        await git(work, ['commit', '-q', '-m', message]);
      } else {
        await git(work, ['merge', '--no-ff', '-m', message, head]);
      }
      await git(work, ['push', '-q', 'origin', `HEAD:${pr.base}`]);
      pr.mergeCommitSha = await git(work, ['rev-parse', 'HEAD']);
      pr.merged = true;
      pr.state = 'closed';
      return pr.mergeCommitSha;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
    res.end(JSON.stringify(body));
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<unknown>((resolve) => {
      let data = '';
      req.on('data', (c: Buffer) => (data += c.toString()));
      req.on('end', () => {
        try {
          resolve(data ? JSON.parse(data) : undefined);
        } catch {
          resolve(undefined);
        }
      });
    });

  const route = async (
    method: string,
    path: string,
    query: URLSearchParams,
    body: unknown,
  ): Promise<[number, unknown]> => {
    const repoPrefix = `/repos/${owner}/${name}`;
    if (method === 'POST' && path === '/graphql') {
      const vars = (body as { variables?: { number?: number } })?.variables ?? {};
      const pr = pulls.find((p) => p.number === vars.number);
      if (!pr) return [200, { data: { repository: { pullRequest: null } } }];
      return [
        200,
        {
          data: {
            repository: {
              pullRequest: {
                reviewThreads: {
                  nodes: pr.threads.map((t) => ({
                    isResolved: t.resolved,
                    isOutdated: false,
                    comments: {
                      nodes: t.comments.map((c) => ({
                        body: c.body,
                        path: c.path,
                        author: { login: c.author },
                        originalCommit: { oid: c.commitId },
                      })),
                    },
                  })),
                },
              },
            },
          },
        },
      ];
    }
    if (!path.startsWith(repoPrefix)) return [404, { message: 'Not Found' }];
    const rest = path.slice(repoPrefix.length);
    let m: RegExpExecArray | null;
    if (method === 'GET' && rest === '/pulls') {
      const head = query.get('head')?.replace(`${owner}:`, '');
      const state = query.get('state') ?? 'open';
      const found = pulls.filter((p) => (!head || p.head === head) && (state === 'all' || p.state === state));
      return [200, await Promise.all(found.map(pullJson))];
    }
    if (method === 'POST' && rest === '/pulls') {
      const b = body as { head: string; base: string; title: string; body?: string };
      if (pulls.some((p) => p.head === b.head && p.state === 'open'))
        return [
          422,
          {
            message: 'Validation Failed',
            errors: [{ message: `A pull request already exists for ${owner}:${b.head}.` }],
          },
        ];
      const pr: FakePullRequest = {
        number: pulls.length + 1,
        title: b.title,
        body: b.body ?? '',
        head: b.head,
        base: b.base,
        state: 'open',
        merged: false,
        reviews: [],
        threads: [],
      };
      pulls.push(pr);
      return [201, await pullJson(pr)];
    }
    if ((m = /^\/pulls\/(\d+)$/.exec(rest)) && method === 'GET') {
      const pr = pulls.find((p) => p.number === Number(m![1]));
      return pr ? [200, await pullJson(pr)] : [404, { message: 'Not Found' }];
    }
    if ((m = /^\/pulls\/(\d+)\/reviews$/.exec(rest)) && method === 'GET') {
      const pr = pulls.find((p) => p.number === Number(m![1]));
      return pr
        ? [
            200,
            pr.reviews.map((r, i) => ({
              id: i + 1,
              user: { login: r.author },
              state: r.state,
              body: r.body,
              commit_id: r.commitId,
            })),
          ]
        : [404, { message: 'Not Found' }];
    }
    if ((m = /^\/pulls\/(\d+)\/merge$/.exec(rest)) && method === 'PUT') {
      const pr = pulls.find((p) => p.number === Number(m![1]));
      if (!pr) return [404, { message: 'Not Found' }];
      const b = (body ?? {}) as { sha?: string; merge_method?: string; commit_title?: string };
      if (pr.merged) return [405, { message: 'Pull Request is not mergeable' }];
      if (b.sha && b.sha !== (await headSha(pr)))
        return [409, { message: 'Head branch was modified. Review and try the merge again.' }];
      if (!(await mergeable(pr))) return [405, { message: 'Pull Request is not mergeable' }];
      const sha = await doMerge(pr, b.merge_method, b.commit_title);
      return [200, { merged: true, sha, message: 'Pull Request successfully merged' }];
    }
    if ((m = /^\/commits\/([^/]+)\/check-runs$/.exec(rest)) && method === 'GET') {
      const runs = checks.get(m[1]!) ?? [];
      return [
        200,
        {
          total_count: runs.length,
          check_runs: runs.map((c, i) => ({
            id: i + 1,
            name: c.name,
            status: c.status,
            conclusion: c.conclusion,
            output: { title: `${c.name} ${c.conclusion ?? c.status}`, summary: '' },
          })),
        },
      ];
    }
    if ((m = /^\/commits\/([^/]+)\/status$/.exec(rest)) && method === 'GET') {
      return [200, { state: 'pending', sha: m[1], total_count: 0, statuses: [] }];
    }
    return [404, { message: `Not Found: ${method} ${path}` }];
  };

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const body = await readBody(req);
      requests.push({
        method: req.method ?? 'GET',
        path: url.pathname,
        authorization: req.headers.authorization,
        body,
      });
      const key = `${req.method} ${url.pathname}`;
      const injection = injections.find((i) => i.remaining > 0 && i.match.test(key));
      if (injection) {
        injection.remaining--;
        if (injection.delayMs) await new Promise((r) => setTimeout(r, injection.delayMs));
        if (injection.status)
          return send(res, injection.status, { message: `injected ${injection.status}` }, injection.headers);
      }
      if (
        req.headers.authorization !== `token ${token}` &&
        req.headers.authorization !== `bearer ${token}` &&
        req.headers.authorization !== `Bearer ${token}`
      ) {
        return send(res, 401, { message: 'Bad credentials' });
      }
      const [status, answer] = await route(req.method ?? 'GET', url.pathname, url.searchParams, body);
      if (!res.writableEnded) send(res, status, answer);
    })().catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { message: String(err) });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const pull = (number: number) => {
    const pr = pulls.find((p) => p.number === number);
    if (!pr) throw new Error(`no pull request #${number}`);
    return pr;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    requests,
    pulls,
    failNext(times, status, o = {}) {
      injections.push({ match: o.match ?? /./, remaining: times, status, headers: o.headers });
    },
    slowNext(times, delayMs, match = /./) {
      injections.push({ match, remaining: times, delayMs });
    },
    pull,
    pullForBranch: (branch) => pulls.filter((p) => p.head === branch).pop(),
    headSha,
    async review(number, author, state, body = '') {
      const pr = pull(number);
      pr.reviews.push({ author, state, body, commitId: await headSha(pr) });
    },
    async comment(number, author, path, body) {
      const pr = pull(number);
      pr.threads.push({ resolved: false, comments: [{ author, body, path, commitId: await headSha(pr) }] });
    },
    setCheck(sha, checkName, status, conclusion) {
      const list = checks.get(sha) ?? [];
      checks.set(sha, [
        ...list.filter((c) => c.name !== checkName),
        { name: checkName, status, conclusion: conclusion ?? null },
      ]);
    },
    merge: (number) => doMerge(pull(number)),
    close(number) {
      pull(number).state = 'closed';
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
