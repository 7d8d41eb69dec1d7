/**
 * Issue 17 acceptance: `gt convoy graph` draws a real running convoy — beads merged, running, waiting, failed and
 * blocked at once — in every format, and the SVG and HTML are opened in headless Chromium (Debian `chromium`,
 * driven by playwright-core): the nodes are counted in the DOM and their status colours are read back from pixels
 * of a screenshot, so a graph that renders wrong (or blank) fails, not only one that is missing. Also: a spec file
 * before launch and a staged convoy. Screenshots go to test/.artifacts.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STATUS_STYLE, type ConvoyGraph } from '../client/convoy-graph';
import { ConvoyClient } from '../client/convoys';
import type { ConvoyBeadStatus } from '../domain/convoy';
import { writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { agentScript, eventually, repoRoot, runGt, startTestTown, type TestTown } from './helpers/town';

const CHROMIUM = process.env.GT_CHROMIUM_PATH ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium)
  console.warn(
    `convoy graph browser checks skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set GT_CHROMIUM_PATH)`,
  );
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const ARTIFACTS = join(repoRoot, 'test', '.artifacts');
const UI = 'http://ui.example.test:8233';

/** The running convoy: a, b merged; held running; after waiting on it; bad failed; child blocked behind bad. */
const EXPECTED: Record<string, ConvoyBeadStatus> = {
  a: 'closed',
  b: 'closed',
  held: 'running',
  after: 'pending',
  bad: 'failed',
  child: 'blocked',
};

let t: TestTown;
let browser: Browser | undefined;
let out: string;
let testDir: string;
beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  out = mkdtempSync(join(tmpdir(), 'gt-graph-'));
  testDir = mkdtempSync(join(tmpdir(), 'gt-graph-agents-'));
  t = await startTestTown();
  if (hasChromium) browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
});
afterAll(async () => {
  await browser?.close();
  await t?.stop();
});

interface NodeBox {
  id: string;
  cls: string;
  x: number;
  y: number;
  href?: string;
}

// Browser-side code is passed as source: the test's TypeScript has no DOM types.
/** Each bead node: id, class, a point just inside its box (left edge, mid-height: in the fill, clear of the label), its link. */
const NODE_BOXES = `[...document.querySelectorAll('g.node')].map((n) => {
  const r = n.querySelector('path, polygon').getBoundingClientRect();
  const link = n.closest('a') ?? n.querySelector('a');
  return { id: n.id, cls: n.getAttribute('class') ?? '', x: Math.round(r.left + 7), y: Math.round(r.top + r.height / 2), href: link?.getAttribute('xlink:href') ?? link?.getAttribute('href') ?? undefined };
})`;
/** RGB of a PNG's pixels at the given points, decoded by the browser (OffscreenCanvas: the page may be a bare SVG). */
const PIXELS_AT = (png: string, points: NodeBox[]) => `(async () => {
  const img = new Image();
  img.src = 'data:image/png;base64,${png}';
  await img.decode();
  const ctx = new OffscreenCanvas(img.width, img.height).getContext('2d');
  ctx.drawImage(img, 0, 0);
  return ${JSON.stringify(points.map((p) => [p.x, p.y]))}.map(([x, y]) => [...ctx.getImageData(x, y, 1, 1).data.slice(0, 3)]);
})()`;

const hex = (c: string) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));

/** Opens `file` and returns each bead node with the colour of its box's pixel in a screenshot of the page. */
async function nodesOnScreen(file: string, shot: string): Promise<(NodeBox & { pixel: number[] })[]> {
  const page: Page = await browser!.newPage({ viewport: { width: 1400, height: 1000 } });
  try {
    await page.goto(`file://${file}`);
    const boxes = await page.evaluate<NodeBox[]>(NODE_BOXES);
    // The viewport, not fullPage: Chromium never finishes a full-page capture of a bare SVG document.
    const png = await page.screenshot({ path: join(ARTIFACTS, shot) });
    // Colours are read back from the screenshot itself, not from the DOM's styles.
    const pixels = await page.evaluate<number[][]>(PIXELS_AT(png.toString('base64'), boxes));
    return boxes.map((b, i) => ({ ...b, pixel: pixels[i]! }));
  } finally {
    await page.close();
  }
}

function expectStatusColours(nodes: Awaited<ReturnType<typeof nodesOnScreen>>) {
  expect(nodes.map((n) => n.id).sort()).toEqual(
    Object.keys(EXPECTED)
      .map((id) => `bead-${id}`)
      .sort(),
  );
  for (const n of nodes) {
    const status = EXPECTED[n.id.replace(/^bead-/, '')]!;
    expect(n.cls, n.id).toContain(`status-${status}`);
    const want = hex(STATUS_STYLE[status].fill);
    for (const [k, v] of n.pixel.entries())
      expect(
        Math.abs(v - want[k]!),
        `${n.id} pixel ${n.pixel.join(',')} vs ${STATUS_STYLE[status].fill}`,
      ).toBeLessThanOrEqual(6);
  }
}

