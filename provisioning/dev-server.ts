/** The embedded Temporal dev server (SQLite file, Web UI), run through @temporalio/testing's ephemeral server. */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { ALL_SEARCH_ATTRIBUTES } from '../domain/search-attributes';
import { PROVISIONING_HELP, resolveTemporalCli, type ResolvedCli } from './temporal-cli';

export interface DevServerOptions {
  /** SQLite file; omitted = in memory. */
  dbFilename?: string;
  port?: number;
  /** Web UI port; omitted = headless. */
  uiPort?: number;
  namespace?: string;
  extraArgs?: string[];
  onProgress?: (message: string) => void;
}

export interface DevServer {
  env: TestWorkflowEnvironment;
  address: string;
  namespace: string;
  uiUrl?: string;
  cli: ResolvedCli;
}

export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const cli = await resolveTemporalCli({ onProgress: options.onProgress });
  const namespace = options.namespace ?? 'default';
  let env: TestWorkflowEnvironment;
  try {
    env = await TestWorkflowEnvironment.createLocal({
      server: {
        executable: cli.executable,
        dbFilename: options.dbFilename,
        port: options.port,
        ...(options.uiPort ? { uiPort: options.uiPort } : { ui: false }),
        namespace,
        searchAttributes: ALL_SEARCH_ATTRIBUTES,
        log: { format: 'json', level: 'warn' },
        extraArgs: options.extraArgs,
      },
    });
  } catch (err) {
    const hint = cli.source === 'sdk-download' ? `\n${PROVISIONING_HELP}` : '';
    throw new Error(`could not start the Temporal dev server (${cli.source}${cli.path ? `: ${cli.path}` : ''}): ${(err as Error).message}${hint}`);
  }
  const address = env.connection.options.address;
  return { env, address, namespace, uiUrl: options.uiPort ? `http://localhost:${options.uiPort}` : undefined, cli };
}
