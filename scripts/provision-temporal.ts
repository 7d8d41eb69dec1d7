/** `npm run provision`: make sure a Temporal CLI is available (builds it with Go on offline machines). */
import { resolveTemporalCli } from '../provisioning/temporal-cli';

const cli = await resolveTemporalCli({ onProgress: (m) => console.error(m) });
console.log(cli.path ? `temporal CLI (${cli.source}): ${cli.path}` : 'temporal CLI: the SDK will download it on first use');
