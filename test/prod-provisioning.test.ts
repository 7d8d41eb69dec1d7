/**
 * Where the production topology's Temporal server comes from (provisioning/temporal-server.ts): GT_TEMPORAL_SERVER_DIR,
 * then the cache, then a Go build into the cache. Executables here are stand-ins (a fake `go` that answers `install`
 * and `mod download` as the real one does); test/prod-stack.test.ts runs the real build's binaries.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  GO_BUILD_FLAGS,
  resolveTemporalServer,
  TEMPORAL_SERVER_HELP,
  TEMPORAL_SERVER_MODULE,
  TEMPORAL_SERVER_VERSION,
  temporalServerCacheDir,
  UI_SERVER_MODULE,
} from '../provisioning/temporal-server';
import { scratchEnvironment, standIn } from './helpers/stand-ins';

const scratch = scratchEnvironment('gt-prod-prov-', ['GT_TEMPORAL_SERVER_DIR'], 'empty-bin');

/** A directory laid out as a server installation; `ui` adds the Web UI server. */
function installation(dir: string, ui = false): string {
  standIn(join(dir, 'temporal-server'));
  standIn(join(dir, 'temporal-sql-tool'));
  mkdirSync(join(dir, 'config'), { recursive: true });
  writeFileSync(join(dir, 'config', 'docker.yaml'), '# enable-template\n');
  mkdirSync(join(dir, 'schema', 'postgresql', 'v12', 'temporal', 'versioned'), { recursive: true });
  if (ui) {
    standIn(join(dir, 'ui', 'ui-server'));
    mkdirSync(join(dir, 'ui', 'config'), { recursive: true });
    writeFileSync(join(dir, 'ui', 'config', 'docker.yaml'), '# enable-template\n');
  }
  return dir;
}

/**
 * A fake `go`: `build … -o DIR/ PKG…` records its arguments and directory and writes a stand-in binary named after
 * each package's last element into DIR (as go build names them); `mod download -json M@V` makes a module directory
 * with the files the build reads (the CLI's go.mod requiring the server; the server's config and schemas) and prints
 * its Dir. A package containing `failOn` fails to build.
 */
function fakeGo(dir: string, failOn = ''): string {
  const modules = join(dir, 'modules');
  return standIn(
    join(dir, 'gobin', 'go'),
    `case "$1" in
  build)
    echo "$@ CWD=$PWD CGO_ENABLED=$CGO_ENABLED" >> ${join(dir, 'go-calls')}
    out=
    prev=
    for a in "$@"; do
      if [ "$prev" = "-o" ]; then out=$a; fi
      case "$a" in
        go.temporal.io/*|github.com/*)
          if [ -n "${failOn}" ] && echo "$a" | /bin/grep -q "${failOn}"; then echo "proxy refused $a" >&2; exit 1; fi
          name=\${a##*/}
          printf '#!/bin/sh\n' > "$out$name"; /bin/chmod +x "$out$name" ;;
      esac
      prev=$a
    done ;;
  mod)
    m=${modules}/$(echo "$4" | /usr/bin/tr '/@' '__')
    /bin/mkdir -p "$m/config" "$m/schema/postgresql/v12/temporal/versioned" "$m/schema/postgresql/v12/visibility/versioned"
    echo '# enable-template' > "$m/config/docker.yaml"
    printf 'module github.com/temporalio/cli\n\nrequire (\n\tgo.temporal.io/server ${TEMPORAL_SERVER_VERSION}\n)\n' > "$m/go.mod"
    echo 'sums' > "$m/go.sum"
    echo "{\\"Path\\": \\"x\\", \\"Dir\\": \\"$m\\"}" ;;
esac`,
  );
}

