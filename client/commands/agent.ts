/** Commands an agent runs inside its run: they read GT_* and speak to the gateway with the run token. */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { Command } from 'commander';
import { UNIX_URL_PREFIX } from '../../agents/gateway-socket';
import type { InboxReply } from '../../domain/bead';
import { printJson } from '../output';
import { UserError } from '../errors';

/**
 * The run this command speaks for: its gateway, its id, and its token — read from the owner-only file the worker
 * wrote (GT_RUN_TOKEN_FILE), so the token is never in an environment another process or `docker inspect` can read.
 * GT_RUN_TOKEN is still taken when set, for agents that were handed the token some other way.
 */
export function runEnv(env: NodeJS.ProcessEnv = process.env) {
  const { GT_GATEWAY_URL: url, GT_RUN_ID: runId } = env;
  let token = env.GT_RUN_TOKEN;
  if (!token && env.GT_RUN_TOKEN_FILE) {
    try {
      token = readFileSync(env.GT_RUN_TOKEN_FILE, 'utf8').trim();
    } catch (err) {
      throw new UserError(
        `cannot read the run token at GT_RUN_TOKEN_FILE=${env.GT_RUN_TOKEN_FILE}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  }
  if (!url || !token || !runId)
    throw new UserError(
      'not inside a Gas Town run: GT_GATEWAY_URL, GT_RUN_TOKEN_FILE (or GT_RUN_TOKEN) and GT_RUN_ID must be set',
    );
  return { url, token, runId };
}

/** POSTs JSON to the gateway over TCP (`http://…`) or its unix socket (`unix:/path`, for sandboxed agents). */
function post(url: string, path: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  const data = JSON.stringify(body);
  const target = url.startsWith(UNIX_URL_PREFIX)
    ? { socketPath: url.slice(UNIX_URL_PREFIX.length), path }
    : (() => {
        const u = new URL(path, url);
        return { hostname: u.hostname, port: u.port, path: u.pathname };
      })();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...target,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(data),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

export async function callGateway<T = { message: string }>(path: string, body: Record<string, unknown>): Promise<T> {
  const { url, token, runId } = runEnv();
  let res: { status: number; text: string };
  try {
    res = await post(url, path, token, { runId, ...body });
  } catch (err) {
    throw new UserError(`cannot reach the gateway at ${url}: ${(err as Error).message}`);
  }
  let payload: Record<string, unknown> = {};
  try {
    payload = JSON.parse(res.text) as Record<string, unknown>;
  } catch {
    // Not JSON: reported below by status.
  }
  if (res.status < 200 || res.status >= 300)
    throw new UserError(`${res.status}: ${typeof payload.error === 'string' ? payload.error : res.text.slice(0, 200)}`);
  return payload as T;
}

const say = async (path: string, body: Record<string, unknown>) =>
  console.log((await callGateway(path, body)).message ?? 'ok');

export function registerAgentCommands(program: Command): void {
  program
    .command('done')
    .description('(agent) report this run finished: its committed branch goes to the merge queue')
    .option('--summary <text>', 'one line about what was done', '')
    .option('--json', 'print the gateway answer as JSON')
    .action(async (opts: { summary: string; json?: boolean }) => {
      const r = await callGateway('/v1/done', { summary: opts.summary });
      if (opts.json) printJson(r);
      else console.log(r.message);
    });
  program
    .command('progress')
    .description('(agent) report progress; keeps the run from being taken for stalled')
    .argument('[message...]', 'what the agent is doing')
    .action((message: string[]) => say('/v1/progress', { message: message.join(' ') }));
  program
    .command('checkpoint')
    .description('(agent) save a note about where the work stands; the next run of this bead gets it in its prompt')
    .argument('<note...>', 'what is done and what is next')
    .action((note: string[]) => say('/v1/checkpoint', { note: note.join(' ') }));
  program
    .command('inbox')
    .description('(agent) read messages operators sent to this bead (`gt nudge`); shown messages are marked read')
    .option('--all', 'show every message, read or not')
    .option('--peek', 'do not mark the messages read')
    .option('--json', 'print JSON')
    .action(async (opts: { all?: boolean; peek?: boolean; json?: boolean }) => {
      const r = await callGateway<InboxReply>('/v1/inbox', { all: !!opts.all, peek: !!opts.peek });
      if (opts.json) return printJson(r);
      if (!r.messages.length) return console.log('(no new messages)');
      for (const m of r.messages) console.log(`[${m.sentAt}] ${m.from}: ${m.message}`);
    });
  program
    .command('escalate')
    .description('(agent) ask a human for help')
    .requiredOption('--reason <text>', 'what is wrong')
    .option('--severity <level>', 'low | medium | high | critical', 'medium')
    .action((opts: { reason: string; severity: string }) =>
      say('/v1/escalate', { reason: opts.reason, severity: opts.severity }),
    );
  program
    .command('approve')
    .description('(reviewer) approve the merge request under review')
    .option('--feedback <text>', 'optional notes', '')
    .action((opts: { feedback: string }) => say('/v1/review', { verdict: 'approve', feedback: opts.feedback }));
  program
    .command('request-changes')
    .description('(reviewer) send the merge request back to a polecat with feedback')
    .requiredOption('--feedback <text>', 'what must change')
    .action((opts: { feedback: string }) => say('/v1/review', { verdict: 'request_changes', feedback: opts.feedback }));
}
