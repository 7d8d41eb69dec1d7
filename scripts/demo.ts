/**
 * `npm run demo`: the embedded stack end to end. Starts a Temporal dev server (with Web UI), a worker and the
 * agent gateway; creates a scratch repository and a rig; slings three beads to the bundled scripted agent;
 * waits for them to merge; prints the target branch's log and where to look in the Web UI.
 *   --keep   keep the stack running afterwards (Ctrl-C to stop) to browse the Web UI.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { Town } from '../client/town';
import { formatMs } from '../domain/durations';
import { startDevServer } from '../provisioning/dev-server';
import { createTownWorker } from '../worker/worker';

const keep = process.argv.includes('--keep');
// The demo narrates for itself; worker internals only when something is wrong.
Runtime.install({ logger: new DefaultLogger('WARN') });
const started = Date.now();
const say = (m: string) => console.log(`[${formatMs(Date.now() - started).padStart(6)}] ${m}`);

/** The documented ports when free (a `gt up` may hold them), otherwise any free port. */
async function portOr(preferred: number): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<number | null>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(null));
      srv.listen(port, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
  return (await tryListen(preferred)) ?? (await tryListen(0))!;
}

const home = mkdtempSync(join(tmpdir(), 'gastown-demo-'));
process.env.GT_HOME = home;
const git = (args: string[], cwd?: string) =>
  execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

say(`GT_HOME=${home}`);
const repo = join(home, 'webapp.git');
git(['init', '-q', '--bare', '-b', 'main', repo]);
const seed = join(home, 'seed');
git(['clone', '-q', repo, seed]);
git(['checkout', '-q', '-b', 'main'], seed);
git(
  [
    '-c',
    'user.name=Demo',
    '-c',
    'user.email=demo@gastown.local',
    'commit',
    '-q',
    '--allow-empty',
    '-m',
    'Initial commit',
  ],
  seed,
);
git(['push', '-q', 'origin', 'main'], seed);
say(`scratch repository ${repo}`);

const port = await portOr(7233);
const uiPort = await portOr(8233);
say('starting the Temporal dev server…');
const server = await startDevServer({ dbFilename: join(home, 'temporal.db'), port, uiPort, onProgress: (m) => say(m) });
say(`Temporal at ${server.address} (CLI from ${server.cli.source}), Web UI at ${server.uiUrl}`);
const client = new Client({ connection: server.env.connection, namespace: server.namespace });
const worker = await createTownWorker({
  connection: server.env.nativeConnection,
  namespace: server.namespace,
  taskQueue: 'gastown',
  gateway: { port: 0 },
});
const running = worker.run();
say(`worker on queues gastown and ${worker.hostQueue}; agent gateway at ${worker.gateway.url}`);

let exitCode = 0;
try {
  const town = new Town(client, 'gastown');
  await town.addRig({ name: 'webapp', repo, gates: ['test -d beads'], agent: 'gt-example-agent' });
  say('rig webapp added (gate: `test -d beads`, agent: gt-example-agent)');
  const titles = ['Add the login endpoint', 'Add the login form', 'Document the login flow'];
  const beads = await Promise.all(titles.map((title, i) => town.sling('webapp', { id: `demo-${i + 1}`, title })));
  say(`slung ${beads.map((b) => b.beadId).join(', ')}`);
  const results = await Promise.all(
    beads.map(async (b) => {
      const r = await b.handle.result();
      say(
        `${b.beadId}: ${r.status}${r.commit ? ` → ${r.commit.slice(0, 10)}` : ''}${r.reason ? ` (${r.reason})` : ''}`,
      );
      return r;
    }),
  );
  console.log('\nmain of the rig repository now:\n');
  console.log(git(['--git-dir', repo, 'log', '--oneline', '--graph', 'main']));
  const listed: string[] = [];
  for await (const wf of client.workflow.list({ query: `GtKind = 'bead' AND GtRig = 'webapp'` })) {
    listed.push(`${wf.workflowId} [GtStatus=${String(wf.searchAttributes.GtStatus?.[0])}]`);
  }
  console.log(`Bead workflows in Temporal (GtKind="bead" AND GtRig="webapp"):\n  ${listed.sort().join('\n  ')}`);
  const query = encodeURIComponent(`GtKind="bead" AND GtRig="webapp"`);
  console.log(`\nWeb UI: ${server.uiUrl}/namespaces/${server.namespace}/workflows?query=${query}`);
  if (results.some((r) => r.status !== 'closed')) {
    exitCode = 1;
    console.error('demo: not every bead merged');
  } else {
    say('all three beads merged.');
  }
  if (keep) {
    console.log('Stack kept running (--keep). Press Ctrl-C to stop.');
    await running;
  }
} catch (err) {
  exitCode = 1;
  console.error(`demo failed: ${(err as Error).message}`);
} finally {
  await worker.shutdown();
  await running.catch(() => undefined);
  await server.stop();
}
process.exit(exitCode);
