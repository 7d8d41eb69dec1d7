import { z } from 'zod';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A duration such as `500ms`, `30s`, `10m`, `2h` (what the CLI and spec files accept), normalised to milliseconds. */
export const DurationMs = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .regex(/^\d+(ms|s|m|h|d)$/, 'duration must look like 500ms, 30s, 10m, 2h or 1d')
    .transform((s) => {
      const m = /^(\d+)(ms|s|m|h|d)$/.exec(s)!;
      return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
    }),
]);

export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${Math.round(ms / 100) / 10}s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
  return `${Math.floor(ms / 3_600_000)}h${Math.round((ms % 3_600_000) / 60_000)}m`;
}
