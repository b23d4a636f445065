import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Turns deployment.template.json (iotedgedev / VS Code conventions) into the manifests that IoT Hub accepts:
// ${MODULES.<folder>} placeholders become image names from each module's module.json, createOptions objects
// become the JSON strings edgeAgent expects (split into createOptions01.. like iotedgedev when long), and the
// variants for nested gateways and layered deployments are derived from the same template, so that what runs
// locally and what is pushed to Azure can never drift apart.

export const deploymentDir = fileURLToPath(new URL('../', import.meta.url));
export const repositoryRoot = path.resolve(deploymentDir, '..');
export const modulesDir = path.join(repositoryRoot, 'modules');

export type Platform = 'amd64' | 'arm64v8';
export const platforms: readonly Platform[] = ['amd64', 'arm64v8'];

export type JsonObject = Record<string, unknown>;

export interface ManifestOptions {
  platform: Platform;
  /** Registry host (and optional port/namespace) the module images come from, e.g. myregistry.azurecr.io. */
  registry: string;
  /** Image version; defaults to each module.json's tag.version. */
  version?: string;
  debug?: boolean;
  /** A layered deployment that adds the OTA modules and routes to gateways that already have a base deployment. */
  layered?: boolean;
  /** The manifest for a child gateway: images through the parent's API proxy, the cache filled from the parent. */
  nestedParent?: boolean;
  /** This gateway serves child gateways: add the API proxy module that exposes edgeHub, the registry and the cache on 443. */
  apiProxy?: boolean;
  registryCredentials?: { username: string; password: string };
  /** Host path of the trust bundle (config.toml trust_bundle_cert) that a child's cache uses to verify its parent's proxy. */
  parentCaFile?: string;
}

/** What iotedgedev and the VS Code extension split createOptions at; edgeAgent joins createOptions, 01 .. 07 again. */
const createOptionsChunk = 512;
const createOptionsMaxChunks = 8;
const upstreamRegistry = '$upstream:443';
const defaultParentCaFile = '/var/aziot/certs/azure-iot-test-only.root.ca.cert.pem';
const parentCaInContainer = '/etc/edge-ota/parent-ca.pem';
const apiProxyImage = 'azureiotedge-api-proxy:1.1';

export interface ModuleDescription {
  folder: string;
  repository: string;
  version: string;
  platforms: Record<string, string>;
  contextPath: string;
}

/** module.json of a module folder (iotedgedev's format). */
export function readModuleDescription(folder: string): ModuleDescription {
  const file = path.join(modulesDir, folder, 'module.json');
  if (!existsSync(file)) throw new Error(`${folder}: no modules/${folder}/module.json (is the module name a folder under modules/?)`);
  const json = JSON.parse(readFileSync(file, 'utf8')) as { image?: { repository?: string; tag?: { version?: string; platforms?: Record<string, string> }; contextPath?: string } };
  const image = json.image ?? {};
  if (!image.repository || !image.tag?.version || !image.tag.platforms) throw new Error(`${file}: image.repository, image.tag.version and image.tag.platforms are required`);
  return { folder, repository: image.repository, version: image.tag.version, platforms: image.tag.platforms, contextPath: image.contextPath ?? '.' };
}

export function readTemplate(debug: boolean): JsonObject {
  const file = path.join(deploymentDir, debug ? 'deployment.debug.template.json' : 'deployment.template.json');
  return JSON.parse(readFileSync(file, 'utf8')) as JsonObject;
}

/** `${MODULES.x}` -> `<registry>/<x lower-case>:<version>-<platform>`, `${MODULES.x.debug}` adds `.debug`, as iotedgedev does. */
export function imageFor(folder: string, options: Pick<ManifestOptions, 'platform' | 'registry' | 'version'>, debug: boolean): string {
  const module = readModuleDescription(folder);
  const tag = `${options.platform}${debug ? '.debug' : ''}`;
  if (!module.platforms[tag]) throw new Error(`${folder}: module.json has no platform ${tag}`);
  const repository = module.repository.replace(/\$\{?CONTAINER_REGISTRY_SERVER\}?/, options.registry);
  return `${repository}:${options.version ?? module.version}-${tag}`;
}

function mapStrings(value: unknown, replace: (text: string) => string): unknown {
  if (typeof value === 'string') return replace(value);
  if (Array.isArray(value)) return value.map((item) => mapStrings(item, replace));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, mapStrings(item, replace)]));
  }
  return value;
}

/** Every `${...}` or `$UPPER_CASE` left in string values: placeholders nobody replaced. `$upstream` and route keywords are lower-case. */
export function unreplacedPlaceholders(document: unknown): string[] {
  const found: string[] = [];
  mapStrings(document, (text) => {
    for (const match of text.matchAll(/\$\{[^}]*\}|\$[A-Z][A-Z0-9_]*/g)) found.push(match[0]);
    return text;
  });
  return found;
}

function desiredOf(manifest: JsonObject, moduleId: string): JsonObject {
  const content = manifest.modulesContent as JsonObject;
  return (content[moduleId] as JsonObject)['properties.desired'] as JsonObject;
}

