/**
 * `npm run record-histories`: runs real scenarios on a fresh dev server and saves their workflow histories under
 * test/histories/, which the suite replays (test/replay.test.ts) so a change that would break running workflows
 * fails CI. Re-record only for a deliberate, compatible change of recorded behaviour; guard the rest with patched(),
 * and before re-recording move the current files into a subdirectory named after the change, so the old branches
 * of patched() code keep replaying. `-- --only a,b` (re)records just those scenarios and leaves the other files
 * as they are: for adding a scenario of new behaviour without re-recording the old ones.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { cancelBead, retryBead } from '../client/beads';
import { ConvoyClient } from '../client/convoys';
import { removeRig } from '../client/rig-removal';
import { decideStep } from '../client/steps';
import { formulaOf, Town } from '../client/town';
import { beadStart } from '../domain/starts';
import { mergeRequestStateQuery, pauseRefineryUpdate, refineryStateQuery } from '../domain/messages';
import { startDevServer } from '../provisioning/dev-server';
import { createTownWorker } from '../worker/worker';
import { startOtherWorker } from '../test/helpers/other-worker';
import { createRepo } from '../test/helpers/repo';

Runtime.install({ logger: new DefaultLogger('WARN') });
const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'test', 'histories');
const agent = (name: string) => join(root, 'test', 'agents', `${name}.sh`);
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg >= 0 ? new Set((process.argv[onlyArg + 1] ?? '').split(',').filter(Boolean)) : undefined;
const fast = {
  startTimeout: 30_000,
  heartbeatTimeout: 10_000,
  stallTimeout: 60_000,
  retryBackoff: 200,
  maxAttempts: 2,
  maxRounds: 2,
};

process.env.GT_HOME = mkdtempSync(join(tmpdir(), 'gt-record-'));
const testDir = mkdtempSync(join(tmpdir(), 'gt-record-test-'));
const server = await startDevServer({ onProgress: (m) => console.error(m) });
const client = new Client({ connection: server.env.connection, namespace: server.namespace });
const worker = await createTownWorker({
  connection: server.env.nativeConnection,
  namespace: server.namespace,
  taskQueue: 'record',
  gateway: { port: 0 },
  pollIntervalMs: 200,
});
const running = worker.run();
try {
  const town = new Town(client, 'record');
  /** Slings `<rig>-<x>` beads while the rig's refinery is paused, so their MRs meet in the queue; waits for them all. */
  const slingQueued = async (rig: string, names: string[], title: string) => {
    const refinery = client.workflow.getHandle(`refinery:${rig}`);
    while (!(await refinery.query(refineryStateQuery).catch(() => undefined)))
      await new Promise((r) => setTimeout(r, 100));
    await refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: true }] });
    const beads = await Promise.all(names.map((x) => town.sling(rig, { id: `${rig}-${x}`, title: `${title} ${x}` })));
    while ((await refinery.query(refineryStateQuery)).queue.length < beads.length)
      await new Promise((r) => setTimeout(r, 200));
    await refinery.executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] });
    for (const b of beads) console.error(`${b.beadId}: ${(await b.handle.result()).status}`);
  };
  const repo = await createRepo();
  await town.addRig({ name: 'rec', repo: repo.origin, agent: agent('good'), gates: ['test -d work'], policy: fast });
  await town.addRig({
    name: 'rec-crash',
    repo: repo.origin,
    agent: agent('crash-first'),
    env: { TEST_DIR: testDir },
    policy: fast,
  });
  await town.addRig({ name: 'rec-fail', repo: repo.origin, agent: agent('exit-without-done'), policy: fast });
  const beads = await Promise.all([
    town.sling('rec', { id: 'rec-merged', title: 'A bead that merges' }),
    town.sling('rec-crash', { id: 'rec-retried', title: 'A bead whose first attempt crashes' }),
    town.sling('rec-fail', { id: 'rec-failed', title: 'A bead that fails and escalates' }),
  ]);
  await town.addRig({
    name: 'rec-review',
    repo: repo.origin,
    agent: agent('good'),
    reviewer: agent('reviewer-picky'),
    env: { TEST_DIR: testDir },
    policy: fast,
  });
  const reviewed = await town.sling('rec-review', { id: 'rec-reviewed', title: 'A bead reviewed twice' });
  for (const b of [...beads, reviewed]) console.error(`${b.beadId}: ${(await b.handle.result()).status}`);
  await town.ackEscalation('bead-rec-failed', { by: 'recorder', note: 'recorded' });

  // The operator raises the rig's capacity: its dispatch gate is told and reads the rig again (before the convoy's beads).
  await town.updateRig('rec', { maxPolecats: 3 });

  const convoys = new ConvoyClient(town);
  const diamond = {
    title: 'Recorded diamond',
    rig: 'rec',
    mergeMode: 'review-then-land',
    beads: [
      { id: 'a', title: 'Base' },
      { id: 'b', title: 'Left', dependsOn: ['a'] },
      { id: 'c', title: 'Right', dependsOn: ['a'] },
      { id: 'd', title: 'Top', dependsOn: ['b', 'c'] },
    ],
  };
  const { convoyId } = await convoys.start(diamond, { id: 'rec-diamond' });
  console.error(`convoy ${convoyId}: ${JSON.stringify(await convoys.result(convoyId))}`);

  // An operator cancels a bead mid-run with a reason (the requestCancel update, then the cancellation).
  await town.addRig({
    name: 'rec-hold',
    repo: repo.origin,
    agent: agent('wait-for-release'),
    env: { TEST_DIR: testDir },
    policy: fast,
  });
  const held = await town.sling('rec-hold', { id: 'rec-cancelled', title: 'A bead cancelled mid-run' });
  while (!(await town.beadState(held.beadId)).waitingFor.startsWith('waiting for gt done'))
    await new Promise((r) => setTimeout(r, 200));
  console.error(
    `rec-cancelled: ${(await cancelBead(town, held.beadId, { reason: 'recorded cancellation', by: 'recorder' })).bead.status}`,
  );
  // A bead cancelled while its merge request's reviewer runs (the merge request ends once that agent is stopped).
  await town.addRig({
    name: 'rec-review-hold',
    repo: repo.origin,
    agent: agent('good'),
    reviewer: agent('reviewer-wait'),
    env: { TEST_DIR: mkdtempSync(join(tmpdir(), 'gt-record-review-')) },
    policy: fast,
  });
  const inReview = await town.sling('rec-review-hold', { id: 'rec-review-cancelled', title: 'Cancelled in review' });
  const inReviewMr = client.workflow.getHandle('mr:rec-review-cancelled:1');
  while (
    !(await inReviewMr.query(mergeRequestStateQuery).catch(() => undefined))?.waitingFor.startsWith(
      'waiting for the verdict',
    )
  )
    await new Promise((r) => setTimeout(r, 200));
  console.error(
    `rec-review-cancelled: ${(await cancelBead(town, inReview.beadId, { reason: 'recorded in review', by: 'recorder' })).bead.status}`,
  );
  // A rig that merged one bead and was removed (the removeRig update ends its refinery).
  await town.addRig({ name: 'rec-removed', repo: repo.origin, agent: agent('good'), policy: fast });
  const last = await town.sling('rec-removed', { id: 'rec-last', title: 'The last bead of a removed rig' });
  console.error(`rec-last: ${(await last.handle.result()).status}`);
  console.error(`rec-removed: removed ${(await removeRig(town, 'rec-removed')).removed}`);

  // A rig updated (`gt rig update`: the refinery takes the update and writes the new configuration to its memo),
  // then merging a bead under it.
  await town.addRig({ name: 'rec-updated', repo: repo.origin, agent: agent('good'), policy: fast });
  await town.updateRig('rec-updated', { maxPolecats: 2 });
  const updated = await town.sling('rec-updated', {
    id: 'rec-after-update',
    title: 'A bead merged after a rig update',
  });
  console.error(`rec-after-update: ${(await updated.handle.result()).status}`);

  // Retries (docs/operations.md "gt bead retry"): a standalone bead retried after it failed (its agent fails again);
  // a convoy that ended failed and was reopened by a retry; a running convoy taking a retry as an update.
  const again = await town.sling('rec-fail', { id: 'rec-failed-retried', title: 'A bead retried after it failed' });
  console.error(`rec-failed-retried: ${(await again.handle.result()).status}`);
  await retryBead(town, 'rec-failed-retried', { note: 'recorded retry', by: 'recorder' });
  console.error(`rec-failed-retried (retry 1): ${(await town.beadResult('rec-failed-retried')).status}`);
  await town.addRig({
    name: 'rec-flaky',
    repo: repo.origin,
    agent: agent('fail-until-retried'),
    env: { TEST_DIR: testDir, FLAKY_BEADS: 'c', FAIL_TIMES: '2', HOLD_BEADS: 'hold' },
    policy: fast,
  });
  await convoys.start(
    {
      title: 'Recorded reopened convoy',
      rig: 'rec-flaky',
      beads: [
        { id: 'a', title: 'First' },
        { id: 'c', title: 'Flaky', dependsOn: ['a'] },
        { id: 'd', title: 'After c', dependsOn: ['c'] },
      ],
    },
    { id: 'rec-reopened' },
  );
  console.error(`convoy rec-reopened: ${(await convoys.result('rec-reopened'))?.status}`);
  await retryBead(town, 'rec-reopened-c', { by: 'recorder' });
  console.error(`convoy rec-reopened after the retry: ${(await convoys.result('rec-reopened'))?.status}`);
  await convoys.start(
    {
      title: 'Recorded live retry',
      rig: 'rec-flaky',
      beads: [
        { id: 'hold', title: 'Held' },
        { id: 'c', title: 'Flaky' },
        { id: 'd', title: 'After c', dependsOn: ['c'] },
      ],
    },
    { id: 'rec-live' },
  );
  while ((await convoys.state('rec-live')).beads.find((b) => b.id === 'c')?.status !== 'failed')
    await new Promise((r) => setTimeout(r, 200));
  await retryBead(town, 'rec-live-c', { by: 'recorder' });
  while ((await convoys.state('rec-live')).beads.find((b) => b.id === 'd')?.status !== 'closed')
    await new Promise((r) => setTimeout(r, 200));
  writeFileSync(join(testDir, 'release'), '');
  console.error(`convoy rec-live: ${(await convoys.result('rec-live'))?.status}`);
  // Formulas: careful (its pre-verify gate fails once and loops back to implement), and review-only approved by a human.
  await town.addRig({
    name: 'rec-formula',
    repo: repo.origin,
    agent: agent('formula-step'),
    env: { FORMULA_MARKS: mkdtempSync(join(tmpdir(), 'gt-record-marks-')) },
    gates: ['! grep -rq broken work'],
    policy: fast,
  });
  const careful = await town.sling('rec-formula', { id: 'rec-careful', title: 'A careful bead', formula: 'careful' });
  console.error(`rec-careful: ${(await careful.handle.result()).status}`);
  const reviewOnly = await town.sling('rec-formula', {
    id: 'rec-approved',
    title: 'A reviewed and approved bead',
    formula: 'review-only',
  });
  while ((await town.beadState(reviewOnly.beadId)).steps?.find((s) => s.id === 'accept')?.state !== 'waiting')
    await new Promise((r) => setTimeout(r, 200));
  await decideStep(town, reviewOnly.beadId, { stepId: 'accept', verdict: 'approve', note: 'recorded', by: 'recorder' });
  console.error(`rec-approved: ${(await reviewOnly.handle.result()).status}`);
  // explore: three legs at once (the rig takes three polecats), then the synthesis, whose branch merges.
  await town.addRig({
    name: 'rec-explore',
    repo: repo.origin,
    agent: agent('formula-step'),
    env: { FORMULA_MARKS: mkdtempSync(join(tmpdir(), 'gt-record-marks-')) },
    gates: ['test -d work'],
    maxPolecats: 3,
    policy: fast,
  });
  const explore = await town.sling('rec-explore', { id: 'rec-explore', title: 'An explored bead', formula: 'explore' });
  console.error(`rec-explore: ${(await explore.handle.result()).status}`);
  // A step's own agent command and timeout; and session = "single" (its first run dies after one step, the second
  // goes on from the checklist), from formulas in the town's GT_HOME.
  const formulas = join(process.env.GT_HOME, 'formulas');
  mkdirSync(formulas, { recursive: true });
  writeFileSync(
    join(formulas, 'own-agent.toml'),
    `name = "own-agent"\nversion = 1\n[[steps]]\nid = "plan"\ntitle = "plan"\nkind = "agent"\nagent = "FORMULA_AGENT=planner sh '${agent('formula-step')}'"\ntimeout = "10m"\nprompt = "Plan {{bead.title}}"\n[[steps]]\nid = "implement"\ntitle = "implement"\nkind = "agent"\nneeds = ["plan"]\nprompt = "Implement: {{steps.plan.output}}"\n`,
  );
  writeFileSync(
    join(formulas, 'walk.toml'),
    `name = "walk"\nversion = 1\nsession = "single"\n[[steps]]\nid = "plan"\ntitle = "plan"\nkind = "agent"\nprompt = "Plan {{bead.title}}"\n[[steps]]\nid = "implement"\ntitle = "implement"\nkind = "agent"\nneeds = ["plan"]\nprompt = "Implement: {{steps.plan.output}}"\n`,
  );
  await town.addRig({
    name: 'rec-own',
    repo: repo.origin,
    agent: agent('formula-step'),
    env: { FORMULA_MARKS: mkdtempSync(join(tmpdir(), 'gt-record-marks-')) },
    gates: ['test -d work'],
    policy: fast,
  });
  const ownAgent = await town.sling('rec-own', { id: 'rec-own-agent', title: 'Own agent', formula: 'own-agent' });
  console.error(`rec-own-agent: ${(await ownAgent.handle.result()).status}`);
  await town.addRig({
    name: 'rec-walk',
    repo: repo.origin,
    agent: agent('formula-walk'),
    env: { FORMULA_MARKS: mkdtempSync(join(tmpdir(), 'gt-record-marks-')), WALK_CRASH_AFTER: 'plan' },
    gates: ['test -d work'],
    policy: fast,
  });
  const walk = await town.sling('rec-walk', { id: 'rec-walk', title: 'A walked bead', formula: 'walk' });
  console.error(`rec-walk: ${(await walk.handle.result()).status}`);
  // careful past a low history threshold: it continues as new between its steps (the first run hands over, the last
  // goes on from the carried position and merges); and careful failing at self-review, then retried (it resumes there).
  const canRig = await town.addRig({
    name: 'rec-can',
    repo: repo.origin,
    agent: agent('formula-step'),
    env: { FORMULA_MARKS: mkdtempSync(join(tmpdir(), 'gt-record-marks-')) },
    gates: ['test -d work'],
    policy: fast,
  });
  const canStart = beadStart({
    taskQueue: 'record',
    input: {
      bead: { id: 'rec-continued', title: 'A careful bead over several histories' },
      rig: canRig,
      formula: formulaOf(canRig, 'careful', undefined),
      continueAsNewAfterEvents: 20,
    },
  });
  const continued = await client.workflow.start(canStart.workflowType, canStart.options);
  console.error(`rec-continued: ${(await town.beadResult('rec-continued')).status}`);
  const retriedMarks = mkdtempSync(join(tmpdir(), 'gt-record-marks-'));
  await town.addRig({
    name: 'rec-fretry',
    repo: repo.origin,
    agent: agent('formula-step'),
    env: { FORMULA_MARKS: retriedMarks, FORMULA_FAIL: 'self-review' },
    gates: ['test -d work'],
    policy: { ...fast, maxAttempts: 1 },
  });
  const failing = await town.sling('rec-fretry', {
    id: 'rec-formula-retried',
    title: 'A careful bead retried',
    formula: 'careful',
  });
  console.error(`rec-formula-retried: ${(await failing.handle.result()).status}`);
  writeFileSync(join(retriedMarks, 'fixed'), '');
  await retryBead(town, 'rec-formula-retried', { note: 'recorded retry', by: 'recorder' });
  console.error(`rec-formula-retried (retry 1): ${(await town.beadResult('rec-formula-retried')).status}`);

  // A speculative merge queue (speculation 3): four MRs gated on stacked candidates at once, the second one failing
  // its gate (sent back, the ones behind it rebuilt without it; its rework fails again and the bead fails).
  await town.addRig({
    name: 'rec-spec',
    repo: repo.origin,
    agent: agent('good'),
    gates: ['test -d work && test ! -f work/rec-spec-b.txt'],
    speculation: 3,
    policy: fast,
  });
  await slingQueued('rec-spec', ['a', 'b', 'c', 'd'], 'Speculative');

  // A batching merge queue (batch 4): four MRs gated as one candidate that fails on the third; bisection lands the
  // first two, finds the culprit (sent back; its rework fails again and the bead fails) and lands the fourth.
  await town.addRig({
    name: 'rec-batch',
    repo: repo.origin,
    agent: agent('good'),
    gates: ['test -d work && test ! -f work/rec-batch-c.txt'],
    batchSize: 4,
    policy: fast,
  });
  await slingQueued('rec-batch', ['a', 'b', 'c', 'd'], 'Batched');

  // A batch whose second MR conflicts with its first: it waits for the first to land, is built again on its own and
  // sent back with the conflict against what the target then holds; its rework merges the target in and lands.
  const clashRepo = await createRepo({ 'shared.txt': 'base\n' });
  await town.addRig({
    name: 'rec-clash',
    repo: clashRepo.origin,
    agent: agent('refinery-conflict'),
    batchSize: 4,
    policy: fast,
  });
  await slingQueued('rec-clash', ['a', 'b'], 'Clashing');

  // A bead whose run's branch the refinery merged before the bead's own import: another worker's gateway accepted its
  // gt done, and that worker's supervision attempt (one the server gave up on) handed the ticket over unheard.
  const otherWorker = await startOtherWorker(client, process.env.GT_HOME);
  const exitFile = join(testDir, 'merged-first-exit');
  const mergedFirstRig = await town.addRig({
    name: 'rec-merged-first',
    repo: repo.origin,
    agent: agent('done-elsewhere'),
    env: { OTHER_GATEWAY_URL: otherWorker.url, HOLD_UNTIL: exitFile },
    policy: fast,
  });
  const mergedFirst = await town.sling('rec-merged-first', { id: 'rec-merged-first', title: 'Merged first' });
  while (!otherWorker.seen.take('rec-merged-first/r1/a1')) await new Promise((r) => setTimeout(r, 100));
  const handed = await otherWorker.handOverUnheard('record', mergedFirstRig, 'rec-merged-first', 'Merged first');
  const trailer = `Gt-Merge-Request: ${handed.mrId}@${handed.headSha}`;
  while (!(await repo.log()).some((c) => c.body.includes(trailer))) await new Promise((r) => setTimeout(r, 200));
  writeFileSync(exitFile, '');
  console.error(`rec-merged-first: ${(await mergedFirst.handle.result()).status}`);
  await otherWorker.close();

  // A convoy's bead queued by the gate in its launch (launchRunWhenGranted answers queued): a bead slung on its own
  // holds the rig's only slot; the convoy's bead launches its run with launchRun once the grant comes.
  const queuedDir = mkdtempSync(join(tmpdir(), 'gt-record-queued-'));
  await town.addRig({
    name: 'rec-queued',
    repo: repo.origin,
    agent: agent('wait-for-release'),
    maxPolecats: 1,
    env: { TEST_DIR: queuedDir },
    policy: fast,
  });
  const holder = await town.sling('rec-queued', { id: 'rec-queue-holder', title: 'Holds the only slot' });
  while (!(await town.beadState(holder.beadId)).waitingFor.startsWith('waiting for gt done'))
    await new Promise((r) => setTimeout(r, 200));
  await convoys.start(
    { title: 'Recorded queued launch', rig: 'rec-queued', beads: [{ id: 'b', title: 'Queued in its launch' }] },
    { id: 'rec-queued' },
  );
  // The convoy starts its bead in a workflow task of its own: until then there is no history to read.
  const launchAnswered = () =>
    client.workflow
      .getHandle('bead:rec-queued-b')
      .fetchHistory()
      .then((h) => (h.events ?? []).some((e) => e.activityTaskCompletedEventAttributes))
      .catch(() => false);
  while (!(await launchAnswered())) await new Promise((r) => setTimeout(r, 200));
  writeFileSync(join(queuedDir, 'release'), '');
  console.error(`rec-queue-holder: ${(await holder.handle.result()).status}`);
  console.error(`convoy rec-queued: ${(await convoys.result('rec-queued'))?.status}`);

  /** name → workflow id (its latest run), or [workflow id, run id]. */
  const scenarios: Record<string, string | [string, string]> = {
    'bead-formula-continued-first': ['bead:rec-continued', continued.firstExecutionRunId],
    'bead-formula-continued': 'bead:rec-continued',
    'bead-formula-retried': 'bead:rec-formula-retried',
    'bead-formula-careful': 'bead:rec-careful',
    'bead-formula-approved': 'bead:rec-approved',
    'bead-formula-explore': 'bead:rec-explore',
    'bead-formula-own-agent': 'bead:rec-own-agent',
    'bead-formula-single': 'bead:rec-walk',
    'bead-merged': 'bead:rec-merged',
    'bead-merged-before-import': 'bead:rec-merged-first',
    'bead-retried': 'bead:rec-retried',
    'bead-failed': 'bead:rec-failed',
    'merge-request-merged': 'mr:rec-merged:1',
    refinery: 'refinery:rec',
    'escalation-acknowledged': 'escalation:bead-rec-failed',
    'merge-request-changes-requested': 'mr:rec-reviewed:1',
    'bead-reviewed': 'bead:rec-reviewed',
    'convoy-review-then-land': 'convoy:rec-diamond',
    'bead-in-convoy': 'bead:rec-diamond-d',
    'bead-queued-in-launch': 'bead:rec-queued-b',
    'dispatch-gate': 'dispatch:rec',
    'bead-cancelled': 'bead:rec-cancelled',
    'merge-request-cancelled-in-review': 'mr:rec-review-cancelled:1',
    'refinery-removed': 'refinery:rec-removed',
    'refinery-updated': 'refinery:rec-updated',
    'refinery-speculative': 'refinery:rec-spec',
    'refinery-batch': 'refinery:rec-batch',
    'refinery-batch-conflict': 'refinery:rec-clash',
    'bead-resumed-failed': 'bead:rec-failed-retried',
    'bead-resumed-merged': 'bead:rec-reopened-c',
    'convoy-reopened': 'convoy:rec-reopened',
    'convoy-retried-live': 'convoy:rec-live',
  };
  const recorded = Object.entries(scenarios).filter(([name]) => !only || only.has(name));
  if (only && recorded.length !== only.size)
    throw new Error(`--only names unknown scenarios: ${[...only].filter((n) => !scenarios[n]).join(', ')}`);
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(out))
    if (f.endsWith('.json') && (!only || only.has(f.replace(/\.json$/, '')))) rmSync(join(out, f));
  for (const [name, which] of recorded) {
    const [workflowId, runId] = typeof which === 'string' ? [which] : which;
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    writeFileSync(join(out, `${name}.json`), historyToJSON(history));
    console.error(`recorded ${workflowId} → test/histories/${name}.json (${history.events?.length} events)`);
  }
} finally {
  await worker.shutdown();
  await running.catch(() => undefined);
  await server.stop();
}
