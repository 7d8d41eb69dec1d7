/** Convoy specs: parsing (YAML/JSON), validation messages, and edits of a staged plan. Pure logic: unit tests. */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { newConvoyId, readSpecFile } from '../client/convoys';
import {
  applyEdit,
  ConvoySpec,
  MAX_CONVOY_TEXT,
  planConvoy,
  type ConvoyEdit,
  type ConvoySpecInput,
  type ResolvedConvoySpec,
} from '../domain/convoy';
import { describeZodError } from '../domain/validation';

const dir = mkdtempSync(join(tmpdir(), 'gt-spec-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

const problem = (spec: unknown) => {
  const r = ConvoySpec.safeParse(spec);
  return r.success ? 'ok' : describeZodError(r.error);
};
const base: ConvoySpecInput = {
  title: 'Login',
  rig: 'webapp',
  beads: [
    { id: 'api', title: 'API' },
    { id: 'ui', title: 'UI', dependsOn: ['api'] },
  ],
};

describe('spec files', () => {
  it('reads YAML with the documented shape and fills defaults', () => {
    const raw = readSpecFile(
      file(
        'login.yaml',
        `title: Login flow
rig: webapp
mergeMode: review-then-land
beads:
  - id: api
    title: Add /login endpoint
    description: POST /login
  - id: ui
    title: Login form
    dependsOn: [api]
`,
      ),
    );
    const spec = ConvoySpec.parse(raw);
    expect(spec).toMatchObject({
      title: 'Login flow',
      rig: 'webapp',
      mergeMode: 'review-then-land',
      onFailure: 'stop-dependents',
    });
    expect(spec.beads.map((b) => [b.id, b.dependsOn, b.priority])).toEqual([
      ['api', [], 2],
      ['ui', ['api'], 2],
    ]);
  });

  it('accepts every example spec shipped in examples/', () => {
    const examples = fileURLToPath(new URL('../examples', import.meta.url));
    const files = readdirSync(examples).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(problem(readSpecFile(join(examples, f))), f).toBe('ok');
  });

  it('reads JSON by extension', () => {
    expect(ConvoySpec.parse(readSpecFile(file('c.json', JSON.stringify(base)))).beads).toHaveLength(2);
  });

  it('rejects malformed files with the file, the format and the line', () => {
    expect(() => readSpecFile(file('bad.yaml', 'title: x\nbeads: [\n  - a\n'))).toThrow(
      /^spec file .*bad\.yaml is not valid YAML: .* at line 3, column 3$/,
    );
    expect(() => readSpecFile(file('bad.json', '{"title": '))).toThrow(/^spec file .*bad\.json is not valid JSON: /);
    expect(() => readSpecFile(join(dir, 'missing.yaml'))).toThrow(
      /^cannot read spec file .*missing\.yaml: no such file$/,
    );
  });
});

describe('spec validation', () => {
  it('accepts the example spec', () => {
    expect(problem(base)).toBe('ok');
  });

  it('rejects duplicate ids', () => {
    expect(problem({ ...base, beads: [...base.beads, { id: 'api', title: 'again' }] })).toBe("duplicate bead id 'api'");
  });

  it('rejects dangling dependencies', () => {
    expect(problem({ ...base, beads: [{ id: 'ui', title: 'UI', dependsOn: ['nope'] }] })).toBe(
      "bead 'ui' depends on 'nope', which is not in the convoy",
    );
  });

  it('rejects cycles, naming the cycle', () => {
    const beads = [
      { id: 'a', title: 'A', dependsOn: ['c'] },
      { id: 'b', title: 'B', dependsOn: ['a'] },
      { id: 'c', title: 'C', dependsOn: ['b'] },
    ];
    expect(problem({ ...base, beads })).toBe('dependency cycle a → c → b → a (each depends on the next)');
  });

  it('rejects oversized text, per field and in total', () => {
    expect(problem({ ...base, beads: [{ id: 'a', title: 'A', description: 'x'.repeat(20_001) }] })).toBe(
      'beads.0.description: description must be at most 20000 characters',
    );
    const big = Array.from({ length: 60 }, (_, i) => ({ id: `b${i}`, title: 'B', description: 'x'.repeat(19_000) }));
    expect(problem({ ...base, beads: big })).toMatch(
      new RegExp(`^the convoy holds \\d+ characters of text; at most ${MAX_CONVOY_TEXT} are allowed`),
    );
  });

  it('rejects malformed specs: unknown keys, wrong types, missing fields, bad ids', () => {
    expect(problem({ ...base, beads: [{ id: 'a', title: 'A', dependOn: ['x'] }] })).toMatch(
      /^beads\.0: Unrecognized key: "dependOn"$/,
    );
    expect(problem({ ...base, maxParallel: 'lots' })).toMatch(/^maxParallel: /);
    expect(problem({ rig: 'webapp', beads: base.beads })).toMatch(/^title: /);
    expect(problem({ ...base, beads: [] })).toBe('beads: a convoy needs at least one bead');
    expect(problem({ ...base, mergeMode: 'yolo' })).toMatch(/^mergeMode: /);
    expect(problem({ ...base, beads: [{ id: 'Bad Id', title: 'A' }] })).toMatch(/^beads\.0\.id: bead id must be/);
  });

  it('rejects bead ids that become too long with the convoy id', () => {
    expect(problem({ ...base, id: 'c'.repeat(40), beads: [{ id: 'b'.repeat(30), title: 'B' }] })).toMatch(
      /^bead id 'b{30}' is too long for convoy 'c{40}': .* must be at most 63 characters$/,
    );
  });

  it('makes convoy ids from titles', () => {
    expect(newConvoyId('Login flow: API + UI!')).toMatch(/^login-flow-api-ui-[0-9a-f]{4}$/);
    expect(newConvoyId('!!!')).toMatch(/^convoy-[0-9a-f]{4}$/);
  });
});

describe('edits of a plan', () => {
  const plan = (status: 'staged' | 'running' = 'staged') => {
    const spec = ConvoySpec.parse({ ...base, id: 'c1' }) as ResolvedConvoySpec;
    const cp = planConvoy(spec, status === 'staged', '2024-01-01T00:00:00.000Z');
    return cp;
  };
  const edit = (e: ConvoyEdit, status: 'staged' | 'running' = 'staged') => {
    const cp = plan(status);
    return applyEdit(cp.state, cp.details, e);
  };

  it('adds, removes and edits beads while staged without touching the original', () => {
    const cp = plan();
    const added = applyEdit(cp.state, cp.details, {
      op: 'add',
      beads: [{ id: 'docs', title: 'Docs', description: 'd', acceptance: '', priority: 3, dependsOn: ['ui'] }],
    });
    expect(added.ok && added.beads.map((b) => [b.id, b.beadId])).toEqual([
      ['api', 'c1-api'],
      ['ui', 'c1-ui'],
      ['docs', 'c1-docs'],
    ]);
    expect(cp.state.beads).toHaveLength(2);
    const edited = edit({ op: 'edit', bead: { id: 'ui', title: 'New UI', dependsOn: [] } });
    expect(edited.ok && edited.beads.find((b) => b.id === 'ui')).toMatchObject({ title: 'New UI', dependsOn: [] });
    const removed = edit({ op: 'remove', ids: ['ui'] });
    expect(removed.ok && removed.beads.map((b) => b.id)).toEqual(['api']);
  });

  it('rejects edits that would break the plan', () => {
    expect(edit({ op: 'remove', ids: ['api'] })).toEqual({
      ok: false,
      error: "cannot remove 'api': 'ui' depends on it (remove or edit 'ui' too)",
    });
    expect(edit({ op: 'edit', bead: { id: 'api', dependsOn: ['ui'] } })).toEqual({
      ok: false,
      error: 'dependency cycle api → ui → api (each depends on the next)',
    });
    expect(
      edit({
        op: 'add',
        beads: [{ id: 'api', title: 'x', description: '', acceptance: '', priority: 2, dependsOn: [] }],
      }),
    ).toEqual({ ok: false, error: "bead 'api' is already in convoy c1" });
    expect(edit({ op: 'remove', ids: ['api', 'ui'] })).toEqual({
      ok: false,
      error: 'a convoy needs at least one bead',
    });
  });

  it('only adds beads once the convoy is running', () => {
    expect(edit({ op: 'remove', ids: ['ui'] }, 'running')).toEqual({
      ok: false,
      error: 'beads can be removed only while the convoy is staged; convoy c1 is running (add new beads instead)',
    });
    expect(
      edit(
        {
          op: 'add',
          beads: [{ id: 'x', title: 'X', description: '', acceptance: '', priority: 2, dependsOn: ['api'] }],
        },
        'running',
      ).ok,
    ).toBe(true);
  });

  it('rejects a new bead that depends on a failed one', () => {
    const cp = plan('running');
    cp.state.beads[0]!.status = 'failed';
    expect(
      applyEdit(cp.state, cp.details, {
        op: 'add',
        beads: [{ id: 'x', title: 'X', description: '', acceptance: '', priority: 2, dependsOn: ['api'] }],
      }),
    ).toEqual({
      ok: false,
      error: "bead 'x' depends on 'api', which is failed; it could never start",
    });
  });
});
