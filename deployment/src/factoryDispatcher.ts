import { FactoryError } from './factoryTopology.ts';

// The dispatcher's device-manager API (cloud/dispatcher/openapi.yaml) as the factory uses it. POST /devices
// records the device with its assigned update and then registers the identity in IoT Hub under its parent, so
// when a dispatcher is given the factory creates devices through it (the createDeviceIdentity event then finds
// the assignment) and never creates those identities itself. A device whose own update differs from the
// topology's is reassigned (PUT or DELETE /devices/{id}/assignment). The API cannot adopt an identity that exists
// in IoT Hub already, nor change a device's parent or role: those are reported as conflicts, not worked around.

export interface DispatcherDevice {
  deviceId: string;
  parentId?: string | null;
  isGateway?: boolean;
  lifecycle?: string;
  assignedUpdateId?: string | null;
  assignedBy?: 'device' | 'group' | null;
}

export interface WantedDevice {
  deviceId: string;
  parentId?: string;
  isGateway: boolean;
  updateId?: string;
}

interface ApiError {
  error?: { code?: string; message?: string };
}

export class DispatcherClient {
  readonly #base: string;

  constructor(baseUrl: string) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new FactoryError('USAGE', `--dispatcher ${baseUrl} is not a URL (e.g. http://127.0.0.1:8080)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new FactoryError('USAGE', `--dispatcher ${baseUrl}: http or https only`);
    this.#base = url.href.replace(/\/+$/, '');
  }

  get baseUrl(): string {
    return this.#base;
  }

  async #call(method: string, route: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    let response: Response;
    try {
      response = await fetch(`${this.#base}${route}`, {
        method,
        ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
        signal: AbortSignal.timeout(60_000),
      });
    } catch (error) {
      const cause = (error as { cause?: Error }).cause;
      throw new FactoryError('DISPATCHER_UNAVAILABLE', `${method} ${this.#base}${route}: ${cause?.message ?? (error as Error).message}`);
    }
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // keep the text for the message
    }
    return { status: response.status, body: parsed };
  }

  #refused(what: string, status: number, body: unknown): FactoryError {
    const error = (body as ApiError | undefined)?.error;
    const code = error?.code ?? `HTTP ${status}`;
    const message = error?.message ?? (typeof body === 'string' ? body.slice(0, 200) : '');
    if (status >= 500) return new FactoryError('DISPATCHER_UNAVAILABLE', `${what}: ${code} ${message}`);
    return new FactoryError('DISPATCHER_REFUSED', `${what}: the dispatcher refused with ${code}: ${message}`);
  }

  /** Whether the catalog has the update (`provider/name@version`). */
  async hasUpdate(updateId: string): Promise<boolean> {
    const result = await this.#call('GET', `/updates/${encodeURIComponent(updateId)}`);
    if (result.status === 404) return false;
    if (result.status !== 200) throw this.#refused(`reading update ${updateId}`, result.status, result.body);
    return true;
  }

  async getDevice(deviceId: string): Promise<DispatcherDevice | undefined> {
    const result = await this.#call('GET', `/devices/${encodeURIComponent(deviceId)}`);
    if (result.status === 404) return undefined;
    if (result.status !== 200) throw this.#refused(`reading ${deviceId}`, result.status, result.body);
    return result.body as DispatcherDevice;
  }

  /** Sets the device's own update (or removes it, so its group's rule applies); the dispatcher plans the new job. */
  async reassign(deviceId: string, updateId: string | undefined): Promise<void> {
    const route = `/devices/${encodeURIComponent(deviceId)}/assignment`;
    const result = updateId === undefined ? await this.#call('DELETE', route) : await this.#call('PUT', route, { updateId });
    if (result.status !== 200) throw this.#refused(`reassigning ${deviceId}`, result.status, result.body);
  }

  /** POST /devices; a 409 (created meanwhile) is answered with what the dispatcher holds now. */
  async createDevice(wanted: WantedDevice): Promise<{ device: DispatcherDevice; created: boolean }> {
    const body = {
      deviceId: wanted.deviceId,
      isGateway: wanted.isGateway,
      ...(wanted.parentId ? { parentId: wanted.parentId } : {}),
      ...(wanted.updateId ? { updateId: wanted.updateId } : {}),
    };
    const result = await this.#call('POST', '/devices', body);
    if (result.status === 201) return { device: result.body as DispatcherDevice, created: true };
    if (result.status === 409) {
      const now = await this.getDevice(wanted.deviceId);
      if (now) return { device: now, created: false };
      throw new FactoryError('DISPATCHER_CONFLICT', `${wanted.deviceId} exists in IoT Hub but the dispatcher has no record of it: ` +
        'the dispatcher API cannot adopt an existing identity; delete the identity in IoT Hub, or run the factory without --dispatcher');
    }
    throw this.#refused(`creating ${wanted.deviceId}`, result.status, result.body);
  }
}

/** Why an existing dispatcher record does not match the topology, or undefined when it does. */
export function dispatcherConflict(existing: DispatcherDevice, wanted: WantedDevice): string | undefined {
  if (existing.lifecycle === 'deleted') return `${wanted.deviceId} is deleted in the dispatcher; the API cannot bring a deleted device back`;
  const parent = existing.parentId ?? undefined;
  if (parent !== wanted.parentId) return `${wanted.deviceId} has parent ${parent ?? '(none)'} in the dispatcher, the topology says ${wanted.parentId ?? '(none)'}`;
  if ((existing.isGateway ?? false) !== wanted.isGateway) return `${wanted.deviceId} is ${existing.isGateway ? '' : 'not '}a gateway in the dispatcher, the topology says the opposite`;
  return undefined;
}

/** The device's own update in the dispatcher (not one it follows from its group's rule). */
export function ownAssignment(existing: DispatcherDevice): string | undefined {
  return existing.assignedBy === 'device' ? (existing.assignedUpdateId ?? undefined) : undefined;
}
