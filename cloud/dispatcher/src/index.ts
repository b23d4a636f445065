// Public API of @edge-ota/dispatcher: the factory, the store interface and the pieces tests and tools reuse.
export { createDispatcher } from './app.ts';
export type { Dispatcher, DispatcherOptions } from './app.ts';
export { SqliteStore } from './sqliteStore.ts';
export type * from './store.ts';
export { StoreCheckpointStore } from './checkpointStore.ts';
export { DispatcherError, dispatcherErrors } from './errors.ts';
export type { DispatcherErrorCode } from './errors.ts';
export { jobIdFor } from './manifestBuilder.ts';
export { ORCHESTRATOR_MODULE } from './dispatchQueue.ts';
export { LocalArtifactStore } from './artifactStore.ts';
export type { ArtifactStore, StoredArtifact } from './artifactStore.ts';
