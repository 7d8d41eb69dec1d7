/** `gt credential add <url>`: git credentials the worker uses for its rigs' remotes, kept on this host (never in a workflow, never given to agents). */
import type { Command } from 'commander';
import { credentialKey, hostCredentialsFile, saveHostCredential } from '../../activities/credentials';
import { gtHome } from '../../host/home';
import { printJson } from '../output';
import { UserError } from '../errors';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

export function registerCredentialCommands(program: Command): void {
  const credential = program
    .command('credential')
    .description(
      "git credentials this worker uses to fetch and push its rigs' remotes (stored on this host, owner-only; agents never get them)",
    );
  credential
    .command('add')
    .description(
      'store a token for an http(s) remote; keyed by protocol and full host:port, read from stdin or an environment variable',
    )
    .argument('<url>', 'the remote, e.g. https://git.example.com:8443 (its path is ignored)')
    .option('--username <name>', 'user name git sends with the token', 'x-access-token')
    .option('--token-env <VAR>', 'read the token from this environment variable instead of stdin')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nExample:\n  printf %s "$TOKEN" | gt credential add https://git.example.com:8443 --username ci',
    )
    .action(async (url: string, o: { username: string; tokenEnv?: string; json?: boolean }) => {
      if (!credentialKey(url))
        throw new UserError(`not an http(s) remote: ${url} (ssh remotes use the host's ssh keys)`);
      const token = o.tokenEnv ? (process.env[o.tokenEnv] ?? '') : await readStdin();
      if (!token) throw new UserError(o.tokenEnv ? `environment variable ${o.tokenEnv} is empty` : 'no token on stdin');
      const key = saveHostCredential(gtHome(), url, o.username, token);
      const result = {
        protocol: key.protocol,
        host: key.host,
        username: o.username,
        file: hostCredentialsFile(gtHome()),
      };
      if (o.json) printJson(result);
      else
        console.log(
          `credential for ${key.protocol}://${key.host} stored in ${result.file}; runs of rigs on that remote get it through git's credential helper`,
        );
    });
}