/** createOptions objects -> strings, chunked. Applies to every module including the system modules. */
function stringifyCreateOptions(settings: JsonObject): void {
  const raw = settings.createOptions;
  if (raw === undefined) return;
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
  delete settings.createOptions;
  const chunks = text.match(new RegExp(`[\\s\\S]{1,${createOptionsChunk}}`, 'g')) ?? ['{}'];
  if (chunks.length > createOptionsMaxChunks) throw new Error(`createOptions of ${String(settings.image)} is ${text.length} characters: more than edgeAgent accepts`);
  chunks.forEach((chunk, i) => {
    settings[i === 0 ? 'createOptions' : `createOptions${String(i).padStart(2, '0')}`] = chunk;
  });
}

function allModules(agent: JsonObject): JsonObject[] {
  const system = agent.systemModules as Record<string, JsonObject>;
  const modules = agent.modules as Record<string, JsonObject>;
  return [...Object.values(system), ...Object.values(modules)];
}

function addApiProxy(manifest: JsonObject, options: ManifestOptions): void {
  const agent = desiredOf(manifest, '$edgeAgent');
  // The proxy takes 443 so that children need no other port for images and artifacts; edgeHub keeps 8883/5671,
  // and its own HTTPS (MQTT/AMQP over WebSockets) is relayed by the proxy's default location.
  const edgeHub = (agent.systemModules as Record<string, JsonObject>).edgeHub!;
  const hubOptions = (edgeHub.settings as JsonObject).createOptions as { HostConfig?: { PortBindings?: Record<string, unknown> } };
  delete hubOptions.HostConfig?.PortBindings?.['443/tcp'];
  const proxyConfig = readFileSync(path.join(deploymentDir, 'nested', 'apiProxy.nginx.conf'));
  (agent.modules as JsonObject).apiProxy = {
    version: '1.0',
    type: 'docker',
    status: 'running',
    restartPolicy: 'always',
    startupOrder: 3,
    settings: {
      image: `mcr.microsoft.com/${apiProxyImage}`,
      createOptions: { ExposedPorts: { '443/tcp': {} }, HostConfig: { PortBindings: { '443/tcp': [{ HostPort: '443' }] } } },
    },
    env: {
      PROXY_CONFIG_ENV_VAR_LIST: { value: 'NGINX_DEFAULT_PORT,DOCKER_REQUEST_ROUTE_ADDRESS,EDGE_OTA_CACHE_ADDRESS,EDGE_OTA_TOP_LAYER,IOTEDGE_PARENTHOSTNAME' },
      NGINX_DEFAULT_PORT: { value: '443' },
      // Top layer: a registry module (e.g. `registry:2` as "registry", port 5000) mirrors the images for the layers below.
      DOCKER_REQUEST_ROUTE_ADDRESS: { value: 'registry:5000' },
      EDGE_OTA_CACHE_ADDRESS: { value: 'contentCache:8080' },
      EDGE_OTA_TOP_LAYER: { value: options.nestedParent ? '0' : '1' },
    },
  };
  // The proxy reads its nginx configuration (base64) from its module twin; twin strings are limited to 4 KB.
  (manifest.modulesContent as JsonObject).apiProxy = { 'properties.desired': { proxy_config: proxyConfig.toString('base64') } };
}

/** `myregistry.azurecr.io/edge-ota/x:1` -> `$upstream:443/edge-ota/x:1`: the registry host is the parent's proxy. */
function throughParent(image: string): string {
  const [first, ...rest] = image.split('/');
  const hasRegistryHost = rest.length > 0 && (/[.:]/.test(first!) || first === 'localhost' || first === upstreamRegistry);
  return `${upstreamRegistry}/${(hasRegistryHost ? rest : [first, ...rest]).join('/')}`;
}

function makeChild(manifest: JsonObject, options: ManifestOptions): void {
  const agent = desiredOf(manifest, '$edgeAgent');
  // A child gateway has no route to a registry of its own: every image comes through its parent's API proxy.
  for (const module of allModules(agent)) {
    const settings = module.settings as JsonObject;
    settings.image = throughParent(String(settings.image));
  }
  const runtime = (agent.runtime as JsonObject).settings as JsonObject;
  const credentials = runtime.registryCredentials as Record<string, JsonObject> | undefined;
  for (const entry of Object.values(credentials ?? {})) entry.address = upstreamRegistry;
  // The child's cache fills from the parent's cache through the parent's API proxy (HTTPS on 443, the port that is
  // open between ISA-95 layers anyway), verifying the proxy's certificate with the device trust bundle.
  const cache = (agent.modules as Record<string, JsonObject>).contentCache;
  if (cache) {
    const env = (cache.env ??= {}) as Record<string, { value: string }>;
    env.CACHE_PARENT_TLS = { value: '1' };
    env.CACHE_PARENT_PORT = { value: '443' };
    env.CACHE_UPSTREAM_CA_FILE = { value: parentCaInContainer };
    env.CACHE_DIRECT_ORIGINS = { value: '0' };
    const hostConfig = (((cache.settings as JsonObject).createOptions as JsonObject).HostConfig ??= {}) as { Binds?: string[] };
    (hostConfig.Binds ??= []).push(`${options.parentCaFile ?? defaultParentCaFile}:${parentCaInContainer}:ro`);
  }
}

