import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Workspaces export their TypeScript sources under the "source" condition, so tests run the code as written
  // (never a stale dist/). Tests run in Vite's SSR environment, which has its own conditions list.
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source', 'module', 'node', 'development|production'] } },
  test: {
    include: ['modules/*/test/**/*.test.ts', 'cloud/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Node's CJS interop has no synthetic named exports for the Azure SDKs: tests must fail the way Node would.
    deps: { interopDefault: false },
    pool: 'forks',
    reporters: ['default', './test/setup/summaryReporter.ts'],
    globalSetup: ['test/setup/globalSetup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
