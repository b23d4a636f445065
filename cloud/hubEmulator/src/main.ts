import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stopOnSignals } from '@edge-ota/common';
import { startHubEmulator } from './app.ts';

// `npm run hub -- --state-dir DIR [--address 127.0.0.N] [--event-grid-webhook URL ...] [--ca-dir DIR] [--verbose]`

const usage = 'usage: npm run hub -- --state-dir DIR [--address 127.0.0.N] [--host-name NAME] [--event-grid-webhook URL ...] [--ca-dir DIR] [--verbose] [--stop-on-stdin-eof]';

function fail(message: string): never {
  process.stderr.write(`hub: ${message}\n${usage}\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      'state-dir': { type: 'string' },
      address: { type: 'string', default: '127.0.0.1' },
      'host-name': { type: 'string' },
      'event-grid-webhook': { type: 'string', multiple: true, default: [] },
      'ca-dir': { type: 'string' },
      verbose: { type: 'boolean', default: false },
      'stop-on-stdin-eof': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }).values;
} catch (error) {
  fail((error as Error).message);
}
if (parsed.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
const stateDir = parsed['state-dir'];
if (!stateDir) fail('--state-dir is required');
const address = parsed.address;
if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address)) fail(`--address must be a loopback IPv4 address (127.x.y.z), not ${address}`);
for (const url of parsed['event-grid-webhook']) {
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) fail(`--event-grid-webhook ${url} is not an http(s) URL`);
}

const verbose = parsed.verbose;
const emulator = await startHubEmulator({
  stateDir,
  address,
  hostName: parsed['host-name'],
  caDir: parsed['ca-dir'],
  eventGridWebhooks: parsed['event-grid-webhook'],
  log: (line) => {
    if (verbose) process.stderr.write(`hub: ${line}\n`);
  },
}).catch((error: unknown) => fail(`could not start: ${(error as Error).message}`));

const hubFile = path.join(path.resolve(stateDir), 'hub.json');
writeFileSync(hubFile, `${JSON.stringify(emulator.info, null, 2)}\n`);
process.stdout.write(`hub emulator ready on ${emulator.info.hostName} (https :${emulator.info.httpsPort}, mqtts :${emulator.info.mqttPort}); ${hubFile}\n`);

const stop = stopOnSignals({ log: (line) => process.stderr.write(`hub: ${line}\n`), stop: () => emulator.stop() });
if (parsed['stop-on-stdin-eof']) {
  // Started by a test or a runner that holds our stdin: when it dies, even by SIGKILL, the pipe closes and so do we.
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin closed'));
  process.stdin.resume();
}
