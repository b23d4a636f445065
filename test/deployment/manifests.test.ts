import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyLayer, deploymentDir, expandTemplate, finaliseManifest, modulesDir, platforms, readTemplate, toLayered, unreplacedPlaceholders } from '../../deployment/src/manifest.ts';
import type { JsonObject, ManifestOptions } from '../../deployment/src/manifest.ts';
import { checkManifest, generateManifest } from '../../deployment/src/manifestCheck.ts';
import { createDeploymentValidator, defaultSchemaDir } from '../../deployment/src/schemas.ts';

const validator = createDeploymentValidator();
const examplesDir = path.join(defaultSchemaDir, 'examples');

type AgentDesired = {
  systemModules: Record<string, { settings: Record<string, string>; env?: Record<string, { value: string }> }>;
  modules: Record<string, { settings: Record<string, string>; env?: Record<string, { value: string }>; restartPolicy: string }>;
  runtime: { settings: { registryCredentials?: Record<string, { address: string }> } };
};

function agentOf(manifest: JsonObject): AgentDesired {
  return ((manifest.modulesContent as JsonObject).$edgeAgent as JsonObject)['properties.desired'] as AgentDesired;
}

function routesOf(manifest: JsonObject): Record<string, { route: string }> {
  return (((manifest.modulesContent as JsonObject).$edgeHub as JsonObject)['properties.desired'] as { routes: Record<string, { route: string }> }).routes;
}

/** edgeAgent joins createOptions, createOptions01, ... back into one JSON document. */
function createOptionsOf(settings: Record<string, string>): { HostConfig?: { Binds?: string[]; PortBindings?: Record<string, unknown> }; ExposedPorts?: Record<string, unknown> } {
  const keys = Object.keys(settings).filter((k) => /^createOptions\d*$/.test(k)).sort();
  return JSON.parse(keys.map((k) => settings[k]).join('')) as ReturnType<typeof createOptionsOf>;
}

const base: ManifestOptions = { platform: 'amd64', registry: 'contoso.azurecr.io' };
const variants: ManifestOptions[] = platforms.flatMap((platform) =>
  [false, true].flatMap((debug) =>
    [{}, { layered: true }, { nestedParent: true }, { apiProxy: true }, { nestedParent: true, apiProxy: true }].map((variant) => ({
      ...base,
      platform,
      debug,
      ...variant,
    })),
  ),
);

describe('the schema validator', () => {
  it('accepts SchemaStore\'s own positive examples for the schemas it uses', () => {
    const bySchema = { 'deployment-2.0': 'deployment', 'template-4.0': 'template', 'edgeagent-deployment-1.1': 'edgeAgent', 'edgehub-deployment-1.2': 'edgeHub' } as const;
    let checked = 0;
    for (const file of readdirSync(examplesDir).filter((f) => f.startsWith('test__azure-iot-edge'))) {
      const entry = Object.entries(bySchema).find(([key]) => file.includes(`-${key}__`));
      if (!entry) continue;
      expect(validator.check(entry[1], JSON.parse(readFileSync(path.join(examplesDir, file), 'utf8'))), file).toEqual([]);
      checked += 1;
    }
    expect(checked).toBeGreaterThanOrEqual(6);
  });

  it('rejects manifests the runtime would reject', () => {
    const example = JSON.parse(readFileSync(path.join(examplesDir, 'test__azure-iot-edge-deployment-2.0__deployment.json'), 'utf8')) as JsonObject;
    const noRuntime = structuredClone(example);
    delete (agentOf(noRuntime) as Partial<AgentDesired>).runtime;
    expect(validator.check('deployment', noRuntime).length).toBeGreaterThan(0);
    const badPolicy = structuredClone(example);
    const firstModule = Object.values(agentOf(badPolicy).modules)[0]!;
    firstModule.restartPolicy = 'sometimes';
    expect(validator.check('deployment', badPolicy).length).toBeGreaterThan(0);
    const objectCreateOptions = structuredClone(example);
    (Object.values(agentOf(objectCreateOptions).modules)[0]!.settings as Record<string, unknown>).createOptions = {};
    expect(validator.check('deployment', objectCreateOptions).length, 'a manifest takes createOptions as a string').toBeGreaterThan(0);
  });
});