describe('gt convoy graph', () => {
  it('draws a running convoy in every format: statuses, round/run, reasons, critical path, Web UI links; SVG and HTML checked in Chromium', async () => {
    const repo = await createRepo();
    await t.addRig({
      name: 'graph',
      repo: repo.origin,
      agent: agentScript('convoy-go'),
      env: { TEST_DIR: testDir, FAIL_BEADS: 'bad' },
    });
    for (const id of ['a', 'b']) writeFileSync(join(testDir, `go-gr-${id}`), '');
    const spec = writeSpec({
      id: 'gr',
      title: 'Graph me',
      rig: 'graph',
      beads: [
        { id: 'a', title: 'Root A' },
        { id: 'b', title: 'After A', dependsOn: ['a'] },
        { id: 'held', title: 'Held by the test', dependsOn: ['a'] },
        { id: 'after', title: 'After held', dependsOn: ['held', 'b'] },
        { id: 'bad', title: 'Fails every attempt' },
        { id: 'child', title: 'Behind bad', dependsOn: ['bad'] },
      ],
    });
    expect((await runGt(['convoy', 'start', spec], t.cliEnv())).code).toBe(0);
    const convoys = new ConvoyClient(t.town);
    await eventually(
      async () => {
        const s = await convoys.state('gr');
        return s.beads.every((b) => b.status === EXPECTED[b.id]) && s;
      },
      90_000,
      'a, b merged; held running; bad failed; child blocked',
    );

    const json = await runGt(['convoy', 'graph', 'gr', '--json', '--ui-url', UI], t.cliEnv());
    expect(json.code, json.stderr).toBe(0);
    const graph = JSON.parse(json.stdout) as ConvoyGraph;
    expect(Object.fromEntries(graph.nodes.map((n) => [n.id, n.status]))).toEqual(EXPECTED);
    expect(graph.counts).toMatchObject({ total: 6, closed: 2, running: 1, pending: 1, failed: 1, blocked: 1 });
    const held = graph.nodes.find((n) => n.id === 'held')!;
    expect(held).toMatchObject({
      beadStatus: 'in_progress',
      round: 1,
      runId: 'gr-held/r1/a1',
      url: `${UI}/namespaces/${t.namespace}/workflows/bead%3Agr-held`,
    });
    expect(graph.nodes.find((n) => n.id === 'bad')!.reason).toBeTruthy();
    expect(graph.nodes.find((n) => n.id === 'child')!.reason).toMatch(/bad/);
    expect(graph.nodes.find((n) => n.id === 'after')!.url).toBe(
      `${UI}/namespaces/${t.namespace}/workflows/convoy%3Agr`,
    );
    // The chain through the held bead decides the landing (b finished sooner); the failed branch never counts.
    expect(graph.criticalPath).toEqual(['a', 'held', 'after']);
    expect(graph.nodes.filter((n) => n.critical).map((n) => n.id)).toEqual(['a', 'held', 'after']);

    const files: Record<string, string> = {};
    for (const format of ['mermaid', 'dot', 'svg', 'html']) {
      files[format] = join(out, `gr.${format}`);
      const r = await runGt(
        ['convoy', 'graph', 'gr', '--format', format, '--output', files[format], '--ui-url', UI],
        t.cliEnv(),
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe(`wrote ${files[format]} (${format}, 6 beads)\n`);
    }

    const mermaid = readFileSync(files.mermaid!, 'utf8');
    expect(mermaid).toMatch(/^flowchart TD$/m);
    expect(mermaid.match(/^ {2}b_\w+\["/gm)).toHaveLength(6);
    expect(mermaid).toContain('b_held["▶ held<br/>Held by the test<br/>in_progress · r1/a1"]');
    expect(mermaid).toMatch(/^ {2}b_b --> b_after$|^ {2}b_b ==> b_after$/m);
    expect(mermaid).toContain(`classDef failed fill:${STATUS_STYLE.failed.fill}`);
    expect(mermaid).toMatch(/^ {2}class b_bad failed$/m);
    expect(mermaid).toMatch(/^ {2}class b_child blocked$/m);
    expect(mermaid.match(/^ {2}click b_\w+ href "http:\/\/ui\.example\.test:8233\//gm)).toHaveLength(6);

    const dot = readFileSync(files.dot!, 'utf8');
    expect(dot.match(/^ {2}"[^"]+" \[id="bead-/gm)).toHaveLength(6);
    expect(dot.match(/^ {2}"[^"]+" -> "[^"]+"/gm)).toHaveLength(5);
    expect(dot).toContain('class="bead status-blocked"');
    // Graphviz writes '-' in SVG attributes as &#45; (the DOM reads it back as '-', see below).
    const svgText = readFileSync(files.svg!, 'utf8');
    expect(svgText).toMatch(/^<\?xml[\s\S]*<svg[\s\S]*<\/svg>\s*$/);
    expect(svgText.match(/<g id="bead&#45;\w+" class="node bead/g)).toHaveLength(6);

    if (!browser) return;
    const svgNodes = await nodesOnScreen(files.svg!, 'convoy-graph-svg.png');
    expectStatusColours(svgNodes);
    const htmlNodes = await nodesOnScreen(files.html!, 'convoy-graph-html.png');
    expectStatusColours(htmlNodes);
    for (const n of htmlNodes)
      expect(n.href, n.id).toMatch(new RegExp(`^${UI}/namespaces/${t.namespace}/workflows/(bead%3Agr-|convoy%3Agr$)`));
    // Clicking a node opens its workflow in the Web UI (a new tab: the graph stays open).
    const page = await browser.newPage();
    try {
      await page
        .context()
        .route(`${UI}/**`, (route) =>
          route.fulfill({ contentType: 'text/html', body: '<title>Temporal Web UI stand-in</title>' }),
        );
      await page.goto(`file://${files.html}`);
      const [popup] = await Promise.all([page.waitForEvent('popup'), page.click('#bead-held')]);
      await popup.waitForLoadState();
      expect(popup.url()).toBe(`${UI}/namespaces/${t.namespace}/workflows/bead%3Agr-held`);
      await popup.close();
    } finally {
      await page.close();
    }

    writeFileSync(join(testDir, 'go-gr-held'), '');
    writeFileSync(join(testDir, 'go-gr-after'), '');
    const result: unknown = await t.client.workflow.getHandle('convoy:gr').result();
    expect(result).toMatchObject({ status: 'failed', counts: { closed: 4, failed: 1, blocked: 1 } });
  });

  it('draws a spec file before launch (no town) and a staged convoy', async () => {
    const spec = join(repoRoot, 'examples', 'login-flow.yaml');
    const mermaid = await runGt(['convoy', 'graph', spec], { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(mermaid.code, mermaid.stderr).toBe(0);
    expect(mermaid.stdout).toMatch(/^title: "Login flow — spec, not launched — 0\/4 merged, 0 running"$/m);
    expect(mermaid.stdout.match(/^ {2}b_\w+\["· /gm)).toHaveLength(4);
    const planned = JSON.parse((await runGt(['convoy', 'graph', spec, '--json'], t.cliEnv())).stdout) as ConvoyGraph;
    expect(planned).toMatchObject({ status: 'spec', criticalPath: ['api', 'ui', 'e2e'] });

    const bad = writeSpec({
      title: 'Cyclic',
      rig: 'x',
      beads: [
        { id: 'a', title: 'A', dependsOn: ['b'] },
        { id: 'b', title: 'B', dependsOn: ['a'] },
      ],
    });
    const refused = await runGt(['convoy', 'graph', bad], t.cliEnv());
    expect(refused).toMatchObject({
      code: 1,
      stderr: 'gt: invalid convoy spec: dependency cycle a → b → a (each depends on the next)\n',
    });
    expect((await runGt(['convoy', 'graph', spec, '--format', 'png'], t.cliEnv())).stderr).toBe(
      "gt: unknown graph format 'png': use mermaid, dot, svg, html\n",
    );

    const repo = await createRepo();
    await t.addRig({ name: 'graph-staged', repo: repo.origin });
    const convoys = new ConvoyClient(t.town);
    await convoys.start(
      {
        id: 'grs',
        title: 'Staged graph',
        rig: 'graph-staged',
        beads: [
          { id: 'x', title: 'X' },
          { id: 'y', title: 'Y', dependsOn: ['x'] },
        ],
      },
      { staged: true },
    );
    const staged = JSON.parse((await runGt(['convoy', 'graph', 'grs', '--json'], t.cliEnv())).stdout) as ConvoyGraph;
    expect(staged).toMatchObject({ status: 'staged', criticalPath: ['x', 'y'], counts: { total: 2, pending: 2 } });
    const svg = join(out, 'grs.svg');
    expect((await runGt(['convoy', 'graph', 'grs', '--output', svg], t.cliEnv())).code).toBe(0);
    expect(readFileSync(svg, 'utf8').match(/class="node bead status&#45;pending critical"/g)).toHaveLength(2);
    await convoys.close('grs', { reason: 'drawn' });
  });
});
