/**
 * Issue 6 acceptance, run against the town's own workflows (issue 12): the Temporal Web UI is the town's console.
 * A real worker works real convoys on the embedded dev server (with its UI); headless Chromium (Debian `chromium`,
 * driven by playwright-core) lists a convoy's beads by search attribute — exactly those — and shows what the code
 * writes: a bead's summary, details and current details ("waiting for gt done from run …"), a convoy's summary and
 * counts, the bead's title memo. Screenshots go to test/.artifacts (always, so a failure shows what the browser saw).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { Connection, Client as TemporalClient } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConvoyClient } from '../client/convoys';
import { Town } from '../client/town';
import { beadWorkflowId, convoyWorkflowId } from '../domain/ids';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { createTownWorker, type TownWorker } from '../worker/worker';
import { createRepo } from './helpers/repo';
import { freePort } from './helpers/processes';
import { agentScript, eventually, FAST_POLICY, repoRoot } from './helpers/town';
import { temporalAddress } from './helpers/server';

const CHROMIUM = process.env.GT_CHROMIUM_PATH ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium)
  console.warn(`web-ui tests skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set GT_CHROMIUM_PATH)`);

const ARTIFACTS = join(repoRoot, 'test', '.artifacts');
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

describe.skipIf(!hasChromium)("the Temporal Web UI on the town's own workflows", () => {
  let server: DevServer;
  let client: Client;
  let native: NativeConnection;
  let worker: TownWorker;
  let running: Promise<void>;
  let browser: Browser;
  let town: Town;
  const testDir = mkdtempSync(join(tmpdir(), 'gt-web-ui-'));

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    Runtime.install({ logger: new DefaultLogger('WARN') });
    server = await startDevServer({ uiPort: await freePort() });
    client = new TemporalClient({ connection: server.env.connection, namespace: server.namespace });
    // A town on the UI's own server: its worker, its GT_HOME, the suite's workflow bundle.
    process.env.GT_HOME = mkdtempSync(join(tmpdir(), 'gt-home-web-ui-'));
    const taskQueue = `web-ui-${process.pid}`;
    native = await NativeConnection.connect({ address: server.address });
    worker = await createTownWorker({
      connection: native,
      namespace: server.namespace,
      taskQueue,
      hostId: 'web-ui-host',
      workflowBundle: { codePath: inject('workflowBundlePath') },
      pollIntervalMs: 200,
      shutdownGraceTime: '2s',
    });
    running = worker.run();
    town = new Town(client, taskQueue);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });

    // Two convoys on one rig; every polecat holds until the test lets it finish (hold.sh), so the UI is looked at
    // while work is in flight: login-api finishes and merges, login-ui and billing-api stay with their agents.
    const repo = await createRepo();
    await town.addRig({
      name: 'webapp',
      repo: repo.origin,
      agent: agentScript('hold'),
      env: { TEST_DIR: testDir },
      // The polecats hold for as long as the test looks; they must not be taken for stalled meanwhile.
      policy: { ...FAST_POLICY, stallTimeout: 600_000 },
    });
    const convoys = new ConvoyClient(town);
    await convoys.start({
      id: 'login',
      title: 'Login flow',
      rig: 'webapp',
      beads: [
        { id: 'api', title: 'Add /login endpoint', description: 'POST /login sets a session cookie.' },
        { id: 'ui', title: 'Login form', description: 'A form that posts to /login.' },
      ],
    });
    await convoys.start({
      id: 'billing',
      title: 'Billing',
      rig: 'webapp',
      beads: [{ id: 'api', title: 'Invoice endpoint' }],
    });
    // Every bead's polecat is running ("<bead> <run> <pid>" lines), then login-api may finish and merge.
    await eventually(
      () =>
        existsSync(join(testDir, 'pids')) &&
        readFileSync(join(testDir, 'pids'), 'utf8').trim().split('\n').length === 3,
      60_000,
      'three polecats holding',
    );
    writeFileSync(join(testDir, 'go-login-api'), '');
    expect((await client.workflow.getHandle(beadWorkflowId('login-api')).result()) as { status: string }).toMatchObject(
      {
        status: 'closed',
      },
    );
    await eventually(
      async () => (await convoys.state('login')).beads.some((b) => b.status === 'closed'),
      30_000,
      'the convoy heard login-api merged',
    );
  });
  afterAll(async () => {
    // Let the held polecats finish, so stopping the worker leaves no agent behind.
    for (const bead of ['login-ui', 'billing-api']) writeFileSync(join(testDir, `go-${bead}`), '');
    await browser?.close();
    // Their beads' workflows, not the convoys: a convoy lands on the refinery's word, before its last bead ends.
    await Promise.all(
      ['login-ui', 'billing-api'].map((bead) =>
        client?.workflow
          .getHandle(beadWorkflowId(bead))
          .result()
          .catch(() => undefined),
      ),
    );
    await worker?.shutdown();
    await running?.catch(() => undefined);
    await native?.close();
    await server?.stop();
  });

  /** Runs `fn` on a fresh page and saves a screenshot (and the page's text) named after the step, whatever the outcome. */
  async function onPage(name: string, fn: (page: Page) => Promise<void>): Promise<void> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      await fn(page);
    } finally {
      await page.screenshot({ path: join(ARTIFACTS, `web-ui-${name}.png`), fullPage: true }).catch(() => undefined);
      const text = await page
        .locator('body')
        .innerText()
        .catch(() => '');
      writeFileSync(join(ARTIFACTS, `web-ui-${name}.txt`), text);
      await page.close();
    }
  }

  const workflowPage = (page: Page, workflowId: string) =>
    page.goto(`${server.uiUrl}/namespaces/${server.namespace}/workflows/${encodeURIComponent(workflowId)}`, {
      waitUntil: 'domcontentloaded',
    });

  it("lists exactly a convoy's beads with the saved query of docs/web-ui.md", async () => {
    const query = 'GtKind = "bead" AND GtConvoyId = "login"';
    expect((await client.workflow.count(query)).count).toBe(2);
    await onPage('convoy-filter', async (page) => {
      await page.goto(`${server.uiUrl}/namespaces/${server.namespace}/workflows?query=${encodeURIComponent(query)}`, {
        waitUntil: 'domcontentloaded',
      });
      await page.getByText('bead:login-api').first().waitFor({ timeout: 60_000 });
      await page.getByText('bead:login-ui').first().waitFor();
      await expect.poll(() => page.getByText('bead:billing-api').count()).toBe(0);
      await expect.poll(() => page.getByText('convoy:login').count()).toBe(0);
      const body = await page.locator('body').innerText();
      expect(body).toContain('beadWorkflow');
    });
  });

  /** The text of the page and of its frames (the UI renders summaries and details, markdown, in sandboxed iframes). */
  const allText = async (page: Page) => {
    const texts = await Promise.all(
      page.frames().map((f) =>
        f
          .locator('body')
          .innerText()
          .catch(() => ''),
      ),
    );
    return texts.join('\n');
  };
  const showsEventually = (page: Page, text: string) =>
    expect.poll(() => allText(page), { timeout: 60_000, interval: 500 }).toContain(text);

  it('shows a running bead by the summary, details, current details and activity summaries its workflow writes', async () => {
    await onPage('bead-detail', async (page) => {
      await workflowPage(page, beadWorkflowId('login-ui'));
      await page.getByText('User Metadata', { exact: true }).click();
      await showsEventually(page, 'bead login-ui (convoy login): Login form');
      await showsEventually(page, 'A form that posts to /login.');
      // Current details are markdown: "**in_progress** — waiting for …", rendered bold.
      await showsEventually(page, 'in_progress — waiting for gt done from run login-ui/r1/a1');
      await showsEventually(page, 'supervise agent run login-ui/r1/a1');
    });
  });

  it("shows a bead's title memo", async () => {
    await onPage('bead-memo', async (page) => {
      await workflowPage(page, beadWorkflowId('login-ui'));
      await page.getByText('Memo', { exact: true }).click();
      await showsEventually(page, '"title": "Login form"');
      await showsEventually(page, '"convoyId": "login"');
    });
  });

  it('shows a convoy by its summary and current counts', async () => {
    await onPage('convoy-detail', async (page) => {
      await workflowPage(page, convoyWorkflowId('login'));
      await page.getByText('User Metadata', { exact: true }).click();
      await showsEventually(page, 'convoy login: Login flow (2 beads, review-and-merge)');
      // "1/2 merged, 1 running": the UI's markdown typesets 1/2 as a fraction, so only the rest is matched as text.
      await showsEventually(page, 'merged, 1 running');
      await showsEventually(page, 'waiting for 1 running bead(s) to merge');
    });
  });
});

describe('the saved queries of docs/web-ui.md', () => {
  let connection: Connection;
  beforeAll(async () => {
    connection = await Connection.connect({ address: temporalAddress() });
  });
  afterAll(async () => {
    await connection?.close();
  });

  it('are all valid queries over the registered search attributes', async () => {
    const doc = readFileSync(join(repoRoot, 'docs', 'web-ui.md'), 'utf8');
    const section = doc.split('## Saved queries')[1]!.split('\n## ')[0]!;
    const queries = [...section.matchAll(/^\| [^|]+ \| `([^`]+)` \|$/gm)].map((m) => m[1]!);
    expect(queries.length).toBeGreaterThanOrEqual(10);
    const client = new TemporalClient({ connection, namespace: inject('temporalNamespace') });
    for (const query of queries) {
      await expect(
        client.workflow.count(query).then((r) => typeof r.count),
        query,
      ).resolves.toBe('number');
    }
  });
});
