/**
 * Git credentials of the worker host for its rigs' remotes. Tokens live in GT_HOME/git-credentials
 * (git-credential-store format, owner-only), never in a workflow payload and never within an agent's reach: only
 * the worker's git uses them (`credential.helper` names this file: the mirror's config, and the push of a run's branch
 * from the import's quarantine); agents fetch from the mirror and push nowhere (docs/security.md). Entries are keyed
 * by the remote's protocol and full `host:port` exactly as the rig's URL spells it, because git asks for
 * `host=<host>:<port>` and a port-less key never matches a self-hosted remote on a custom port.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const hostCredentialsFile = (gtHome: string) => join(gtHome, 'git-credentials');

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
export function saveHostCredential(
  gtHome: string,
  url: string,
  username: string,
  token: string,
): { protocol: string; host: string } {
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
