import type { McuFlashProgress } from '@edge-ota/common';
import { parseMcuFlashProgress } from '@edge-ota/common';
import type { EmulatorFixture } from '../../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import { eventually } from '../../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { EventGridSink } from '../../../cloud/hubEmulator/test/support/eventGridSink.ts';

// How the cloud side sees the translator: its direct methods through the service SDK, its mcuProgress messages
// once routed $upstream (through an Event Grid subscriber), and each MCU's own device twin.

export async function invokeTranslator(hub: EmulatorFixture, gatewayId: string, methodName: string, payload: unknown): Promise<{ status: number; payload: unknown }> {
  const { result } = (await hub.service.invokeDeviceMethod(gatewayId, 'serialTranslator', { methodName, payload, responseTimeoutInSeconds: 20 })) as {
    result: { status: number; payload: unknown };
  };
  return result;
}

/** mcuProgress messages of a job as they reached the cloud, each checked against the contract. */
export function progressMessages(sink: EventGridSink, jobId: string): McuFlashProgress[] {
  return sink
    .ofType('DeviceTelemetry')
    .filter((e) => (e.data.systemProperties as Record<string, string> | undefined)?.['iothub-connection-module-id'] === 'serialTranslator')
    .map((e) => e.data.body as { jobId?: string })
    .filter((body) => body?.jobId === jobId)
    .map((body) => parseMcuFlashProgress(body));
}

export function finalProgressMessage(sink: EventGridSink, jobId: string, timeoutMs = 60_000): Promise<McuFlashProgress> {
  return eventually(() => progressMessages(sink, jobId).find((m) => m.status !== 'inProgress'), timeoutMs, `final mcuProgress of ${jobId}`);
}

/** The MCU twin's reported `firmware` (the firmware-update tutorial's properties). */
export async function reportedFirmware(hub: EmulatorFixture, mcuId: string): Promise<Record<string, string>> {
  const twin = (await hub.registry.getTwin(mcuId)).responseBody as unknown as { properties: { reported: { firmware?: Record<string, string> } } };
  return twin.properties.reported.firmware ?? {};
}
