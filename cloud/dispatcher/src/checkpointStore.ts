import { randomUUID } from 'node:crypto';
import type { Checkpoint, CheckpointStore, PartitionOwnership } from '@azure/event-hubs';
import type { DispatcherStore } from './store.ts';

// @azure/event-hubs' CheckpointStore on the dispatcher's own store, so a restarted consumer resumes after the
// last event it finished with (its work is committed before the checkpoint moves) and several dispatcher
// instances can share partitions through optimistic ownership claims (etags).

export class StoreCheckpointStore implements CheckpointStore {
  readonly #store: DispatcherStore;

  constructor(store: DispatcherStore) {
    this.#store = store;
  }

  listOwnership(fullyQualifiedNamespace: string, eventHubName: string, consumerGroup: string): Promise<PartitionOwnership[]> {
    return Promise.resolve(this.#store.listOwnership(fullyQualifiedNamespace, eventHubName, consumerGroup));
  }

  claimOwnership(ownerships: PartitionOwnership[]): Promise<PartitionOwnership[]> {
    const claimed: PartitionOwnership[] = [];
    for (const ownership of ownerships) {
      // A claim succeeds only against the etag the claimant last saw; a lost race simply is not returned.
      const record = this.#store.claimOwnership(
        { ...ownership, etag: randomUUID(), lastModifiedTimeInMs: Date.now() },
        ownership.etag,
      );
      if (record) claimed.push(record);
    }
    return Promise.resolve(claimed);
  }

  updateCheckpoint(checkpoint: Checkpoint): Promise<void> {
    this.#store.saveCheckpoint({ ...checkpoint, offset: String(checkpoint.offset) });
    return Promise.resolve();
  }

  listCheckpoints(fullyQualifiedNamespace: string, eventHubName: string, consumerGroup: string): Promise<Checkpoint[]> {
    return Promise.resolve(this.#store.listCheckpoints(fullyQualifiedNamespace, eventHubName, consumerGroup));
  }
}
