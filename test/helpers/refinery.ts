/**
 * Merge requests without polecats, for refinery tests: branches pushed straight to a test repository, and
 * `mr:<bead>:<round>` workflows started directly, exactly as a bead would start them. Plus gate scripts that
 * record what they gated and detect overlapping merge sections.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { mergeRequestWorkflowId, refineryWorkflowId } from '../../domain/ids';
import { pauseRefineryUpdate, refineryStateQuery } from '../../domain/messages';
import { MergeTicket, type RefineryState } from '../../domain/refinery';
import type { RigConfig } from '../../domain/rig';
import { mergeRequestStart } from '../../domain/starts';
import type { mergeRequestWorkflow } from '../../workflows/merge-request';
import type { TestTown } from './town';
import { eventually } from './town';

const run = promisify(execFile);
const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Polecat',
  GIT_AUTHOR_EMAIL: 'p@test',
  GIT_COMMITTER_NAME: 'Polecat',
  GIT_COMMITTER_EMAIL: 'p@test',
};
export const git = async (cwd: string, args: string[]) => (await run('git', args, { cwd, env: gitEnv })).stdout.trim();

/** Pushes a branch made of one commit on top of `base` that writes `files`; returns its head sha. */
export async function pushBranch(
  origin: string,
  branch: string,
  files: Record<string, string>,
  base = 'main',
): Promise<string> {
  const work = mkdtempSync(join(tmpdir(), 'gt-branch-'));
  await git(work, ['clone', '-q', origin, '.']);
  await git(work, ['checkout', '-q', '-B', branch, `origin/${base}`]);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(work, p, '..'), { recursive: true });
    writeFileSync(join(work, p), content);
  }
  await git(work, ['add', '-A']);
  await git(work, ['commit', '-q', '-m', `work on ${branch}`]);
  await git(work, ['push', '-q', '-f', 'origin', `HEAD:refs/heads/${branch}`]);
  return git(work, ['rev-parse', 'HEAD']);
}

/** The ticket of a bead's first round for `branch` gt/<bead> onto main, as a merge activity takes it. */
export const firstRoundTicket = (beadId: string, headSha: string): MergeTicket =>
  MergeTicket.parse({
    mrId: `mr:${beadId}:1`,
    beadId,
    round: 1,
    title: beadId,
    branch: `gt/${beadId}`,
    headSha,
    targetBranch: 'main',
    enqueuedAt: 0,
  });

export interface DirectMr {
  beadId: string;
  round?: number;
  priority?: number;
  files: Record<string, string>;
}

/** Starts the merge request workflow of a bead round for a branch that was pushed directly. */
export async function startMergeRequest(
  t: TestTown,
  rig: RigConfig,
  mr: DirectMr,
): Promise<WorkflowHandle<typeof mergeRequestWorkflow>> {
  const round = mr.round ?? 1;
  const branch = `gt/${mr.beadId}`;
  const headSha = await pushBranch(rig.repo, branch, mr.files);
  const start = mergeRequestStart({
    mrId: mergeRequestWorkflowId(mr.beadId, round),
    bead: { id: mr.beadId, title: `work of ${mr.beadId}`, priority: mr.priority ?? 2 },
    rig,
    round,
    branch,
    headSha,
    targetBranch: rig.branch,
  });
  return t.client.workflow.start<typeof mergeRequestWorkflow>(start.workflowType, {
    ...start.options,
    taskQueue: t.taskQueue,
  });
}

/**
 * Starts a merge request and waits until the rig's (paused) refinery holds it, so MRs started one after another
 * are queued in that order: each MR enqueues itself from its own workflow, and two started back to back may
 * otherwise reach the queue in either order.
 */
export async function startQueuedMergeRequest(
  t: TestTown,
  rig: RigConfig,
  mr: DirectMr,
): Promise<WorkflowHandle<typeof mergeRequestWorkflow>> {
  const handle = await startMergeRequest(t, rig, mr);
  const mrId = mergeRequestWorkflowId(mr.beadId, mr.round ?? 1);
  await eventually(
    async () => ((await refineryState(t, rig.name)).queue.some((q) => q.mrId === mrId) ? true : undefined),
    60_000,
    `${mrId} queued on ${rig.name}`,
  );
  return handle;
}

