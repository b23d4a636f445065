import type { DeviceClientInstance, ModuleClientInstance } from './emulatorFixture.ts';

type AnyClient = DeviceClientInstance | ModuleClientInstance;
type Twin = Awaited<ReturnType<AnyClient['getTwin']>>;

/** The device SDK's reported-properties update is callback-only. */
export function updateReported(twin: Twin, patch: Record<string, unknown>): Promise<void> {
  const reported = twin.properties.reported as { update: (patch: unknown, done: (error?: Error) => void) => void };
  return new Promise((resolve, reject) => {
    reported.update(patch, (error) => (error ? reject(error) : resolve()));
  });
}
