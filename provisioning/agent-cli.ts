/**
 * Bundles the agent commands (client/agent-cli.ts) into dist/gt-agent.mjs: one plain-JavaScript file that bare node
 * runs without the TypeScript loader. Built by `npm run build:agent-cli`, before the demo and the bench, by the test
 * setup, and in the worker image; bin/gt falls back to the sources when it is missing or older than them.
 */
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const agentCliBundlePath = `${root}dist/gt-agent.mjs`;

export async function buildAgentCli(): Promise<string> {
  await build({
    entryPoints: [`${root}client/agent-cli.ts`],
    outfile: agentCliBundlePath,
    bundle: true,
    platform: 'node',
    format: 'esm',
    // node18: the agent image's node (Debian bookworm) runs this bundle inside docker runs.
    target: 'node18',
    logLevel: 'warning',
    // commander is CommonJS: its require() of node built-ins needs a real require inside an ES module.
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  });
  return agentCliBundlePath;
}