describe('deployment templates', () => {
  it.each(['deployment.template.json', 'deployment.debug.template.json'])('%s is a valid template (schema 4.0: edgeAgent 1.1, edgeHub 1.2)', (file) => {
    const template = JSON.parse(readFileSync(path.join(deploymentDir, file), 'utf8')) as JsonObject;
    expect(validator.check('template', template)).toEqual([]);
  });

  it('names only module folders that exist, with the iotedgedev placeholder for the build kind', () => {
    for (const debug of [false, true]) {
      const text = JSON.stringify(readTemplate(debug));
      const names = [...text.matchAll(/\$\{MODULES\.([A-Za-z0-9_]+)(\.debug)?\}/g)];
      expect(names.map((m) => m[1]).sort()).toEqual(['contentCache', 'otaOrchestrator', 'serialTranslator']);
      for (const match of names) {
        expect(match[2] !== undefined, `${match[0]} in the ${debug ? 'debug ' : ''}template`).toBe(debug);
        expect(readdirSync(path.join(modulesDir, match[1]!))).toContain('module.json');
      }
    }
  });

  it('has the routes between our modules and $upstream that the architecture fixes', () => {
    const routes = Object.values(routesOf(finaliseManifest(expandTemplate(readTemplate(false), base)))).map((r) => r.route);
    expect(routes).toContain("FROM /messages/* WHERE $connectionModuleId = 'otaOrchestrator' INTO $upstream");
    expect(routes).toContain('FROM /messages/modules/serialTranslator/outputs/mcuProgress INTO BrokeredEndpoint("/modules/otaOrchestrator/inputs/mcuProgress")');
    expect(routes).toContain('FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream');
  });
});

describe.each(variants)('generated manifest %o', (options) => {
  const { manifest, fileName } = generateManifest(options, validator);

  it('validates against the deployment, edgeAgent and edgeHub schemas', () => {
    expect(checkManifest(validator, manifest, options)).toEqual([]);
    expect(fileName.endsWith(`.${options.platform}.json`)).toBe(true);
  });

  it('has every placeholder replaced', () => {
    expect(unreplacedPlaceholders(manifest)).toEqual([]);
    expect(JSON.stringify(manifest)).not.toContain('${');
  });

  it('uses images built for its platform and build kind', () => {
    const full = options.layered ? applyLayer(finaliseManifest(expandTemplate(readTemplate(false), { ...options, layered: false, debug: false })), manifest) : manifest;
    const modules = agentOf(full).modules;
    for (const id of ['otaOrchestrator', 'contentCache', 'serialTranslator']) {
      const registry = options.nestedParent ? '$upstream:443' : 'contoso.azurecr.io';
      expect(modules[id]!.settings.image).toBe(`${registry}/${id.toLowerCase()}:0.1.0-${options.platform}${options.debug ? '.debug' : ''}`);
      expect(() => createOptionsOf(modules[id]!.settings)).not.toThrow();
    }
  });
});

