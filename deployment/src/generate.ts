import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { deploymentDir, platforms } from './manifest.ts';
import type { ManifestOptions, Platform } from './manifest.ts';
import { generateManifest } from './manifestCheck.ts';

// `npm run deployment -- --platform amd64 ...`: writes a concrete deployment manifest from the templates, and only
// after it has passed the same schemas `az iot edge` and VS Code check against (nothing invalid is ever written).

/** KEY=VALUE lines of deployment/.env (iotedgedev's file); the process environment wins. */
function readDotEnv(file: string): Record<string, string> {
  if (!existsSync(file)) return {};
  const entries = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => [match[1]!, match[2]!.replace(/^(['"])(.*)\1$/, '$2')] as const);
  return Object.fromEntries(entries);
}

const usage = `usage: npm run deployment -- [--platform amd64|arm64v8] [--registry HOST] [--version V] [--debug]
         [--layered] [--nested-parent] [--api-proxy] [--parent-ca-file PATH] [--out DIR]`;

function main(): void {
  const { values } = parseArgs({
    options: {
      platform: { type: 'string' },
      registry: { type: 'string' },
      version: { type: 'string' },
      debug: { type: 'boolean', default: false },
      layered: { type: 'boolean', default: false },
      'nested-parent': { type: 'boolean', default: false },
      'api-proxy': { type: 'boolean', default: false },
      'parent-ca-file': { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  const env = { ...readDotEnv(path.join(deploymentDir, '.env')), ...process.env };
  const platform = values.platform ?? env.DEFAULT_PLATFORM ?? 'amd64';
  if (!platforms.includes(platform as Platform)) throw new Error(`--platform must be one of ${platforms.join(', ')}\n${usage}`);
  const username = env.CONTAINER_REGISTRY_USERNAME;
  const password = env.CONTAINER_REGISTRY_PASSWORD;
  const options: ManifestOptions = {
    platform: platform as Platform,
    registry: values.registry ?? env.CONTAINER_REGISTRY_SERVER ?? 'localhost:5000',
    version: values.version,
    debug: values.debug,
    layered: values.layered,
    nestedParent: values['nested-parent'],
    apiProxy: values['api-proxy'],
    parentCaFile: values['parent-ca-file'],
    registryCredentials: username && password ? { username, password } : undefined,
  };
  const { fileName, manifest } = generateManifest(options);
  const outDir = path.resolve(values.out ?? path.join(deploymentDir, env.CONFIG_OUTPUT_DIR ?? 'config'));
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, fileName);
  writeFileSync(file, `${JSON.stringify(manifest, null, 2)}\n`);
  process.stdout.write(`${file}\n`);
}

try {
  main();
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
}
