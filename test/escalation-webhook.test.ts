/**
 * Issue 14 acceptance (escalations notify): the town's webhook gets exactly one delivery per escalation even when it
 * answers 500 twice first (the same idempotency key on every attempt; the receiver keeps one per key); a receiver
 * that refuses an escalation for good leaves a dead letter `gt escalations` shows; the URL never enters a history.
 * A real local HTTP receiver (node:http), the real worker's activity, a real dev server.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EscalationInput, escalationStateQuery, type EscalationState } from '../domain/escalation';
import { escalationStart } from '../domain/starts';
import { eventually, runGt, startTestTown, type TestTown } from './helpers/town';

interface Attempt {
  key: string | undefined;
  body: { text: string; town: string; escalation: { id: string; reason: string; raisedAt: string } };
  answered: number;
}

/** A receiver as a real one would be: it answers 500 to the first two attempts of each key, keeps one delivery per key. */
class Receiver {
  attempts: Attempt[] = [];
  /** Idempotency key → the delivery kept. */
  deliveries = new Map<string, Attempt['body']>();
  server: Server = createServer((req, res) => void this.handle(req).then(([code]) => res.writeHead(code).end()));

  private async handle(req: IncomingMessage): Promise<[number]> {
    let raw = '';
    for await (const chunk of req) raw += String(chunk);
    const body = JSON.parse(raw) as Attempt['body'];
    const key = req.headers['idempotency-key'] as string | undefined;
    const tries = this.attempts.filter((a) => a.key === key).length;
    const answered = body.escalation.id.startsWith('gone-') ? 410 : tries < 2 ? 500 : 200;
    this.attempts.push({ key, body, answered });
    if (answered === 200 && key && !this.deliveries.has(key)) this.deliveries.set(key, body);
    return [answered];
  }
}

const receiver = new Receiver();
/** A path with a token in it, as Slack webhook URLs have: it must never appear in a workflow's history. */
const SECRET_PATH = '/hooks/T000-secret-token-b7f3';
let url: string;
let t: TestTown;

