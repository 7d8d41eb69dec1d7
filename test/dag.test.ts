/** The convoy DAG logic (and what a dependent's first run needs): pure functions, so plain unit tests. */
import { describe, expect, it } from 'vitest';
import {
  dagProblems,
  danglingDependencies,
  depths,
  duplicateIds,
  findCycle,
  readyNodes,
  topologicalOrder,
  transitiveDependents,
  type DagNode,
} from '../domain/dag';
import { dependencyMerges } from '../domain/convoy';
import { MAX_AFTER_COMMITS } from '../domain/ids';

const n = (id: string, ...dependsOn: string[]): DagNode => ({ id, dependsOn });
const diamond = [n('a'), n('b', 'a'), n('c', 'a'), n('d', 'b', 'c')];

describe('DAG problems', () => {
  it('finds nothing wrong with a diamond', () => {
    expect(dagProblems(diamond)).toEqual([]);
  });

  it('reports duplicate ids once each', () => {
    expect(duplicateIds([n('a'), n('b'), n('a'), n('a')])).toEqual(['a']);
    expect(dagProblems([n('a'), n('a')])).toEqual(["duplicate bead id 'a'"]);
  });

  it('reports dependencies on beads that are not in the convoy', () => {
    expect(danglingDependencies([n('a'), n('b', 'a', 'zz')])).toEqual([{ id: 'b', missing: 'zz' }]);
    expect(dagProblems([n('b', 'zz')])).toEqual(["bead 'b' depends on 'zz', which is not in the convoy"]);
  });

  it('names the cycle, as a closed path of who depends on whom', () => {
    const nodes = [n('a'), n('b', 'a', 'd'), n('c', 'b'), n('d', 'c')];
    expect(findCycle(nodes)).toEqual(['b', 'd', 'c', 'b']);
    expect(dagProblems(nodes)).toEqual(['dependency cycle b → d → c → b (each depends on the next)']);
  });

  it('treats a bead depending on itself as a cycle', () => {
    expect(findCycle([n('a', 'a')])).toEqual(['a', 'a']);
  });

  it('finds no cycle in a long chain without overflowing the stack', () => {
    const chain = Array.from({ length: 20_000 }, (_, i) => n(`b${i}`, ...(i ? [`b${i - 1}`] : [])));
    expect(findCycle(chain)).toBeUndefined();
    expect(topologicalOrder(chain)[19_999]).toBe('b19999');
  });
});

describe('DAG order', () => {
  it('puts dependencies first and keeps input order among peers', () => {
    expect(topologicalOrder([n('d', 'b', 'c'), n('c', 'a'), n('b', 'a'), n('a')])).toEqual(['a', 'c', 'b', 'd']);
  });

  it('computes the longest path depth of each bead', () => {
    expect(Object.fromEntries(depths([...diamond, n('e', 'a', 'd')]))).toEqual({ a: 0, b: 1, c: 1, d: 2, e: 3 });
  });

  it('finds every transitive dependent', () => {
    expect(transitiveDependents([...diamond, n('x')], 'b')).toEqual(['d']);
    expect(transitiveDependents([...diamond, n('x')], 'a')).toEqual(['b', 'c', 'd']);
  });

  it('starts a bead only when every dependency has merged', () => {
    const merged = new Set<string>();
    const waiting = (b: DagNode) => !merged.has(b.id);
    const ready = () => readyNodes(diamond, waiting, (id) => merged.has(id)).map((b) => b.id);
    expect(ready()).toEqual(['a']);
    merged.add('a');
    expect(ready()).toEqual(['b', 'c']);
    merged.add('b');
    expect(ready()).toEqual(['c']);
    merged.add('c');
    expect(ready()).toEqual(['d']);
  });
});

describe('what a bead’s first run needs its target to hold', () => {
  const sha = (c: string) => c.repeat(40);
  const commits: Record<string, string | undefined> = { a: sha('a'), b: sha('b'), c: sha('b'), p: 'PR#12' };
  const merges = (...deps: string[]) => dependencyMerges({ dependsOn: deps }, (id) => commits[id]);

  it('is its dependencies’ merges, each once', () => {
    expect(merges('a')).toEqual([sha('a')]);
    expect(merges('a', 'b', 'c')).toEqual([sha('a'), sha('b')]);
  });

  it('is nothing (the run fetches) for a root, an unknown merge, one that is no commit id, or too many', () => {
    expect(merges()).toBeUndefined();
    expect(merges('a', 'x')).toBeUndefined();
    expect(merges('a', 'p')).toBeUndefined();
    expect(merges(...Array.from({ length: MAX_AFTER_COMMITS + 1 }, () => 'a'))).toBeUndefined();
  });
});
