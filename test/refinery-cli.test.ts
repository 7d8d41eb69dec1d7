/** `gt mq` and the refinery's `gt rig add` flags, through the real CLI against a real town. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo } from './helpers/repo';
import { runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

describe('gt mq', () => {
  it('shows, pauses and resumes a rig’s merge queue', async () => {
    const repo = await createRepo();
    const added = await runGt(
      ['rig', 'add', 'mq-cli', '--repo', repo.origin, '--batch-size', '4', '--json'],
      t.cliEnv(),
    );
    expect(added.code).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ name: 'mq-cli', batchSize: 4 });

    const shown = await runGt(['mq', 'mq-cli'], t.cliEnv());
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(
      'refinery:mq-cli  merged 0, sent back 0, pull requests 0, gate runs 0  (batches of up to 4)',
    );
    expect(shown.stdout).toContain('merging  (nothing)');

    const paused = await runGt(['mq', 'mq-cli', 'pause'], t.cliEnv());
    expect(paused.code).toBe(0);
    expect(paused.stdout).toContain('merge queue of mq-cli paused');
    expect(JSON.parse((await runGt(['mq', 'mq-cli', '--json'], t.cliEnv())).stdout)).toMatchObject({
      paused: true,
      queue: [],
    });
    expect((await runGt(['mq', 'mq-cli'], t.cliEnv())).stdout).toContain('PAUSED');
    expect(JSON.parse((await runGt(['mq', 'mq-cli', 'resume', '--json'], t.cliEnv())).stdout)).toMatchObject({
      paused: false,
    });
  });

  it('says what is wrong with one line and exit 1', async () => {
    expect(await runGt(['mq', 'no-such-rig'], t.cliEnv())).toMatchObject({
      code: 1,
      stderr: "gt: unknown rig 'no-such-rig' (see `gt rig list`, or add it with `gt rig add`)\n",
    });
    expect(await runGt(['mq', 'no-such-rig', 'explode'], t.cliEnv())).toMatchObject({
      code: 1,
      stderr: "gt: invalid mq action: unknown action 'explode': use show, pause or resume\n",
    });
    const repo = await createRepo();
    const pr = await runGt(['rig', 'add', 'no-github', '--repo', repo.origin, '--merge', 'pr'], t.cliEnv());
    expect(pr).toMatchObject({
      code: 1,
      stderr:
        'gt: --merge pr needs the GitHub repository: add --github-repo owner/name (or use a github.com --repo URL)\n',
    });
    expect((await t.client.workflow.count(`GtRig = 'no-github'`)).count).toBe(0);
    const batch = await runGt(['rig', 'add', 'big-batch', '--repo', repo.origin, '--batch-size', '99'], t.cliEnv());
    expect(batch.code).toBe(1);
    expect(batch.stderr).toMatch(/^gt: invalid rig: batchSize: .*32/);
  });
});