export const refinery = (t: TestTown, rig: string) => t.client.workflow.getHandle(refineryWorkflowId(rig));
export const refineryState = (t: TestTown, rig: string): Promise<RefineryState> =>
  refinery(t, rig).query(refineryStateQuery);
export const pauseRefinery = (t: TestTown, rig: string, paused: boolean) =>
  refinery(t, rig).executeUpdate(pauseRefineryUpdate, { args: [{ paused }] });
export const waitForQueue = (t: TestTown, rig: string, length: number) =>
  eventually(
    async () => ((await refineryState(t, rig)).queue.length === length ? true : undefined),
    60_000,
    `${length} MRs queued on ${rig}`,
  );

/**
 * A gate script for the bors-rule tests. It takes a lock directory shared by all gate runs of the rig and records
 * an overlap if it is already held (two merge sections at once), records `<tree> <pass|fail> <mr ids>` for every
 * run, fails when the tree holds a file named `BROKEN`, and optionally moves the target branch on its first run.
 */
export function recordingGate(dir: string, options: { moveTargetOnce?: string } = {}): string {
  const script = join(dir, 'gate.sh');
  writeFileSync(
    script,
    `#!/bin/sh
set -u
if ! mkdir "${dir}/lock" 2>/dev/null; then echo "$GT_MR_IDS" >> "${dir}/overlap"; exit 1; fi
tree=$(git rev-parse HEAD^{tree})
sleep 0.2
${
  options.moveTargetOnce
    ? `if [ ! -f "${dir}/moved" ]; then
  touch "${dir}/moved"
  tmp=$(mktemp -d) && git clone -q "${options.moveTargetOnce}" "$tmp" && (cd "$tmp" && echo external > external.txt && git add external.txt && git -c user.name=Someone -c user.email=s@test commit -q -m "external change" && git push -q origin HEAD:main)
fi`
    : ''
}
if find . -name BROKEN -not -path './.git/*' | grep -q .; then result=fail; else result=pass; fi
echo "$tree $result $GT_MR_IDS" >> "${dir}/gates.log"
rmdir "${dir}/lock"
echo "gate saw tree $tree: $result"
[ "$result" = pass ]
`,
  );
  chmodSync(script, 0o755);
  return script;
}

export interface GateRecord {
  tree: string;
  result: 'pass' | 'fail';
  mrIds: string[];
}

export function gateRecords(dir: string): GateRecord[] {
  const file = join(dir, 'gates.log');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [tree, result, ...mrIds] = line.split(' ');
      return { tree: tree!, result: result as 'pass' | 'fail', mrIds };
    });
}

/** Commits of the target's first-parent history after `since` (oldest first), with their trees and parent counts. */
export async function firstParentHistory(origin: string, since: string, branch = 'main') {
  const out = await git(origin, ['log', '--first-parent', '--reverse', '--format=%H %T %P', `${since}..${branch}`]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [sha, tree, ...parents] = l.split(' ');
      return { sha: sha!, tree: tree!, parents };
    });
}

/** The merge requests landed on the branch, oldest first (a batch's merge commit names its MRs in queue order). */
export const landedInOrder = async (origin: string, branch = 'main') =>
  (await git(origin, ['log', '--reverse', '--format=%(trailers:key=Gt-Merge-Request,valueonly)', branch]))
    .split('\n')
    .filter(Boolean)
    .map((tr) => tr.split('@')[0]!);

export const trailersOf = async (origin: string, branch = 'main') =>
  (await git(origin, ['log', '--format=%(trailers:key=Gt-Merge-Request,valueonly)', branch]))
    .split('\n')
    .filter(Boolean);

/** Makes the (bare) origin keep a reflog, so a test can see every value its target branch ever held. */
export const recordTargetMoves = (origin: string) => git(origin, ['config', 'core.logAllRefUpdates', 'always']);

/** Trees the branch held, from the reflog (needs recordTargetMoves before the first move). */
export async function targetTreesHeld(origin: string, branch = 'main'): Promise<string[]> {
  const out = await git(origin, ['log', '-g', '--format=%T', `refs/heads/${branch}`]);
  return out.split('\n').filter(Boolean);
}
