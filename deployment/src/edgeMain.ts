import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { repositoryRoot } from './manifest.ts';
import type { JsonObject } from './manifest.ts';
import { startLocalEdge } from './localRunner.ts';
import type { LocalHubInfo } from './localRunner.ts';

// `npm run edge -- --hub .state/hub/hub.json --device gw-1 --manifest deployment/config/deployment.amd64.json`
// Runs one gateway's modules locally against the hub emulator until SIGTERM or Ctrl-C.

const usage = `usage: npm run edge -- --device <gatewayId> [--hub .state/hub/hub.json] [--manifest FILE] [--state-dir DIR]
         [--modules a,b] [--env module.NAME=value ...] [--parent-host NAME] [--create-device]`;

const { values } = parseArgs({
  options: {
    hub: { type: 'string', default: path.join(repositoryRoot, '.state', 'hub', 'hub.json') },
    device: { type: 'string' },
    manifest: { type: 'string', default: path.join(repositoryRoot, 'deployment', 'deployment.template.json') },
    'state-dir': { type: 'string' },
    modules: { type: 'string' },
    env: { type: 'string', multiple: true, default: [] },
    'parent-host': { type: 'string' },
    'create-device': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (values.help || !values.device) {
  process.stderr.write(`${usage}\n`);
  process.exit(values.help ? 0 : 2);
}

/** `--env contentCache.CACHE_PORT=18080`: per-module settings on top of the deployment's, e.g. a free port. */
function envOverrides(entries: readonly string[]): Record<string, Record<string, string>> {
  const overrides: Record<string, Record<string, string>> = {};
  for (const entry of entries) {
    const match = /^([A-Za-z0-9_-]+)\.([^=]+)=(.*)$/.exec(entry);
    if (!match) throw new Error(`--env ${entry}: expected module.NAME=value`);
    (overrides[match[1]!] ??= {})[match[2]!] = match[3]!;
  }
  return overrides;
}

const hubInfo = JSON.parse(readFileSync(values.hub, 'utf8')) as LocalHubInfo;

// The service SDK (azure-iothub) has no CA option and Node reads NODE_EXTRA_CA_CERTS only at start-up, so the
// runner starts itself again with the emulator's CA when it was not given; signals are passed on to the copy.
if (process.env.NODE_EXTRA_CA_CERTS !== hubInfo.caFile) {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--conditions=source', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: hubInfo.caFile },
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal));
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  const edge = await startLocalEdge({
    hubInfo,
    deviceId: values.device,
    manifest: JSON.parse(readFileSync(values.manifest, 'utf8')) as JsonObject,
    stateDir: path.resolve(values['state-dir'] ?? path.join(repositoryRoot, '.state', 'edge', values.device)),
    modules: values.modules?.split(',').map((m) => m.trim()).filter(Boolean),
    envOverrides: envOverrides(values.env),
    parentHostName: values['parent-host'],
    createDevice: values['create-device'],
    log: (line) => void process.stdout.write(`${line}\n`),
  });
  const running = [...edge.modules.values()].map((m) => `${m.moduleId} (pid ${m.pid ?? '-'})`);
  const skipped = [...edge.skipped].map(([id, reason]) => `${id}: ${reason}`);
  process.stdout.write(`edge ${values.device} ready: ${running.join(', ') || 'no modules'}${skipped.length ? `; not run: ${skipped.join('; ')}` : ''}\n`);
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      edge.stop().then(
        () => process.exit(0),
        (error: unknown) => {
          process.stderr.write(`stopping failed: ${(error as Error).message}\n`);
          process.exit(1);
        },
      );
    });
  }
}
