/** `gt codec-server`: lets the Temporal Web UI (or `temporal --codec-endpoint`) show encrypted payloads. */
import type { Command } from 'commander';
import type { AesGcmCodec } from '../../codec/aes-gcm-codec';
import { UserError } from '../errors';
import { collect, intArg } from './with-town';

const DEFAULT_ORIGINS = [
  'http://localhost:8233',
  'http://127.0.0.1:8233',
  'http://localhost:8080',
  'http://127.0.0.1:8080',
];

interface CodecServerOptions {
  port: number;
  host: string;
  allowOrigin: string[];
  token?: string;
}

export function registerCodecServerCommand(program: Command): void {
  program
    .command('codec-server')
    .description(
      "decode (and encode) the town's encrypted payloads for the Temporal Web UI: POST /decode, /encode.\nUses the town's key (GT_CODEC_KEY, GT_CODEC_KEY_FILE or $GT_HOME/codec.key); runs until Ctrl-C.",
    )
    .option('--port <n>', 'port to listen on (0 = any free port)', intArg('--port'), 8888)
    .option('--host <ip>', 'address to bind; keep it local unless an authenticating proxy is in front', '127.0.0.1')
    .option(
      '--allow-origin <url>',
      `Web UI origin allowed to call it (repeatable; '*' = any). Default: ${DEFAULT_ORIGINS.join(', ')}`,
      collect,
      [],
    )
    .option('--token <secret>', 'require `Authorization: Bearer <secret>` (default: GT_CODEC_SERVER_TOKEN, if set)')
    .addHelpText(
      'after',
      [
        '',
        'Then point the UI at it: Web UI → settings (Data Encoder) → http://127.0.0.1:8888,',
        'or for the CLI: temporal workflow show -w bead:<id> --codec-endpoint http://127.0.0.1:8888',
      ].join('\n'),
    )
    .action(async (o: CodecServerOptions) => {
      // Imported here, not by the group: the codec and its server load the Temporal packages and fastify (client/cli.ts).
      const [{ AesGcmCodec }, { loadKeyring }, { startCodecServer }, { gtHome }] = await Promise.all([
        import('../../codec/aes-gcm-codec'),
        import('../../codec/keys'),
        import('../../codec/server'),
        import('../../host/home'),
      ]);
      let codec: AesGcmCodec;
      try {
        codec = new AesGcmCodec(loadKeyring({ home: gtHome() }));
      } catch (err) {
        throw new UserError((err as Error).message);
      }
      const server = await startCodecServer({
        codecs: [codec],
        host: o.host,
        port: o.port,
        allowOrigins: o.allowOrigin.length ? o.allowOrigin : DEFAULT_ORIGINS,
        token: o.token ?? (process.env.GT_CODEC_SERVER_TOKEN || undefined),
      });
      console.log(`codec server listening on ${server.url}`);
      await new Promise<void>((resolve) => {
        for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
      });
      await server.close();
    });
}
