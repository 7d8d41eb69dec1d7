/**
 * This test file's Temporal dev server. test/global-setup.ts starts one per vitest worker and files run in parallel,
 * one per worker at a time: workflow ids derive from names the files choose freely (`refinery:<rig>`, `bead:<id>`),
 * so two files running at once must never share a server, while files that follow each other on one worker may.
 */
import { inject } from 'vitest';

export function temporalAddress(): string {
  const servers = inject('temporalServers');
  // 1..maxWorkers for the file's worker (vitest); unset only outside a pool.
  const worker = Number(process.env.VITEST_POOL_ID ?? '1');
  return servers[(worker - 1) % servers.length]!;
}
