/**
 * Dependency graphs of convoys: pure, deterministic functions (safe in workflow code). A node lists the nodes it
 * depends on; an edge points from a bead to the bead that must merge first. Every function visits nodes in the
 * order they are given, so results (and the messages built from them) are stable.
 */

export interface DagNode {
  id: string;
  dependsOn: readonly string[];
}

/** Ids that occur more than once, each reported once, in order of first repetition. */
export function duplicateIds(nodes: readonly DagNode[]): string[] {
  const seen = new Set<string>();
  const dups = new Set<string>();
  for (const n of nodes) {
    if (seen.has(n.id)) dups.add(n.id);
    seen.add(n.id);
  }
  return [...dups];
}

/** Dependencies that name no node of the graph. */
export function danglingDependencies(nodes: readonly DagNode[]): { id: string; missing: string }[] {
  const ids = new Set(nodes.map((n) => n.id));
  return nodes.flatMap((n) => n.dependsOn.filter((d) => !ids.has(d)).map((missing) => ({ id: n.id, missing })));
}

/**
 * The first dependency cycle found, as a closed path (`['a', 'b', 'a']`: a depends on b, b on a), or undefined.
 * Iterative depth-first search, so a long chain of beads cannot overflow the stack. Dangling edges are ignored.
 */
export function findCycle(nodes: readonly DagNode[]): string[] | undefined {
  const deps = new Map(nodes.map((n) => [n.id, n.dependsOn] as const));
  const state = new Map<string, 'visiting' | 'done'>();
  for (const root of nodes) {
    if (state.has(root.id)) continue;
    const path: string[] = [root.id];
    const next: number[] = [0];
    state.set(root.id, 'visiting');
    while (path.length) {
      const id = path[path.length - 1]!;
      const edges = deps.get(id) ?? [];
      const i = next[next.length - 1]!;
      if (i >= edges.length) {
        state.set(id, 'done');
        path.pop();
        next.pop();
        continue;
      }
      next[next.length - 1] = i + 1;
      const dep = edges[i]!;
      if (!deps.has(dep)) continue;
      const s = state.get(dep);
      if (s === 'visiting') return [...path.slice(path.indexOf(dep)), dep];
      if (s === undefined) {
        state.set(dep, 'visiting');
        path.push(dep);
        next.push(0);
      }
    }
  }
  return undefined;
}

export const describeCycle = (cycle: readonly string[]) => cycle.join(' → ');

/**
 * Everything wrong with a graph, one readable sentence each: duplicate ids, dependencies on unknown nodes, and
 * the first cycle (named, so the user can see which edge to cut). Empty when the graph is a valid DAG.
 */
export function dagProblems(nodes: readonly DagNode[], noun = 'bead', container = 'convoy'): string[] {
  const problems = duplicateIds(nodes).map((id) => `duplicate ${noun} id '${id}'`);
  for (const { id, missing } of danglingDependencies(nodes))
    problems.push(`${noun} '${id}' depends on '${missing}', which is not in the ${container}`);
  const cycle = findCycle(nodes);
  if (cycle) problems.push(`dependency cycle ${describeCycle(cycle)} (each depends on the next)`);
  return problems;
}

/**
 * Dependencies first; among nodes whose dependencies are all placed, input order. Nodes on a cycle can never be
 * placed; they are appended in input order rather than lost (callers validate with dagProblems first).
 */
export function topologicalOrder(nodes: readonly DagNode[]): string[] {
  const index = new Map(nodes.map((n, i) => [n.id, i] as const));
  const remaining = new Map(nodes.map((n) => [n.id, new Set(n.dependsOn.filter((d) => index.has(d))).size] as const));
  const dependents = new Map<string, string[]>();
  for (const n of nodes)
    for (const d of new Set(n.dependsOn)) if (index.has(d)) dependents.set(d, [...(dependents.get(d) ?? []), n.id]);
  const order: string[] = [];
  let frontier = nodes.filter((n) => remaining.get(n.id) === 0).map((n) => n.id);
  while (frontier.length) {
    order.push(...frontier);
    const next: string[] = [];
    for (const id of frontier) {
      for (const dependent of dependents.get(id) ?? []) {
        const left = remaining.get(dependent)! - 1;
        remaining.set(dependent, left);
        if (left === 0) next.push(dependent);
      }
    }
    frontier = next.sort((a, b) => index.get(a)! - index.get(b)!);
  }
  const placed = new Set(order);
  return [...order, ...nodes.filter((n) => !placed.has(n.id)).map((n) => n.id)];
}

/** Length of the longest dependency path from a root to each node (roots are 0); what the CLI indents by. */
export function depths(nodes: readonly DagNode[]): Map<string, number> {
  const byId = new Map(nodes.map((n) => [n.id, n] as const));
  const depth = new Map<string, number>();
  for (const id of topologicalOrder(nodes)) {
    const deps = byId.get(id)!.dependsOn.filter((d) => depth.has(d) && d !== id);
    depth.set(id, deps.length ? Math.max(...deps.map((d) => depth.get(d)!)) + 1 : 0);
  }
  return depth;
}

/** Every node that depends on `id`, directly or through other nodes, in input order. */
export function transitiveDependents(nodes: readonly DagNode[], id: string): string[] {
  const affected = new Set([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const n of nodes) {
      if (!affected.has(n.id) && n.dependsOn.some((d) => affected.has(d))) {
        affected.add(n.id);
        grew = true;
      }
    }
  }
  return nodes.filter((n) => n.id !== id && affected.has(n.id)).map((n) => n.id);
}

/** Nodes that may start now: not started yet (`isWaiting`) and every dependency has merged (`isMerged`). */
export function readyNodes<N extends DagNode>(
  nodes: readonly N[],
  isWaiting: (n: N) => boolean,
  isMerged: (id: string) => boolean,
): N[] {
  return nodes.filter((n) => isWaiting(n) && n.dependsOn.every(isMerged));
}
