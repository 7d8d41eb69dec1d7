/** Small statistics for the bench: percentiles of samples, and medians with min/max over repeats. */

/** Nearest-rank percentile (p in 0..100) of the samples; undefined when there are none. */
export function percentile(samples: readonly number[], p: number): number | undefined {
  if (samples.length === 0) return undefined;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

export interface Percentiles {
  n: number;
  p50?: number;
  p95?: number;
  p99?: number;
  max?: number;
}

export function percentiles(samples: readonly number[]): Percentiles {
  return {
    n: samples.length,
    p50: percentile(samples, 50),
    p95: percentile(samples, 95),
    p99: percentile(samples, 99),
    max: percentile(samples, 100),
  };
}

/** A figure over repeats: the median is the figure reported, min and max show the spread. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  repeats: number;
}

export function spread(values: readonly (number | undefined)[]): Spread | undefined {
  const defined = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (defined.length === 0) return undefined;
  const sorted = [...defined].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, repeats: defined.length };
}

/** Spreads of every numeric field of a list of same-shaped records (one record per repeat). */
export function spreadOf<K extends string>(
  records: readonly Partial<Record<K, number | undefined>>[],
  keys: readonly K[],
): Partial<Record<K, Spread>> {
  const out: Partial<Record<K, Spread>> = {};
  for (const k of keys) {
    const s = spread(records.map((r) => r[k]));
    if (s) out[k] = s;
  }
  return out;
}

export const round = (v: number | undefined, digits = 0): number | undefined =>
  v === undefined ? undefined : Math.round(v * 10 ** digits) / 10 ** digits;
