// The factory's identity store with every write it makes counted, to show that a second run writes nothing.
import type { IdentityDoc, IdentityStore } from '../../../deployment/src/factoryIdentities.ts';

/** The service store, counting the writes the factory makes. */
export class CountingStore implements IdentityStore {
  readonly writes: string[] = [];
  readonly inner: IdentityStore;
  constructor(inner: IdentityStore) {
    this.inner = inner;
  }
  get(deviceId: string): Promise<IdentityDoc | undefined> {
    return this.inner.get(deviceId);
  }
  create(body: Record<string, unknown>): Promise<IdentityDoc> {
    this.writes.push(`create ${String(body.deviceId)}`);
    return this.inner.create(body);
  }
  update(body: Record<string, unknown>): Promise<IdentityDoc> {
    this.writes.push(`update ${String(body.deviceId)}`);
    return this.inner.update(body);
  }
}
