/**
 * Issue 6 acceptance: the Temporal Web UI is the town's console. Headless Chromium (Debian `chromium`, driven by
 * playwright-core) opens the embedded dev server's UI, lists workflows filtered by a convoy's search attribute, and
 * finds exactly that convoy's beads, titled by their summaries. Screenshots go to test/.artifacts (always, so a
 * failure shows what the browser saw).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { Connection, Client as TemporalClient } from '@temporalio/client';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { beadWorkflowId } from '../domain/ids';
import { SA } from '../domain/search-attributes';
import { startDevServer, type DevServer } from '../provisioning/dev-server';
import { freePort } from './helpers/processes';
import { repoRoot } from './helpers/town';

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

describe.skipIf(!hasChromium)('the Temporal Web UI', () => {
  let server: DevServer;
  let client: Client;
  let browser: Browser;
  // No worker on this queue: the test is about what the UI shows, so the beads only need to exist.
  const taskQueue = `web-ui-${process.pid}`;

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await startDevServer({ uiPort: await freePort() });
    client = new TemporalClient({ connection: server.env.connection, namespace: server.namespace });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** Starts a bead workflow the way a convoy does: kind, rig, bead and convoy search attributes, title in memo and summary. */
  const startBead = (beadId: string, convoyId: string, title: string) =>
    client.workflow.start('beadWorkflow', {
      workflowId: beadWorkflowId(beadId),
      taskQueue,
      args: [{}],
      typedSearchAttributes: [
        { key: SA.kind, value: 'bead' },
        { key: SA.rig, value: 'webapp' },
        { key: SA.beadId, value: beadId },
        { key: SA.convoyId, value: convoyId },
        { key: SA.status, value: 'open' },
      ],
      memo: { title },
      staticSummary: `bead ${beadId}: ${title}`,
    });

  /** Runs `fn` on a fresh page and saves a screenshot named after the step, whatever the outcome. */
  async function onPage(name: string, fn: (page: Page) => Promise<void>): Promise<void> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      await fn(page);
    } finally {
      await page.screenshot({ path: join(ARTIFACTS, `web-ui-${name}.png`), fullPage: true }).catch(() => undefined);
      await page.close();
    }
  }

  it("lists a convoy's beads when filtered by GtConvoyId, and no other beads", async () => {
    await startBead('login-api', 'login', 'Add /login endpoint');
    await startBead('login-ui', 'login', 'Login form');
    await startBead('billing-api', 'billing', 'Invoice endpoint');
    expect((await client.workflow.count('GtConvoyId = "login"')).count).toBe(2);

    const query = encodeURIComponent('GtConvoyId="login"');
    await onPage('convoy-filter', async (page) => {
      await page.goto(`${server.uiUrl}/namespaces/${server.namespace}/workflows?query=${query}`, {
        waitUntil: 'domcontentloaded',
      });
      await page.getByText('bead:login-api').first().waitFor({ timeout: 60_000 });
      await page.getByText('bead:login-ui').first().waitFor();
      await expect.poll(() => page.getByText('bead:billing-api').count()).toBe(0);
      const body = await page.locator('body').innerText();
      expect(body).toContain('beadWorkflow');
    });
  });

  it('shows a bead workflow titled by its summary', async () => {
    await onPage('bead-detail', async (page) => {
      await page.goto(
        `${server.uiUrl}/namespaces/${server.namespace}/workflows/${encodeURIComponent(beadWorkflowId('login-ui'))}`,
        { waitUntil: 'domcontentloaded' },
      );
      await page.getByText('bead login-ui: Login form').first().waitFor({ timeout: 60_000 });
    });
  });
});

describe('the saved queries of docs/web-ui.md', () => {
  let connection: Connection;
  beforeAll(async () => {
    connection = await Connection.connect({ address: inject('temporalAddress') });
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
