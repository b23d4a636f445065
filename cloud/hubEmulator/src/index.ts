export { startHubEmulator } from './app.ts';
export type { HubEmulator, HubEmulatorOptions, HubInfo } from './app.ts';
export { startHubProcess, randomLoopbackAddress } from './hubProcess.ts';
export type { HubProcess, HubProcessOptions } from './hubProcess.ts';
export { HubFaults } from './faultClient.ts';
export { loadOrCreateCertificateAuthority } from './certificates.ts';
export { parseRoute, routesFromEdgeHubDesired } from './routes.ts';
export type { Route, RouteSink, RouteSource } from './routes.ts';
export { createSasToken } from './sharedAccessSignature.ts';
