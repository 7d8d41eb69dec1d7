/**
 * `gt image build`: the default agent image of the docker runtime, built on this host without any registry (a
 * debootstrap of Debian bookworm with git, nodejs and ca-certificates from the host's apt mirror, imported into the
 * engine). Machines that can pull from Docker Hub can use images/agent/Dockerfile instead.
 */
import type { Command } from 'commander';
import { DEFAULT_AGENT_IMAGE } from '../../domain/rig';
import type { ImageResult } from '../../provisioning/docker';
import { printJson } from '../output';
import { UserError } from '../errors';

/** Docker's reference grammar without a registry port: lowercase path components, an optional tag. */
const IMAGE_REF =
  /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

export async function buildImage(opts: {
  tag?: string;
  mirror?: string;
  onProgress?: (m: string) => void;
}): Promise<ImageResult> {
  const tag = opts.tag ?? DEFAULT_AGENT_IMAGE;
  if (!IMAGE_REF.test(tag) || tag.length > 255)
    throw new UserError(`invalid image tag '${tag}' (e.g. ${DEFAULT_AGENT_IMAGE})`);
  if (opts.mirror !== undefined && !/^https?:\/\/[^\s/]+/.test(opts.mirror))
    throw new UserError(
      `invalid mirror '${opts.mirror}': an http(s) URL of a Debian archive, e.g. http://deb.debian.org/debian`,
    );
  if (process.getuid?.() !== 0)
    throw new UserError(
      'building the image needs root (debootstrap chroots and creates device nodes): run it as root, or `docker build -t ' +
        tag +
        ' images/agent` where Docker Hub is reachable',
    );
  // The Docker client is loaded only for a build: `gt image --help` need not wait for it.
  const { buildAgentImage } = await import('../../provisioning/docker');
  try {
    return await buildAgentImage({ tag, mirror: opts.mirror, onProgress: opts.onProgress });
  } catch (err) {
    throw new UserError((err as Error).message);
  }
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('agent images of the docker runtime');
  image
    .command('build')
    .description(
      `build the default agent image offline: Debian bookworm (minbase) with git, nodejs and ca-certificates from the host's apt mirror, imported into the Docker Engine (needs root and a running engine; about a minute)`,
    )
    .option('--tag <image>', 'the image to create', DEFAULT_AGENT_IMAGE)
    .option('--mirror <url>', "Debian archive to build from (default: the host's apt mirror)")
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `\nWith access to Docker Hub instead:\n  docker build -t ${DEFAULT_AGENT_IMAGE} images/agent\nRigs use it with --runtime docker (their --image defaults to ${DEFAULT_AGENT_IMAGE}).`,
    )
    .action(async (o: { tag: string; mirror?: string; json?: boolean }) => {
      const result = await buildImage({
        tag: o.tag,
        mirror: o.mirror,
        onProgress: o.json ? undefined : (m) => console.error(m),
      });
      if (o.json) return printJson(result);
      console.log(
        `built ${result.tag} (${result.id.slice(0, 19)}) from a debootstrap of bookworm (${result.mirror}) in ${(result.ms / 1000).toFixed(0)}s; docker runs use it by default`,
      );
    });
}
