import type { IdentityDocument, TwinState } from './registryStore.ts';
import type { JsonObject } from './twinDocument.ts';

// How twins look on each wire: the REST shape the service SDK reads, and the device-side shape of a GET.

export function restTwin(identity: IdentityDocument, twin: TwinState): JsonObject {
  return {
    deviceId: identity.deviceId,
    ...(identity.moduleId ? { moduleId: identity.moduleId } : {}),
    etag: twin.etag,
    deviceEtag: identity.etag,
    status: identity.status,
    statusUpdateTime: identity.statusUpdatedTime,
    connectionState: identity.connectionState,
    lastActivityTime: identity.lastActivityTime,
    cloudToDeviceMessageCount: 0,
    authenticationType: 'sas',
    x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
    modelId: '',
    version: twin.version,
    tags: twin.tags,
    properties: {
      desired: { ...twin.desired, $metadata: { $lastUpdated: twin.lastUpdated }, $version: twin.desiredVersion },
      reported: { ...twin.reported, $metadata: { $lastUpdated: twin.lastUpdated }, $version: twin.reportedVersion },
    },
    ...(identity.moduleId
      ? {}
      : {
          capabilities: identity.capabilities ?? { iotEdge: false },
          deviceScope: identity.deviceScope ?? '',
          parentScopes: identity.parentScopes ?? [],
        }),
  };
}

export function deviceTwin(twin: TwinState): JsonObject {
  return {
    desired: { ...twin.desired, $version: twin.desiredVersion },
    reported: { ...twin.reported, $version: twin.reportedVersion },
  };
}
