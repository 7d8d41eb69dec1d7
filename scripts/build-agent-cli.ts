/** `npm run build:agent-cli`: writes dist/gt-agent.mjs (see provisioning/agent-cli.ts). */
import { buildAgentCli } from '../provisioning/agent-cli';

console.error(`built ${await buildAgentCli()}`);