describe('resolveTemporalServer', () => {
  it('takes GT_TEMPORAL_SERVER_DIR first, and names what a directory lacks', async () => {
    process.env.GT_TEMPORAL_SERVER_DIR = installation(join(scratch.dir(), 'release'));
    const found = await resolveTemporalServer();
    expect(found).toMatchObject({
      available: true,
      source: 'GT_TEMPORAL_SERVER_DIR',
      server: join(scratch.dir(), 'release', 'temporal-server'),
      ui: { available: false },
    });
    process.env.GT_TEMPORAL_SERVER_DIR = join(scratch.dir(), 'empty');
    const err = (await resolveTemporalServer().catch((e: unknown) => e)) as Error;
    expect(err.message).toContain(
      'lacks temporal-server, temporal-sql-tool, config/docker.yaml, schema/postgresql/v12',
    );
    expect(err.message).toContain(TEMPORAL_SERVER_HELP);
  });

  it('then the cache, without building', async () => {
    installation(temporalServerCacheDir(), true);
    expect(temporalServerCacheDir()).toBe(
      join(scratch.dir(), 'cache', 'gastown', `temporal-server-${TEMPORAL_SERVER_VERSION}`),
    );
    expect(await resolveTemporalServer({ build: false })).toMatchObject({
      available: true,
      source: 'cache',
      ui: { available: true, server: join(temporalServerCacheDir(), 'ui', 'ui-server') },
    });
  });

  it("builds the server, its SQL tool and the UI server with go build in the CLI's module graph, into the cache", async () => {
    fakeGo(scratch.dir());
    process.env.PATH = join(scratch.dir(), 'gobin');
    const progress: string[] = [];
    const built = await resolveTemporalServer({ onProgress: (m) => progress.push(m) });
    expect(built).toMatchObject({ available: true, source: 'go-build', dir: temporalServerCacheDir() });
    if (!built.available) throw new Error('unreachable');
    expect(built.ui.available).toBe(true);
    const calls = readFileSync(join(scratch.dir(), 'go-calls'), 'utf8').trim().split('\n');
    // In a scratch module whose graph is the CLI's (so the CLI's build cache serves it), with the release's CGO setting.
    expect(calls[0]).toContain(
      `build ${GO_BUILD_FLAGS.join(' ')} -o ${temporalServerCacheDir()}.build-${process.pid}/bin/ ${TEMPORAL_SERVER_MODULE}/cmd/server ${TEMPORAL_SERVER_MODULE}/cmd/tools/sql`,
    );
    expect(calls[0]).toContain(`CWD=${temporalServerCacheDir()}.build-${process.pid}/module`);
    expect(calls[0]).toContain('CGO_ENABLED=0');
    expect(calls[1]).toContain(`${UI_SERVER_MODULE}/cmd/server`);
    expect(existsSync(join(built.postgresSchemaDir, 'v12', 'visibility', 'versioned'))).toBe(true);
    expect(progress[0]).toMatch(/Building the Temporal server v1\.29\.1 and its SQL tool with Go/);
    // Published whole: no staging directory is left beside the cache.
    expect(existsSync(`${temporalServerCacheDir()}.build-${process.pid}`)).toBe(false);
    expect(await resolveTemporalServer({ build: false })).toMatchObject({ source: 'cache' });
  });

  it('keeps the server when only the UI server cannot be built, and says why', async () => {
    fakeGo(scratch.dir(), 'ui-server');
    process.env.PATH = join(scratch.dir(), 'gobin');
    const progress: string[] = [];
    const built = await resolveTemporalServer({ onProgress: (m) => progress.push(m) });
    expect(built).toMatchObject({ available: true, ui: { available: false } });
    expect(progress.join('\n')).toMatch(/no Web UI server: go build .*ui-server.* failed .*proxy refused/);
  });

  it('reports a failed server build with every option, leaving no half-built cache', async () => {
    fakeGo(scratch.dir(), 'go.temporal.io/server');
    process.env.PATH = join(scratch.dir(), 'gobin');
    const err = (await resolveTemporalServer().catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/go build go\.temporal\.io\/server\/cmd\/server .* failed/);
    expect(err.message).toContain(TEMPORAL_SERVER_HELP);
    expect(existsSync(temporalServerCacheDir())).toBe(false);
    expect(existsSync(`${temporalServerCacheDir()}.build-${process.pid}`)).toBe(false);
  });
});