beforeAll(async () => {
  await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}${SECRET_PATH}`;
  // Injected the way operators configure it (worker/worker.ts reads it once, at start-up).
  process.env.GT_ESCALATION_WEBHOOK = url;
  try {
    t = await startTestTown();
  } finally {
    delete process.env.GT_ESCALATION_WEBHOOK;
  }
});
afterAll(async () => {
  await t?.stop();
  receiver.server.close();
});

/** Raises an escalation the way the town's activity does (a workflow per id; a repeated raise finds the first). */
async function raise(input: EscalationInput): Promise<boolean> {
  try {
    const start = escalationStart({ taskQueue: t.taskQueue, input: EscalationInput.parse(input) });
    await t.client.workflow.start(start.workflowType, start.options);
    return true;
  } catch {
    return false;
  }
}

const state = (id: string): Promise<EscalationState> =>
  t.client.workflow.getHandle(`escalation:${id}`).query(escalationStateQuery);

const Listed = z.array(
  z.object({
    id: z.string(),
    notification: z
      .object({
        status: z.enum(['delivered', 'dead-letter', 'not-configured']),
        at: z.string(),
        attempts: z.number().optional(),
        error: z.string().optional(),
      })
      .optional(),
  }),
);

describe('escalation webhook', () => {
  it('delivers each escalation exactly once though the receiver answers 500 twice first; a repeated raise sends nothing more', async () => {
    const ids = ['hook-one', 'hook-two'];
    expect(
      await raise({
        id: 'hook-one',
        severity: 'high',
        source: 'agent',
        reason: 'stuck <!channel> see <http://evil.example|docs> & more',
        rig: 'r1',
        beadId: 'b1',
      }),
    ).toBe(true);
    expect(await raise({ id: 'hook-two', severity: 'low', source: 'rig', reason: 'breaker open', rig: 'r1' })).toBe(
      true,
    );
    expect(await raise({ id: 'hook-one', severity: 'high', source: 'agent', reason: 'again' })).toBe(false);

    const delivered = await Promise.all(
      ids.map((id) =>
        eventually(
          async () => {
            const s = await state(id);
            return s.notification?.status === 'delivered' && s;
          },
          60_000,
          `delivery of ${id}`,
        ),
      ),
    );
    for (const s of delivered)
      expect(s.notification).toMatchObject({ status: 'delivered', attempts: 3, httpStatus: 200 });

    for (const id of ids) {
      const mine = receiver.attempts.filter((a) => a.body.escalation.id === id);
      // Three attempts (500, 500, 200), all with one key; the receiver kept one delivery.
      expect(mine.map((a) => a.answered)).toEqual([500, 500, 200]);
      expect(new Set(mine.map((a) => a.key)).size).toBe(1);
      expect(mine[0]!.key).toMatch(new RegExp(`^escalation:${id}/`));
      expect([...receiver.deliveries.values()].filter((b) => b.escalation.id === id)).toHaveLength(1);
    }
    const one = receiver.deliveries.get(receiver.attempts.find((a) => a.body.escalation.id === 'hook-one')!.key!)!;
    expect(one.town).toBe(t.taskQueue);
    expect(one.escalation).toMatchObject({ id: 'hook-one', severity: 'high', source: 'agent', beadId: 'b1' });
    // Slack-compatible text, with what the agent wrote unable to mention a channel or fake a link.
    expect(one.text).toMatch(/^\[high\] escalation hook-one \(agent; rig r1, bead b1\) in town /);
    expect(one.text).toContain('stuck &lt;!channel&gt; see &lt;http://evil.example|docs&gt; &amp; more');
    expect(one.text).not.toContain('<!channel>');

    // The URL is the worker's configuration: nowhere in the escalation's history.
    const history = JSON.stringify(await t.client.workflow.getHandle('escalation:hook-one').fetchHistory());
    expect(history).not.toContain(SECRET_PATH);
    expect(history).not.toContain('secret-token');
  });

  it('a receiver that refuses an escalation for good leaves a dead letter that `gt escalations` shows', async () => {
    expect(await raise({ id: 'gone-one', severity: 'medium', source: 'convoy', reason: 'nobody listens' })).toBe(true);
    const s = await eventually(
      async () => {
        const x = await state('gone-one');
        return x.notification && x;
      },
      60_000,
      'the dead letter',
    );
    expect(s.notification).toMatchObject({ status: 'dead-letter', error: 'the escalation webhook answered 410 Gone' });
    expect(receiver.attempts.filter((a) => a.body.escalation.id === 'gone-one')).toHaveLength(1);

    const json = await runGt(['escalations', '--json'], t.cliEnv());
    expect(json.code).toBe(0);
    const listed = Listed.parse(JSON.parse(json.stdout));
    expect(listed.find((e) => e.id === 'gone-one')?.notification?.status).toBe('dead-letter');
    expect(listed.find((e) => e.id === 'hook-two')?.notification).toMatchObject({ status: 'delivered', attempts: 3 });
    const text = await runGt(['escalations'], t.cliEnv());
    expect(text.stdout).toMatch(/gone-one .*DEAD LETTER/);
    expect(text.stdout).toMatch(/^dead letter {2}gone-one: the escalation webhook answered 410 Gone$/m);
    expect(text.stdout).toMatch(/hook-two .*sent \(3 tries\)/);

    // Acknowledged, the escalation ends with its delivery record complete.
    expect((await runGt(['escalation', 'ack', 'gone-one', '--note', 'seen'], t.cliEnv())).code).toBe(0);
    const ended = (await t.client.workflow.getHandle('escalation:gone-one').result()) as EscalationState;
    expect(ended).toMatchObject({ status: 'acknowledged', notification: { status: 'dead-letter' } });
  });
});
