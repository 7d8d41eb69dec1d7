/**
 * The work the bench runs: N beads in a DAG of width W — W independent chains, bead i depending on bead i − W —
 * so at most W beads are in flight and every bead past the first W waits for exactly one merge. Width 1 is one
 * chain (every hop is on the critical path); width 16 keeps the merge queue busy.
 */
import type { ConvoySpecInput } from '../domain/convoy';

export const beadLocalId = (index: number, bad = false) => `b${index}${bad ? '-bad' : ''}`;
export const dependencyOf = (index: number, width: number) => (index >= width ? index - width : undefined);

/** The bead index of a bead id made by the bench (`…-b<i>` or `…-b<i>-bad`). */
export function indexOfBead(beadId: string): number | undefined {
  const m = /-b(\d+)(?:-bad)?$/.exec(beadId);
  return m ? Number(m[1]) : undefined;
}

/** Which beads are bad (their change fails the gate): `round(n × rate)` of them, spread evenly, none at the very start. */
export function badBeads(n: number, rate: number): Set<number> {
  const count = rate > 0 ? Math.max(1, Math.round(n * rate)) : 0;
  return new Set(Array.from({ length: count }, (_, k) => Math.floor(((k + 0.5) * n) / count)));
}

export function convoySpec(options: {
  id: string;
  rig: string;
  n: number;
  width: number;
  bad?: Set<number>;
}): ConvoySpecInput {
  const { id, rig, n, width, bad = new Set<number>() } = options;
  return {
    id,
    title: `bench: ${n} beads, width ${width}`,
    rig,
    beads: Array.from({ length: n }, (_, i) => {
      const dep = dependencyOf(i, width);
      return {
        id: beadLocalId(i, bad.has(i)),
        title: `bench bead ${i}`,
        dependsOn: dep === undefined ? [] : [beadLocalId(dep, bad.has(dep))],
      };
    }),
  };
}
