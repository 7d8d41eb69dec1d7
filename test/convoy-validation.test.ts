/**
 * Issue 5 acceptance (failure class 12): every invalid spec is rejected with its one-line message, and nothing
 * is started: no convoy, no bead (checked by id, and by listing once visibility caught up). A few cases go through
 * the real `gt` binary; the rest through ConvoyClient, the same code the CLI runs (a CLI start costs seconds).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { ConvoyClient, readSpecFile } from '../client/convoys';
import { workflowExists, writeSpec } from './helpers/convoy';
import { createRepo } from './helpers/repo';
import { eventually, runGt, startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

const exists = (workflowId: string) => workflowExists(t.client, workflowId);

describe('gt convoy start with an invalid spec', () => {
  it('rejects each problem with a clear one-line message and starts nothing', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'strict', repo: repo.origin });
    const ok = { title: 'T', rig: 'strict', beads: [{ id: 'a', title: 'A' }] };
    const malformed = writeSpec(ok);
    writeFileSync(malformed, 'title: T\nrig: strict\nbeads:\n  - id: a\n    title: [unclosed\n');

    const viaCli = new Set(['v-rig', 'v-cycle', 'v-yaml']);
    const convoys = new ConvoyClient(t.town);
    const cases: [string, string, RegExp | string][] = [
      [
        'v-rig',
        writeSpec({ ...ok, id: 'v-rig', rig: 'nope' }),
        "gt: unknown rig 'nope' (see `gt rig list`, or add it with `gt rig add`)",
      ],
      [
        'v-dup',
        writeSpec({
          ...ok,
          id: 'v-dup',
          beads: [
            { id: 'a', title: 'A' },
            { id: 'a', title: 'A again' },
          ],
        }),
        "gt: invalid convoy spec: duplicate bead id 'a'",
      ],
      [
        'v-dangling',
        writeSpec({ ...ok, id: 'v-dangling', beads: [{ id: 'a', title: 'A', dependsOn: ['zz'] }] }),
        "gt: invalid convoy spec: bead 'a' depends on 'zz', which is not in the convoy",
      ],
      [
        'v-cycle',
        writeSpec(
          {
            ...ok,
            id: 'v-cycle',
            beads: [
              { id: 'a', title: 'A', dependsOn: ['b'] },
              { id: 'b', title: 'B', dependsOn: ['c'] },
              { id: 'c', title: 'C', dependsOn: ['a'] },
            ],
          },
          'json',
        ),
        'gt: invalid convoy spec: dependency cycle a → b → c → a (each depends on the next)',
      ],
      [
        'v-big',
        writeSpec({ ...ok, id: 'v-big', beads: [{ id: 'a', title: 'A', description: 'x'.repeat(20_001) }] }),
        'gt: invalid convoy spec: beads.0.description: description must be at most 20000 characters',
      ],
      [
        'v-title',
        writeSpec({ ...ok, id: 'v-title', title: 't'.repeat(201) }),
        'gt: invalid convoy spec: title: title must be at most 200 characters',
      ],
      [
        'v-key',
        writeSpec({ ...ok, id: 'v-key', beads: [{ id: 'a', title: 'A', depends: ['b'] }] }),
        'gt: invalid convoy spec: beads.0: Unrecognized key: "depends"',
      ],
      [
        'v-mode',
        writeSpec({ ...ok, id: 'v-mode', mergeMode: 'merge-whenever' }),
        /^gt: invalid convoy spec: mergeMode: Invalid option: expected one of "review-and-merge"\|"review-then-land"$/,
      ],
      ['v-yaml', malformed, /^gt: spec file .*spec\.yaml is not valid YAML: .* at line \d+, column \d+$/],
    ];
    for (const [id, file, message] of cases) {
      let stderr: string;
      if (viaCli.has(id)) {
        const r = await runGt(['convoy', 'start', file], t.cliEnv());
        expect(r.code, id).toBe(1);
        expect(r.stdout, id).toBe('');
        stderr = r.stderr.trimEnd();
      } else {
        stderr = await convoys.start(readSpecFile(file)).then(
          () => 'started',
          (err: Error) => `gt: ${err.message}`,
        );
      }
      if (typeof message === 'string') expect(stderr, id).toBe(message);
      else expect(stderr, id).toMatch(message);
      expect(await exists(`convoy:${id}`), id).toBe(false);
    }

    // A valid convoy (staged: it dispatches nothing) shows up in visibility; the rejected ones never do.
    await convoys.start({ ...ok, id: 'v-ok' }, { staged: true });
    await eventually(
      async () => (await t.client.workflow.count(`GtKind = 'convoy' AND GtConvoyId = 'v-ok'`)).count === 1,
      10_000,
      'the valid convoy in visibility',
    );
    expect((await t.client.workflow.count(`GtKind = 'convoy' AND GtConvoyId STARTS_WITH 'v-'`)).count).toBe(1);
    expect((await t.client.workflow.count(`GtKind = 'bead' AND GtRig = 'strict'`)).count).toBe(0);
    expect((await t.client.workflow.count(`GtRig = 'nope'`)).count).toBe(0);

    await expect(convoys.start({ ...ok, id: 'v-ok' })).rejects.toThrow(
      "convoy 'v-ok' already exists (see `gt convoy status v-ok`); give the spec another id",
    );
    await expect(convoys.status('no-such-convoy')).rejects.toThrow(
      "unknown convoy 'no-such-convoy' (see `gt convoy list`)",
    );
  });
});
