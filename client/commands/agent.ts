/** Commands an agent runs inside its run: they read GT_* and speak to the gateway with the run token. */
import type { Command } from 'commander';
import { printJson } from '../output';
import { UserError } from '../town';

function runEnv() {
  const { GT_GATEWAY_URL: url, GT_RUN_TOKEN: token, GT_RUN_ID: runId } = process.env;
  if (!url || !token || !runId) throw new UserError('not inside a Gas Town run: GT_GATEWAY_URL, GT_RUN_TOKEN and GT_RUN_ID must be set');
  return { url, token, runId };
}

export async function callGateway(path: string, body: Record<string, unknown>): Promise<{ message: string }> {
  const { url, token, runId } = runEnv();
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ runId, ...body }),
    });
  } catch (err) {
    throw new UserError(`cannot reach the gateway at ${url}: ${(err as Error).message}`);
  }
  const payload = (await res.json().catch(() => ({}))) as { error?: string; message?: string };
  if (!res.ok) throw new UserError(`${res.status}: ${payload.error ?? res.statusText}`);
  return { message: payload.message ?? 'ok' };
}

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
    .action(async (message: string[]) => {
      console.log((await callGateway('/v1/progress', { message: message.join(' ') })).message);
    });
  program
    .command('escalate')
    .description('(agent) ask a human for help')
    .requiredOption('--reason <text>', 'what is wrong')
    .option('--severity <level>', 'low | medium | high | critical', 'medium')
    .action(async (opts: { reason: string; severity: string }) => {
      console.log((await callGateway('/v1/escalate', { reason: opts.reason, severity: opts.severity })).message);
    });
  program
    .command('approve')
    .description('(reviewer) approve the merge request under review')
    .option('--feedback <text>', 'optional notes', '')
    .action(async (opts: { feedback: string }) => {
      console.log((await callGateway('/v1/review', { verdict: 'approve', feedback: opts.feedback })).message);
    });
  program
    .command('request-changes')
    .description('(reviewer) send the merge request back to a polecat with feedback')
    .requiredOption('--feedback <text>', 'what must change')
    .action(async (opts: { feedback: string }) => {
      console.log((await callGateway('/v1/review', { verdict: 'request_changes', feedback: opts.feedback })).message);
    });
}