describe('variants', () => {
  it('a layered deployment adds modules and their routes by path, and leaves the system modules and other traffic alone', () => {
    const { manifest } = generateManifest({ ...base, layered: true }, validator);
    const content = manifest.modulesContent as Record<string, JsonObject>;
    expect(Object.keys(content.$edgeAgent!).sort()).toEqual(['properties.desired.modules.contentCache', 'properties.desired.modules.otaOrchestrator', 'properties.desired.modules.serialTranslator']);
    expect(Object.keys(content.$edgeHub!).sort()).toEqual(['properties.desired.routes.mcuProgressToOrchestrator', 'properties.desired.routes.otaFeedbackToUpstream']);
  });

  it('refuses a layered deployment that would need to change edgeHub', () => {
    expect(() => generateManifest({ ...base, layered: true, apiProxy: true }, validator)).toThrow(/only a base deployment/);
  });

  it('a child gateway pulls every image through its parent and fills its cache from the parent\'s proxy', () => {
    const { manifest } = generateManifest({ ...base, nestedParent: true, registryCredentials: { username: 'u', password: 'p' } }, validator);
    const agent = agentOf(manifest);
    for (const module of [...Object.values(agent.systemModules), ...Object.values(agent.modules)]) expect(module.settings.image).toMatch(/^\$upstream:443\/[^/]/);
    expect(Object.values(agent.runtime.settings.registryCredentials ?? {}).map((c) => c.address)).toEqual(['$upstream:443']);
    const cache = agent.modules.contentCache!;
    expect(cache.env).toMatchObject({ CACHE_PARENT_TLS: { value: '1' }, CACHE_PARENT_PORT: { value: '443' }, CACHE_DIRECT_ORIGINS: { value: '0' } });
    expect(createOptionsOf(cache.settings).HostConfig?.Binds).toContain(`/var/aziot/certs/azure-iot-test-only.root.ca.cert.pem:${cache.env!.CACHE_UPSTREAM_CA_FILE!.value}:ro`);
  });

  it('a parent gateway runs the API proxy on 443 with the configuration that exposes its cache', () => {
    const { manifest } = generateManifest({ ...base, apiProxy: true }, validator);
    const agent = agentOf(manifest);
    expect(createOptionsOf(agent.systemModules.edgeHub!.settings).HostConfig?.PortBindings).not.toHaveProperty('443/tcp');
    const proxy = agent.modules.apiProxy!;
    expect(createOptionsOf(proxy.settings).HostConfig?.PortBindings).toHaveProperty('443/tcp');
    const listed = proxy.env!.PROXY_CONFIG_ENV_VAR_LIST!.value.split(',');
    const twin = ((manifest.modulesContent as JsonObject).apiProxy as JsonObject)['properties.desired'] as { proxy_config: string };
    // IoT Hub refuses twin strings over 4 KB.
    expect(Buffer.byteLength(twin.proxy_config)).toBeLessThanOrEqual(4096);
    const config = Buffer.from(twin.proxy_config, 'base64').toString('utf8');
    expect(config).toBe(readFileSync(path.join(deploymentDir, 'nested', 'apiProxy.nginx.conf'), 'utf8'));
    // Every variable the configuration uses is one the proxy substitutes (or one of the proxy's own defaults).
    for (const [, name] of config.matchAll(/\$\{([A-Z_]+)\}/g)) expect(listed, name).toContain(name);
    for (const name of listed.filter((n) => n !== 'IOTEDGE_PARENTHOSTNAME')) expect(proxy.env, name).toHaveProperty(name);
    expect(config).toContain('${EDGE_OTA_CACHE_ADDRESS}');
    expect(proxy.env!.EDGE_OTA_CACHE_ADDRESS!.value).toBe('contentCache:8080');
  });

  it('splits createOptions longer than 512 characters into createOptions01.. as iotedgedev does', () => {
    const expanded = expandTemplate(readTemplate(false), base);
    const cache = agentOf(expanded).modules.contentCache!.settings as unknown as { createOptions: { Labels?: Record<string, string> } };
    cache.createOptions.Labels = { note: 'x'.repeat(1500) };
    const settings = agentOf(finaliseManifest(expanded)).modules.contentCache!.settings;
    expect(Object.keys(settings).filter((k) => k.startsWith('createOptions'))).toEqual(['createOptions', 'createOptions01', 'createOptions02', 'createOptions03']);
    expect(Object.values(settings).every((v) => v.length <= 512)).toBe(true);
    expect(createOptionsOf(settings)).toMatchObject({ Labels: { note: 'x'.repeat(1500) } });
    const layered = toLayered(finaliseManifest(expanded));
    expect(validator.check('deployment', applyLayer(finaliseManifest(expandTemplate(readTemplate(false), base)), layered))).toEqual([]);
  });

  it('omits registry credentials when none are given, instead of shipping empty ones', () => {
    expect(agentOf(generateManifest(base, validator).manifest).runtime.settings.registryCredentials).toBeUndefined();
    const withCredentials = agentOf(generateManifest({ ...base, registryCredentials: { username: 'u', password: 'p' } }, validator).manifest);
    expect(withCredentials.runtime.settings.registryCredentials).toEqual({ edgeOtaRegistry: { username: 'u', password: 'p', address: 'contoso.azurecr.io' } });
  });
});

/** `key = "value"` pairs of a config.toml, keyed `table.key` (top-level keys have no table); enough for the checks below. */
function tomlStrings(file: string): Record<string, string> {
  const values: Record<string, string> = {};
  let table = '';
  for (const line of readFileSync(path.join(deploymentDir, 'nested', file), 'utf8').split('\n')) {
    const header = /^\[([^\]]+)\]\s*$/.exec(line);
    if (header) table = header[1]!;
    const pair = /^([A-Za-z_]+)\s*=\s*"([^"]*)"\s*$/.exec(line);
    if (pair) values[table ? `${table}.${pair[1]}` : pair[1]!] = pair[2]!;
  }
  return values;
}

describe('nested topology examples', () => {
  const parent = tomlStrings('parent.config.toml');
  const child = tomlStrings('child.config.toml');

  it('chain the child to the parent and trust the same root', () => {
    expect(child.parent_hostname).toBe(parent.hostname);
    expect(parent.parent_hostname).toBeUndefined();
    expect(child.trust_bundle_cert).toBe(parent.trust_bundle_cert);
    expect(child['provisioning.iothub_hostname']).toBe(parent['provisioning.iothub_hostname']);
  });

  it('pull the child\'s first image through the parent, as its deployment does', () => {
    expect(parent['agent.config.image']).toBe('mcr.microsoft.com/azureiotedge-agent:1.6');
    expect(child['agent.config.image']).toBe('$upstream:443/azureiotedge-agent:1.6');
    const childAgent = agentOf(generateManifest({ ...base, nestedParent: true }, validator).manifest).systemModules.edgeAgent!;
    expect(childAgent.settings.image).toBe(child['agent.config.image']);
  });

  it('mount the trust bundle that config.toml names into the child\'s cache', () => {
    const cache = agentOf(generateManifest({ ...base, nestedParent: true }, validator).manifest).modules.contentCache!;
    const trustBundle = child.trust_bundle_cert!.replace(/^file:\/\//, '');
    expect(createOptionsOf(cache.settings).HostConfig?.Binds).toContain(`${trustBundle}:${cache.env!.CACHE_UPSTREAM_CA_FILE!.value}:ro`);
  });
});
