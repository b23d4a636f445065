import type { HubMessage } from './hubMessage.ts';
import type { IdentityKey } from './registryStore.ts';
import type { JsonObject } from './twinDocument.ts';

/** A connected device or module client, as the hub core sees it (the MQTT session implements it). */
export interface DeviceSession {
  readonly identity: IdentityKey;
  readonly subscribedToMethods: boolean;
  readonly subscribedToDesired: boolean;
  readonly subscribedToInputs: boolean;
  sendMethodRequest(requestId: string, methodName: string, payload: Buffer): void;
  sendDesiredPatch(patch: JsonObject): void;
  /** Resolves when the client acknowledges the message (QoS 1), rejects if the connection goes first. */
  deliverInput(inputName: string, message: HubMessage): Promise<void>;
  close(reason: string): void;
}
