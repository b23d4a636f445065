// IoT Edge module entry point: configuration from the environment (configuration.ts), SIGTERM for a clean shutdown.
import { stopOnSignals } from '@edge-ota/common';
import { createContentCache } from './cacheServer.ts';
import { CacheConfigurationError, cacheConfigurationFromEnvironment } from './configuration.ts';
import type { CacheConfiguration } from './configuration.ts';
import { jsonLogger } from './log.ts';

let configuration: CacheConfiguration;
try {
  configuration = cacheConfigurationFromEnvironment(process.env);
} catch (error) {
  if (!(error instanceof CacheConfigurationError)) throw error;
  const log = jsonLogger('error');
  for (const problem of error.problems) log.error('invalid configuration', { setting: problem.setting, problem: problem.message });
  process.exit(2);
}

const log = jsonLogger(configuration.logLevel);
for (const warning of configuration.warnings) log.warn(warning);
const cache = createContentCache({ ...configuration.options, logger: log });
await cache.listen();

// Closing marks the index clean, so the next start does not re-hash every object.
stopOnSignals({ log: (line) => log.info(line), stop: () => cache.close() });
