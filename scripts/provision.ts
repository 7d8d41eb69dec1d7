/**
 * `npm run provision` (part of `npm test`): everything the suite needs beyond node_modules.
 *  - the Temporal CLI (see provisioning/temporal-cli.ts; built with Go on offline machines);
 *  - the time-skipping test server of the fast workflow tier (provisioning/test-server.ts; the Java SDK's, from Maven
 *    Central), when Java is installed;
 *  - the production topology's full Temporal server, its SQL tool and Web UI server (provisioning/temporal-server.ts;
 *    built with Go from the module proxy, once) and Debian's PostgreSQL, for test/prod-stack.test.ts;
 *  - Debian packages for the sandbox runtime, the Web UI browser test and the terminal and network tests (bubblewrap,
 *    slirp4netns, chromium, tmux, iproute2), installed with
 *    apt-get when running as root and missing. Without them those tests skip and say why.
 */
import { execFileSync } from 'node:child_process';
import { ensureAgentImage, ensureDockerEngine } from '../provisioning/docker';
import { resolveComposeConfig } from '../provisioning/compose-config';
import { ensurePostgresInstalled } from '../provisioning/postgres';
import { findOnPath, resolveTemporalCli } from '../provisioning/temporal-cli';
import { resolveTemporalServer, TEMPORAL_SERVER_VERSION } from '../provisioning/temporal-server';
import { resolveTestServer } from '../provisioning/test-server';

const cli = await resolveTemporalCli({ onProgress: (m) => console.error(m) });
console.log(
  cli.path ? `temporal CLI (${cli.source}): ${cli.path}` : 'temporal CLI: the SDK will download it on first use',
);

const testServer = await resolveTestServer({ onProgress: (m) => console.error(m) });
if (!testServer.available)
  console.error(`note: ${testServer.reason}; the fast workflow tier (test/workflows-fast) will skip.`);
else
  console.log(
    testServer.path
      ? `time-skipping test server (${testServer.source}): ${testServer.path}`
      : 'time-skipping test server: the SDK will download it on first use',
  );

const postgres = await ensurePostgresInstalled((m) => console.error(m));
console.log(
  postgres.available
    ? `postgresql: ${postgres.binDir}`
    : `note: ${postgres.reason}; test/prod-stack.test.ts will skip.`,
);
try {
  const server = await resolveTemporalServer({ onProgress: (m) => console.error(m) });
  console.log(
    server.available
      ? `temporal server ${TEMPORAL_SERVER_VERSION} (${server.source}): ${server.dir}${server.ui.available ? ' (with the Web UI server)' : `; ${server.ui.reason}`}`
      : `note: ${server.reason}; test/prod-stack.test.ts will skip.`,
  );
} catch (err) {
  console.error(`warning: ${(err as Error).message}; test/prod-stack.test.ts will try the build again and fail.`);
}

const composeTool = await resolveComposeConfig((m) => console.error(m));
console.log(
  composeTool.available
    ? `compose loader (compose-spec/compose-go): ${composeTool.path}`
    : `note: ${composeTool.reason}; test/compose-config.test.ts will skip.`,
);
const wanted = [
  { pkg: 'bubblewrap', bin: 'bwrap', for: 'the sandbox runtime' },
  { pkg: 'slirp4netns', bin: 'slirp4netns', for: 'the sandbox runtime with network' },
  { pkg: 'chromium', bin: 'chromium', for: 'the Web UI browser test' },
  { pkg: 'tmux', bin: 'tmux', for: 'the terminal tests of gt convoy watch and gt status --watch' },
  { pkg: 'iproute2', bin: 'ip', for: "the network tests' own test host (a network namespace)" },
];
const missing = wanted.filter((w) => !findOnPath(w.bin));
const isRoot = process.getuid?.() === 0;
if (missing.length && isRoot && process.env.GT_SKIP_SYSTEM_PACKAGES !== '1' && findOnPath('apt-get')) {
  const names = missing.map((m) => m.pkg);
  console.error(`Installing ${names.join(', ')} with apt-get (for ${missing.map((m) => m.for).join(' and ')})…`);
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...names], { stdio: 'inherit', env });
  } catch (err) {
    console.error(
      `warning: could not install ${names.join(', ')} (${(err as Error).message}); the tests that need them will skip.`,
    );
  }
} else if (missing.length) {
  console.error(
    `note: ${missing.map((m) => `${m.pkg} (${m.for})`).join(', ')} not installed; those tests will skip. Install with apt-get as root.`,
  );
}
for (const w of wanted) console.log(`${w.bin}: ${findOnPath(w.bin) ?? 'missing'}`);

const engine = await ensureDockerEngine({ onProgress: (m) => console.error(m) });
if (engine.ok) {
  try {
    const image = await ensureAgentImage({ onProgress: (m) => console.error(m) });
    console.log(
      `docker: engine ${engine.started ? 'started' : 'running'} at ${engine.socketPath}; image ${image.tag} ${image.source === 'engine' ? 'present' : `built from ${image.source} in ${(image.ms / 1000).toFixed(1)}s`}`,
    );
  } catch (err) {
    console.error(
      `warning: the agent image could not be built (${(err as Error).message}); the docker tests will fail or skip.`,
    );
  }
} else {
  console.error(`note: ${engine.reason}; the docker runtime tests will skip.`);
}
