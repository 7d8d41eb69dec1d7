import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // The Temporal native bridge is not safe in worker threads (sdk-typescript#876).
    pool: 'forks',
    // Files run in parallel, one per core (at most four), each worker on a Temporal dev server of its own
    // (test/global-setup.ts). More workers than cores measured little faster and starved the real-stack files' agents
    // and CLIs of CPU; GT_TEST_WORKERS overrides.
    maxWorkers: Number(process.env.GT_TEST_WORKERS) || Math.min(4, availableParallelism()),
    testTimeout: 120_000,
    hookTimeout: 180_000,
    reporters: ['default'],
  },
});
