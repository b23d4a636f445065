// Public API of @edge-ota/content-cache: the factory, its options, child tokens and the admin client.
export { createContentCache } from './cacheServer.ts';
export type { ContentCache, ContentCacheOptions } from './cacheServer.ts';
export { deriveChildToken, verifyChildToken } from './accessTokens.ts';
export { ContentCacheAdmin } from './adminClient.ts';
export type { ContentCacheAdminOptions } from './adminClient.ts';
export type { CacheSummary, IngestOutcome, ListedObject, PrefetchOutcome, PrefetchRequest, ImportRequest } from './adminApi.ts';
export { ORIGIN_HEADER } from './upstreamChain.ts';
export { jsonLogger, silentLogger } from './log.ts';
export type { Logger, LogLevel } from './log.ts';
export { CACHE_ERRORS } from './jsonReply.ts';
export type { CacheErrorCode } from './jsonReply.ts';
export { VIA_HEADER } from './upstreamChain.ts';
