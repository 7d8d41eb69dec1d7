/**
 * Git credentials for agents. Tokens live on the worker host (GT_HOME/git-credentials, git-credential-store format,
 * owner-only), never in a workflow payload: each run gets a file with only the entries for its rig's remote, and
 * git's own `store` helper pointed at it through GIT_CONFIG_* variables. Entries are keyed by the remote's
 * protocol and full `host:port` exactly as the rig's URL spells it, because git asks for `host=<host>:<port>` and
 * a port-less key never matches a self-hosted remote on a custom port.
 */
import { appendFileSync, chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const hostCredentialsFile = (gtHome: string) => join(gtHome, 'git-credentials');
export const runCredentialsFile = (runDir: string) => join(runDir, 'git-credentials');

/** `https://git.example.com:8443/org/repo.git` → `{ protocol: 'https', host: 'git.example.com:8443' }`; null for ssh/scp/local remotes. */
export function credentialKey(url: string): { protocol: string; host: string } | null {
  const m = /^(https?):\/\/(?:[^@/]*@)?([^/?#]+)/i.exec(url.trim());
  return m ? { protocol: m[1]!.toLowerCase(), host: m[2]!.toLowerCase() } : null;
}

/** One git-credential-store line; user name and token are percent-encoded as git expects. */
export function credentialLine(url: string, username: string, token: string): string {
  const key = credentialKey(url);
  if (!key) throw new Error(`git credentials need an http(s) remote URL, got ${url}`);
  return `${key.protocol}://${encodeURIComponent(username)}:${encodeURIComponent(token)}@${key.host}`;
}

/** Adds (or replaces) the host's entry for a remote. */
export function saveHostCredential(gtHome: string, url: string, username: string, token: string): { protocol: string; host: string } {
  const line = credentialLine(url, username, token);
  const key = credentialKey(url)!;
  mkdirSync(gtHome, { recursive: true });
  const file = hostCredentialsFile(gtHome);
  const kept = readLines(file).filter((l) => !sameKey(l, key));
  writeFileSync(file, [...kept, line].map((l) => `${l}\n`).join(''), { mode: 0o600 });
  chmodSync(file, 0o600);
  return key;
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

function sameKey(line: string, key: { protocol: string; host: string }): boolean {
  const k = credentialKey(line);
  return !!k && k.protocol === key.protocol && k.host === key.host;
}

/**
 * Writes the run's credential file (only the rig remote's entry) and returns the variables that make git use it.
 * A remote without an entry gets no helper at all, and git never prompts (GIT_TERMINAL_PROMPT=0), so a missing
 * credential fails fast instead of hanging the agent.
 */
export function runGitCredentials(options: { gtHome: string; runDir: string; repo: string }): Record<string, string> {
  const env: Record<string, string> = { GIT_TERMINAL_PROMPT: '0' };
  const key = credentialKey(options.repo);
  if (!key) return env;
  const entries = readLines(hostCredentialsFile(options.gtHome)).filter((l) => sameKey(l, key));
  if (!entries.length) return env;
  mkdirSync(options.runDir, { recursive: true });
  const file = runCredentialsFile(options.runDir);
  writeFileSync(file, '', { mode: 0o600 });
  appendFileSync(file, entries.map((l) => `${l}\n`).join(''));
  return {
    ...env,
    // The empty helper first resets any helper of the host's git config, so only this run's file answers.
    GIT_CONFIG_COUNT: '2',
    GIT_CONFIG_KEY_0: 'credential.helper',
    GIT_CONFIG_VALUE_0: '',
    GIT_CONFIG_KEY_1: 'credential.helper',
    GIT_CONFIG_VALUE_1: `store --file=${file}`,
  };
}
