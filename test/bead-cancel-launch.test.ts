/**
 * A bead cancelled while its run is being launched: the launch (one activity: the worktree, then the agent) goes on
 * after the cancel — the workflow does not wait for it — and starts the agent, which no supervision will ever watch.
 * The cancelled bead then asks the run's host to stop what is alive of the run; the host waits for the launch in
 * flight first. Real stack: a `gt worker` child process whose `git` holds the run's checkout until the test lets it go,
 * so the cancel lands inside the launch every time.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { paths } from '../host/home';
import { processExists } from './helpers/pids';
import { createRepo } from './helpers/repo';
import { temporalAddress } from './helpers/server';
import { agentScript, eventually, FAST_POLICY, runGt, workerProcesses } from './helpers/town';

const workers = workerProcesses();

/** A `git` that, while `$HOLD_DIR/hold` exists, waits at a branch checkout (the run's worktree) for `$HOLD_DIR/go`. */
function holdingGit(dir: string): string {
  const bin = join(dir, 'bin');
  const realGit = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
  execFileSync('mkdir', ['-p', bin]);
  writeFileSync(
    join(bin, 'git'),
    `#!/bin/sh
case " $* " in
*" checkout "*" -B "*)
  if [ -e "$HOLD_DIR/hold" ]; then
    touch "$HOLD_DIR/held"
    n=0
    while [ ! -e "$HOLD_DIR/go" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
  fi ;;
esac
exec ${realGit} "$@"
`,
  );
  chmodSync(join(bin, 'git'), 0o755);
  return bin;
}

describe('a bead cancelled while its agent is being launched', () => {
  it('stops the agent the launch started after the cancel: none is left running unsupervised', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gt-cancel-launch-'));
    const host = await workers.host('cancel-launch', {
      PATH: `${holdingGit(dir)}:${process.env.PATH ?? ''}`,
      HOLD_DIR: dir,
    });
    const { town } = host;
    const repo = await createRepo();
    await town.addRig({
      name: 'cl-rig',
      repo: repo.origin,
      agent: agentScript('wait-for-release'),
      env: { TEST_DIR: dir },
      policy: FAST_POLICY,
    });
    await host.start();
    writeFileSync(join(dir, 'hold'), '');
    const { handle } = await town.sling('cl-rig', { id: 'cl-1', title: 'Cancelled mid-launch' });
    await eventually(() => existsSync(join(dir, 'held')), 60_000, "the launch at its worktree's checkout");

    const cliEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: temporalAddress(),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      GT_TASK_QUEUE: host.taskQueue,
      GT_HOME: host.gtHome,
    };
    const cancelled = runGt(['bead', 'cancel', 'cl-1', '--reason', 'mid-launch'], cliEnv);
    await eventually(
      async () => (await handle.fetchHistory()).events!.some((e) => e.workflowExecutionCancelRequestedEventAttributes),
      30_000,
      'the cancel reached the bead',
    );
    // The launch goes on: its agent starts after the bead was cancelled.
    writeFileSync(join(dir, 'go'), '');
    const r = await cancelled;
    expect(r.code, r.stderr).toBe(0);
    expect((await town.beadState('cl-1')).runs.map((x) => [x.runId, x.outcome])).toEqual([['cl-1/r1/a1', 'cancelled']]);

    // The launch started the agent: the runtime's pid file, written at the spawn (the agent's own first line may never
    // run, when the host stops it at once).
    const pidFile = join(paths.runDir('cl-1/r1/a1', host.gtHome), 'pid');
    await eventually(() => existsSync(pidFile), 30_000, 'the launch started the agent');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    // Stopped by the host before the cancel returned (without that stop it would run until it exits on its own).
    expect(processExists(pid), `agent process ${pid}`).toBe(false);
    const history = (await handle.fetchHistory()).events!;
    const stops = history.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'stopRunAgent');
    expect(stops).toHaveLength(1);
  }, 180_000);
});
