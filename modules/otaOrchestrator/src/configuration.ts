import path from 'node:path';

// Configuration from the module's environment (deployment createOptions/env) and from the module twin's desired
// `edgeOta` section. Bad values are reported (reported property `edgeOta.configurationErrors`) and the previous
// good value is kept, so a typo in a deployment never stops updates.

export interface TargetConfiguration {
  /** Compatibility properties matched against a manifest's `compatibility` (deviceManufacturer, deviceModel, ...). */
  properties: Record<string, string>;
}

export interface OrchestratorConfiguration {
  stateDir: string;
  /** Base URL of this gateway's content cache, e.g. http://contentCache:8080; downloads fall back to the origin. */
  contentCacheUrl: string | undefined;
  contentCacheToken: string | undefined;
  /** Bearer token for the cache's admin API (imports from USB bundles). */
  contentCacheAdminToken: string | undefined;
  /** JSON file with the trusted root keys: [{ "kid": "...", "jwk": {...} }]. */
  trustRootsFile: string | undefined;
  trustAduServiceRoots: boolean;
  allowManifestsWithoutLifetime: boolean;
  /** The gateway's own compatibility properties. */
  deviceProperties: Record<string, string>;
  /** Devices behind this gateway that it updates (children, MCUs), by device id. */
  targets: Record<string, TargetConfiguration>;
  fileRoots: string[];
  appsRoot: string;
  usbDropInDir: string | undefined;
  /** `exit-process`: "reboot" by ending the process (the runtime restarts it); otherwise a command to run. */
  rebootCommand: string;
}

export interface ConfigurationProblem {
  setting: string;
  message: string;
}

const stringMap = (value: unknown): value is Record<string, string> =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');

function parseJsonEnv(name: string, raw: string | undefined, problems: ConfigurationProblem[]): unknown {
  if (raw === undefined || raw.trim() === '') return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    problems.push({ setting: name, message: 'is not valid JSON' });
    return undefined;
  }
}

export function configurationFromEnvironment(env: NodeJS.ProcessEnv): { configuration: OrchestratorConfiguration; problems: ConfigurationProblem[] } {
  const problems: ConfigurationProblem[] = [];
  const stateDir = path.resolve(env.OTA_STATE_DIR ?? '/var/lib/edge-ota/orchestrator');
  const deviceProperties = parseJsonEnv('OTA_DEVICE_PROPERTIES', env.OTA_DEVICE_PROPERTIES, problems);
  if (deviceProperties !== undefined && !stringMap(deviceProperties)) problems.push({ setting: 'OTA_DEVICE_PROPERTIES', message: 'must be an object of strings' });
  const targets = parseTargets('OTA_TARGETS', parseJsonEnv('OTA_TARGETS', env.OTA_TARGETS, problems), problems) ?? {};
  const cacheUrl = env.OTA_CONTENT_CACHE_URL?.trim() || undefined;
  if (cacheUrl && !URL.canParse(cacheUrl)) problems.push({ setting: 'OTA_CONTENT_CACHE_URL', message: `${cacheUrl} is not a URL` });
  return {
    configuration: {
      stateDir,
      contentCacheUrl: cacheUrl && URL.canParse(cacheUrl) ? cacheUrl.replace(/\/+$/, '') : undefined,
      contentCacheToken: env.OTA_CONTENT_CACHE_TOKEN || undefined,
      contentCacheAdminToken: env.OTA_CONTENT_CACHE_ADMIN_TOKEN || undefined,
      trustRootsFile: env.OTA_TRUST_ROOTS_FILE || undefined,
      trustAduServiceRoots: env.OTA_TRUST_ADU_SERVICE_ROOTS !== '0',
      allowManifestsWithoutLifetime: env.OTA_ALLOW_MANIFESTS_WITHOUT_LIFETIME === '1',
      deviceProperties: stringMap(deviceProperties) ? deviceProperties : {},
      targets,
      fileRoots: (env.OTA_FILE_ROOTS ?? path.join(stateDir, 'files')).split(':').filter(Boolean).map((p) => path.resolve(p)),
      appsRoot: path.resolve(env.OTA_APPS_ROOT ?? path.join(stateDir, 'apps')),
      usbDropInDir: env.OTA_USB_DIR ? path.resolve(env.OTA_USB_DIR) : undefined,
      rebootCommand: env.OTA_REBOOT_COMMAND ?? 'exit-process',
    },
    problems,
  };
}

function parseTargets(setting: string, value: unknown, problems: ConfigurationProblem[]): Record<string, TargetConfiguration> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push({ setting, message: 'must be an object of deviceId -> { properties }' });
    return undefined;
  }
  const targets: Record<string, TargetConfiguration> = {};
  for (const [deviceId, target] of Object.entries(value as Record<string, unknown>)) {
    const properties = (target as { properties?: unknown } | null)?.properties;
    if (!stringMap(properties)) {
      problems.push({ setting: `${setting}.${deviceId}`, message: 'needs properties: an object of strings' });
      continue;
    }
    targets[deviceId] = { properties };
  }
  return targets;
}

/**
 * Applies the twin's desired `edgeOta` section on top of the environment: `deviceProperties`, `targets`
 * (replaced as a whole) and `contentCacheUrl`. Returns the problems found; invalid parts are ignored.
 */
export function applyDesiredConfiguration(base: OrchestratorConfiguration, desired: unknown): { configuration: OrchestratorConfiguration; problems: ConfigurationProblem[] } {
  const problems: ConfigurationProblem[] = [];
  if (desired === undefined || desired === null) return { configuration: base, problems };
  if (typeof desired !== 'object' || Array.isArray(desired)) {
    return { configuration: base, problems: [{ setting: 'edgeOta', message: 'must be an object' }] };
  }
  const section = desired as Record<string, unknown>;
  const configuration = { ...base };
  if (section.deviceProperties !== undefined) {
    if (stringMap(section.deviceProperties)) configuration.deviceProperties = section.deviceProperties;
    else problems.push({ setting: 'edgeOta.deviceProperties', message: 'must be an object of strings' });
  }
  if (section.targets !== undefined) {
    const targets = parseTargets('edgeOta.targets', section.targets, problems);
    if (targets) configuration.targets = targets;
  }
  if (section.contentCacheUrl !== undefined) {
    if (typeof section.contentCacheUrl === 'string' && URL.canParse(section.contentCacheUrl)) configuration.contentCacheUrl = section.contentCacheUrl.replace(/\/+$/, '');
    else problems.push({ setting: 'edgeOta.contentCacheUrl', message: 'must be an absolute URL' });
  }
  const known = new Set(['deviceProperties', 'targets', 'contentCacheUrl', '$version']);
  for (const key of Object.keys(section)) if (!known.has(key)) problems.push({ setting: `edgeOta.${key}`, message: 'is not a known setting' });
  return { configuration, problems };
}