/** A full (base) deployment manifest, createOptions still objects: the shape the local runner and the variants work on. */
export function expandTemplate(template: JsonObject, options: ManifestOptions): JsonObject {
  const variables: Record<string, string> = {
    CONTAINER_REGISTRY_SERVER: options.registry,
    CONTAINER_REGISTRY_USERNAME: options.registryCredentials?.username ?? '',
    CONTAINER_REGISTRY_PASSWORD: options.registryCredentials?.password ?? '',
  };
  const manifest = mapStrings(template, (text) =>
    text
      .replace(/\$\{MODULES\.([A-Za-z0-9_]+)(\.debug)?\}/g, (_all, folder: string, debug?: string) => imageFor(folder, options, debug !== undefined))
      .replace(/\$\{?([A-Z][A-Z0-9_]*)\}?/g, (all, name: string) => variables[name] ?? all),
  ) as JsonObject;
  delete manifest['$schema-template'];
  const runtime = (desiredOf(manifest, '$edgeAgent').runtime as JsonObject).settings as JsonObject;
  // Without credentials (an anonymous or locally mirrored registry) the entry would only fail validation on the device.
  if (!options.registryCredentials) delete runtime.registryCredentials;
  if (options.apiProxy) addApiProxy(manifest, options);
  if (options.nestedParent) makeChild(manifest, options);
  return manifest;
}

/** The manifest as IoT Hub takes it: createOptions as (chunked) strings. */
export function finaliseManifest(expanded: JsonObject): JsonObject {
  const manifest = structuredClone(expanded);
  for (const module of allModules(desiredOf(manifest, '$edgeAgent'))) stringifyCreateOptions(module.settings as JsonObject);
  return manifest;
}

/** A route whose source is one of our modules: by its output path, or by `$connectionModuleId` (which also covers that module on child gateways). */
function startsAtModule(route: string, moduleId: string): boolean {
  return route.includes(`/messages/modules/${moduleId}/`) || route.includes(`$connectionModuleId = '${moduleId}'`);
}

/**
 * A layered deployment: the same modules, routes and module twins as paths into the base deployment's twins
 * (`properties.desired.modules.<m>`, `properties.desired.routes.<r>`), so it adds to whatever base the gateway has.
 */
export function toLayered(manifest: JsonObject): JsonObject {
  const agent = desiredOf(manifest, '$edgeAgent');
  const hub = desiredOf(manifest, '$edgeHub');
  const content: JsonObject = {
    $edgeAgent: Object.fromEntries(Object.entries(agent.modules as JsonObject).map(([id, module]) => [`properties.desired.modules.${id}`, module])),
    // Only routes from our own modules: how the gateway's other traffic (leaf telemetry included) flows is the
    // base deployment's decision, and a layer must not change it.
    $edgeHub: Object.fromEntries(
      Object.entries(hub.routes as JsonObject)
        .filter(([, route]) => Object.keys(agent.modules as JsonObject).some((id) => startsAtModule(JSON.stringify(route), id)))
        .map(([name, route]) => [`properties.desired.routes.${name}`, route]),
    ),
  };
  for (const [id, twin] of Object.entries(manifest.modulesContent as JsonObject)) {
    if (!id.startsWith('$')) content[id] = twin;
  }
  return { modulesContent: content };
}

/** What IoT Hub makes of a layered deployment on top of `base`: used to check that the result is a valid deployment. */
export function applyLayer(base: JsonObject, layered: JsonObject): JsonObject {
  const merged = structuredClone(base);
  const content = merged.modulesContent as JsonObject;
  for (const [id, twin] of Object.entries(layered.modulesContent as JsonObject)) {
    for (const [key, value] of Object.entries(twin as JsonObject)) {
      const parts = key.split('.');
      if (parts[0] !== 'properties' || parts[1] !== 'desired') throw new Error(`${id}: layered key ${key} is not under properties.desired`);
      let target = ((content[id] ??= {}) as JsonObject);
      target = ((target['properties.desired'] ??= {}) as JsonObject);
      const rest = parts.slice(2);
      if (rest.length === 0) {
        (content[id] as JsonObject)['properties.desired'] = structuredClone(value);
        continue;
      }
      for (const part of rest.slice(0, -1)) target = (target[part] ??= {}) as JsonObject;
      target[rest.at(-1)!] = structuredClone(value);
    }
  }
  return merged;
}

/** The manifest file name iotedgedev would use, with the variant spelled out. */
export function manifestFileName(options: ManifestOptions): string {
  const parts = ['deployment', options.debug ? 'debug' : '', options.layered ? 'layered' : '', options.nestedParent ? 'child' : '', options.apiProxy ? 'proxy' : '', options.platform];
  return `${parts.filter(Boolean).join('.')}.json`;
}
