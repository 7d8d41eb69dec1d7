/**
 * The agent gateway: the HTTP service agents speak to, so they never hold Temporal credentials.
 * A request carries its run's token; the gateway checks signature, expiry and that the body speaks only for
 * that run, then forwards to the workflow as an update whose validator rejects any run that is not current.
 * Bodies are bounded (MAX_BODY, and each text field by its schema): nothing an agent sends can make a payload that
 * Temporal refuses. A body is JSON, or form-encoded text fields (bin/gt's `gt done` through curl); an answer is JSON,
 * or its message (its error) as plain text for a request that accepts only `text/plain`.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { gatewaySocketDir, gatewaySocketPath } from '../agents/gateway-socket';
import { verifyRunToken, type RunClaims } from '../agents/run-token';
import {
  CheckpointRequest,
  DoneRequest,
  EscalateRequest,
  HandoffRequest,
  InboxRequest,
  MAX_TEXT,
  ProgressRequest,
  StepDoneRequest,
  ReviewVerdict,
} from '../domain/bead';
import {
  checkpointUpdate,
  doneUpdate,
  escalateUpdate,
  handoffUpdate,
  inboxUpdate,
  progressUpdate,
  reviewVerdictUpdate,
  stepDoneUpdate,
} from '../domain/messages';
import { printableStrings } from '../domain/caps';
import { parseOr } from '../domain/validation';
import type { DoneRuns } from '../host/done-runs';
import { type LaunchesAhead, NotTaken } from '../activities/launch-ahead';
import { gtHome } from '../host/home';
import { ProgressCoalescer } from './progress-coalescer';
import { Failure } from '../domain/failures';

export interface Gateway {
  url: string;
  /** The unix socket sandboxed and containerized agents use (GT_HOME/gateway/gateway.sock), when it could be bound. */
  socketPath?: string;
  close(): Promise<void>;
}

export interface GatewayOptions {
  client: Client;
  secret: Buffer;
  host?: string;
  port?: number;
  /** The URL agents are given (when behind NAT / in containers); defaults to the bound address. */
  publicUrl?: string;
  /** GT_HOME whose unix socket to serve as well (default: this process's GT_HOME); `false` for TCP only. */
  socketHome?: string | false;
  /** At most one progress report per run is forwarded per this interval (default PROGRESS_INTERVAL_MS). */
  progressIntervalMs?: number;
  /** Told of every run whose `gt done` its workflow accepted (the host's supervision publishes it at its exit). */
  doneRuns?: Pick<DoneRuns, 'add' | 'supervises'>;
  /** Holds the requests of an agent launched ahead of its bead until the bead's launch took it (launch-ahead.ts). */
  launchesAhead?: Pick<LaunchesAhead, 'heard'>;
}

/**
 * Far above any valid body (every text field is at most MAX_TEXT characters) and far below Temporal's 2 MB payload
 * limit: an oversized request is refused here, before it could reach a workflow.
 */
const MAX_BODY = 256 * 1024;
const TOO_LARGE = `request body over the gateway limit of ${MAX_BODY / 1024} KiB: a summary, feedback or reason is at most ${MAX_TEXT} characters (put long material in the repository and refer to it)`;

/**
 * How long a closing gateway lets requests in flight, and progress reports still waiting, reach their workflows
 * before it gives up on them (answering 503 with GATEWAY_STOPPING, dropping the reports).
 */
const GATEWAY_CLOSE_GRACE_MS = 5_000;
const GATEWAY_STOPPING =
  'the gateway is stopping (its worker is shutting down or restarting); run the command again in a moment';

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Form-encoded text fields as an object, for the route's schema; a field given twice is refused, not guessed. */
function formFields(body: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(body)) {
    if (Object.hasOwn(fields, key)) throw new HttpError(400, `form field ${JSON.stringify(key)} given twice`);
    fields[key] = value;
  }
  return fields;
}

/** Whether the request asks for its answer as plain text (bin/gt's curl); anything else gets JSON. */
const wantsText = (req: FastifyRequest) => req.headers.accept === 'text/plain';

