/** `npm run build:cli`: writes dist/gt-agent.cjs and dist/gt-cli/ (see provisioning/cli-bundles.ts); bin/gt runs it when they are stale. */
import { buildCliBundles } from '../provisioning/cli-bundles';

const built = await buildCliBundles();
if (!process.argv.includes('--quiet')) console.error(`built ${built.join(', ')}`);
