import type { IdentityHub } from '../../src/hubClient.ts';

/** IoT Hub for API tests that need no emulator: records identities created; every module is offline, every twin patch lands. */
export class RecordingHub implements IdentityHub {
  readonly created: string[] = [];
  createDevice(request: { deviceId: string }): Promise<{ generationId: string }> {
    this.created.push(request.deviceId);
    return Promise.resolve({ generationId: 'g' });
  }
  invokeModuleMethod(): Promise<{ status: number; payload: unknown }> {
    return Promise.reject(new Error('offline'));
  }
  patchModuleDesired(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