/** An answer in the form the request asked for: a JSON object, or its message (error) as text. */
function answer(req: FastifyRequest, reply: FastifyReply, status: number, payload: unknown) {
  reply.code(status);
  if (!wantsText(req)) return reply.send(payload);
  const { message, error } = (payload ?? {}) as { message?: string; error?: string };
  return reply.type('text/plain; charset=utf-8').send(error ?? message ?? 'ok');
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const app = Fastify({ bodyLimit: MAX_BODY, logger: false });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, formFields(body as string));
    } catch (err) {
      done(err as Error);
    }
  });

  const authenticate = (req: FastifyRequest): RunClaims => {
    const header = req.headers.authorization ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    if (!token) throw new HttpError(401, 'missing bearer token (the token in the file GT_RUN_TOKEN_FILE names)');
    const check = verifyRunToken(options.secret, token, Date.now());
    if (!check.ok) throw new HttpError(401, check.reason);
    return check.claims;
  };

  /** Parses the body and binds it to the token's run: a token speaks only for its own run. */
  const bodyFor = <S extends z.ZodType>(schema: S, req: FastifyRequest, claims: RunClaims): z.output<S> => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'body must be a JSON object');
    if (body.runId !== undefined && body.runId !== claims.runId) {
      throw new HttpError(403, `token belongs to run ${claims.runId}, not ${JSON.stringify(body.runId)}`);
    }
    // Agents' text reaches operators' terminals and later prompts: no control sequences past this point.
    return parseOr(
      schema,
      { ...printableStrings(body), runId: claims.runId },
      (problem) => new HttpError(400, problem),
    );
  };

  // Aborted when a close outlasts GATEWAY_CLOSE_GRACE_MS: a call to a workflow whose worker is gone (this process's
  // stopped first, or none runs) would otherwise wait for it forever and hold the close, and the worker's exit, with it.
  const stopping = new AbortController();
  const untilStopped = <R>(call: () => Promise<R>) => options.client.withAbortSignal(stopping.signal, call);

  // An agent launched ahead of its bead is heard once its bead took it (activities/launch-ahead.ts); a close does not
  // wait for that past its grace either.
  const heard = async (runId: string) => {
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        options.launchesAhead?.heard(runId),
        new Promise<never>((_, reject) => {
          onAbort = () => reject(new HttpError(503, GATEWAY_STOPPING));
          if (stopping.signal.aborted) onAbort();
          else stopping.signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } catch (err) {
      throw err instanceof NotTaken ? new HttpError(err.later ? 503 : 409, err.message) : err;
    } finally {
      if (onAbort) stopping.signal.removeEventListener('abort', onAbort);
    }
  };

  const forward = async (claims: RunClaims, run: () => Promise<unknown>) => {
    try {
      return await untilStopped(run);
    } catch (err) {
      if (stopping.signal.aborted) throw new HttpError(503, GATEWAY_STOPPING);
      if (err instanceof WorkflowNotFoundError)
        throw new HttpError(410, `workflow ${claims.workflowId} no longer exists`);
      if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
        throw new HttpError(err.cause.type === Failure.StaleRun ? 409 : 400, err.cause.message);
      }
      throw err;
    }
  };

  const route = <S extends z.ZodType>(
    path: string,
    schema: S,
    send: (claims: RunClaims, body: z.output<S>) => Promise<unknown>,
    role?: RunClaims['role'],
  ) =>
    app.post(path, async (req: FastifyRequest, reply: FastifyReply) => {
      try {
        const claims = authenticate(req);
        if (role && claims.role !== role)
          throw new HttpError(403, `this endpoint is for ${role}s; the token is a ${claims.role}'s`);
        const body = bodyFor(schema, req, claims);
        await heard(claims.runId);
        return answer(req, reply, 200, await forward(claims, () => send(claims, body)));
      } catch (err) {
        if (err instanceof HttpError) return answer(req, reply, err.status, { error: err.message });
        req.log.error(err);
        return answer(req, reply, 502, { error: `could not reach the workflow: ${(err as Error).message}` });
      }
    });

  const handle = (claims: RunClaims) => options.client.workflow.getHandle(claims.workflowId);
  route(
    '/v1/done',
    DoneRequest,
    async (c, body) => {
      // Ours, never the agent's (its body was parsed as DoneRequest): this process supervises the run, so its host
      // times the exit grace. Same update id for the same run: a repeated gt done returns the first answer.
      const onHost = options.doneRuns?.supervises(c.runId) ? { exitGraceOnHost: true } : {};
      const reply = await handle(c).executeUpdate(doneUpdate, {
        args: [{ ...body, ...onHost }],
        updateId: `done:${c.runId}`,
      });
      // Before the agent hears the answer: an agent that waits for it and then exits finds its run here.
      if (reply.accepted) options.doneRuns?.add(c.runId);
      return reply;
    },
    'polecat',
  );
  // Coalesced per run (gateway/progress-coalescer.ts): a chatty agent cannot grow its workflow's history without bound.
  const progress = new ProgressCoalescer(options.progressIntervalMs, (runId, err) =>
    app.log.warn({ runId, err: String(err) }, 'progress report dropped'),
  );
  route(
    '/v1/progress',
    ProgressRequest,
    async (c, body) =>
      (await progress.submit(c.runId, () =>
        untilStopped(() => handle(c).executeUpdate(progressUpdate, { args: [body] })),
      )) ?? {
        accepted: true,
        runId: c.runId,
        message: `progress noted; it is recorded within ${Math.round(progress.intervalMs / 1000)} s (one report per run is recorded per interval; the newest wins)`,
      },
  );
  route('/v1/escalate', EscalateRequest, (c, body) => handle(c).executeUpdate(escalateUpdate, { args: [body] }));
  route(
    '/v1/checkpoint',
    CheckpointRequest,
    (c, body) => handle(c).executeUpdate(checkpointUpdate, { args: [body] }),
    'polecat',
  );
  route(
    '/v1/handoff',
    HandoffRequest,
    // One hand-off per run: a repeated call returns the first answer and changes nothing.
    (c, body) => handle(c).executeUpdate(handoffUpdate, { args: [body], updateId: `handoff:${c.runId}` }),
    'polecat',
  );
  route(
    '/v1/step-done',
    StepDoneRequest,
    // One report per step and run: a repeated gt step done returns the first answer and changes nothing.
    (c, body) =>
      handle(c).executeUpdate(stepDoneUpdate, { args: [body], updateId: `step-done:${c.runId}:${body.stepId}` }),
    'polecat',
  );
  route('/v1/inbox', InboxRequest, (c, body) => handle(c).executeUpdate(inboxUpdate, { args: [body] }), 'polecat');
  route(
    '/v1/review',
    ReviewVerdict,
    (c, body) => handle(c).executeUpdate(reviewVerdictUpdate, { args: [body], updateId: `review:${c.runId}` }),
    'reviewer',
  );
  app.get('/healthz', () => ({ ok: true }));

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return answer(req, reply, 413, { error: TOO_LARGE });
    if (err instanceof HttpError) return answer(req, reply, err.status, { error: err.message });
    return answer(req, reply, err.statusCode && err.statusCode < 500 ? err.statusCode : 500, { error: err.message });
  });

  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 });
  const addr = app.server.address() as AddressInfo;
  const url = options.publicUrl ?? `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  const socket =
    options.socketHome === false
      ? undefined
      : await listenOnSocket(app.routing.bind(app), options.socketHome ?? gtHome());
  return {
    url,
    socketPath: socket?.path,
    close: async () => {
      const grace = setTimeout(() => stopping.abort(), GATEWAY_CLOSE_GRACE_MS);
      try {
        await progress.close();
        await new Promise<void>((resolve) => (socket ? socket.server.close(() => resolve()) : resolve()));
        await app.close();
      } finally {
        clearTimeout(grace);
      }
    },
  };
}

/**
 * Serves the same routes on GT_HOME's unix socket. The path is stable across restarts (a restarted gateway takes it
 * over), so a sandboxed agent's GT_GATEWAY_URL stays valid; failing to bind it only costs those runtimes.
 */
async function listenOnSocket(
  routing: (req: never, res: never) => void,
  home: string,
): Promise<{ server: Server; path: string } | undefined> {
  const path = gatewaySocketPath(home);
  try {
    mkdirSync(gatewaySocketDir(home), { recursive: true, mode: 0o755 });
    rmSync(path, { force: true });
    const server = createServer((req, res) => routing(req as never, res as never));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return { server, path };
  } catch {
    return undefined;
  }
}
