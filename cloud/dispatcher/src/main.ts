import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { TrustStore, readRootPublicKeyFileSync, readSigningKeyFileSync, stopOnSignals } from '@edge-ota/common';
import { createDispatcher } from './app.ts';
import { writeTestKeys } from './keyFiles.ts';

// `npm run dispatcher -- --hub DIR/hub.json --data DIR2 [--port N] [--host H] [--signing-key F --trust F...] [--verbose]`

const usage = 'usage: npm run dispatcher -- --hub HUB_JSON --data DIR [--port N] [--host 127.0.0.1] [--public-url URL] '
  + '[--signing-key KEY.signing.key.json --trust ROOT.root.pub.json ...] [--no-event-hubs] [--verbose]';

function fail(message: string, code = 2): never {
  process.stderr.write(`dispatcher: ${message}\n${code === 2 ? `${usage}\n` : ''}`);
  process.exit(code);
}

let args;
try {
  args = parseArgs({
    options: {
      hub: { type: 'string' },
      data: { type: 'string' },
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'public-url': { type: 'string' },
      'signing-key': { type: 'string' },
      trust: { type: 'string', multiple: true, default: [] },
      'no-event-hubs': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }).values;
} catch (error) {
  fail((error as Error).message);
}
if (args.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
if (!args.hub) fail('--hub is required (the emulator writes <state-dir>/hub.json)');
if (!args.data) fail('--data is required');
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port ${args.port} is not a port number`);

interface HubJson { serviceConnectionString?: string; eventHubsConnectionString?: string; caFile?: string }
let hub: HubJson;
try {
  hub = JSON.parse(readFileSync(args.hub, 'utf8')) as HubJson;
} catch (error) {
  fail(`cannot read ${args.hub}: ${(error as Error).message}`);
}
if (!hub.serviceConnectionString) fail(`${args.hub} has no serviceConnectionString`);

// The service SDK has no CA option: Node must be told about the emulator's CA before it starts.
const extraCa = process.env.NODE_EXTRA_CA_CERTS;
if (hub.caFile && (!extraCa || path.resolve(extraCa) !== path.resolve(hub.caFile))) {
  process.stderr.write(`dispatcher: WARNING: NODE_EXTRA_CA_CERTS is ${extraCa ? `"${extraCa}"` : 'not set'}; connections to the hub will fail TLS verification.\n`
    + `  Start it as: NODE_EXTRA_CA_CERTS=${hub.caFile} npm run dispatcher -- ...\n`);
}

const dataDir = path.resolve(args.data);
let signingKeyFile = args['signing-key'];
let trustFiles = args.trust;
if (!signingKeyFile) {
  mkdirSync(dataDir, { recursive: true });
  const keys = writeTestKeys(dataDir);
  signingKeyFile = keys.signingKeyFile;
  if (trustFiles.length === 0) trustFiles = [keys.rootPublicFile];
  process.stderr.write(`dispatcher: *** NO --signing-key GIVEN: ${keys.created ? 'CREATED' : 'USING'} TEST-ONLY KEYS IN ${dataDir} ***\n`
    + `dispatcher: *** devices must trust ${keys.rootPublicFile}; never use these keys outside local testing ***\n`);
}
if (trustFiles.length === 0) fail('--trust <root public key> is required with --signing-key (bundles are verified against it)');

let signingKey;
let trustStore;
try {
  signingKey = readSigningKeyFileSync(signingKeyFile);
  trustStore = new TrustStore({ rootKeys: trustFiles.map(readRootPublicKeyFileSync), aduServiceRoots: false });
} catch (error) {
  fail((error as Error).message, 1);
}

const verbose = args.verbose;
const dispatcher = await createDispatcher({
  hubConnectionString: hub.serviceConnectionString,
  ...(hub.eventHubsConnectionString && !args['no-event-hubs'] ? { eventHubsConnectionString: hub.eventHubsConnectionString } : {}),
  dataDir,
  signingKey,
  trustStore,
  port,
  host: args.host,
  ...(args['public-url'] ? { publicUrl: args['public-url'] } : {}),
  log: (line) => {
    if (verbose || /certificate|self[- ]signed/i.test(line)) process.stderr.write(`dispatcher: ${line}\n`);
    if (/self[- ]signed|unable to verify|certificate/i.test(line)) {
      process.stderr.write(`dispatcher: TLS failure talking to the hub: start with NODE_EXTRA_CA_CERTS=${hub.caFile ?? '<hub.json caFile>'}\n`);
    }
  },
}).catch((error: unknown) => fail(`could not start: ${(error as Error).message}`, 1));

process.stdout.write(`dispatcher ready on ${dispatcher.url} (data ${dataDir}; event hubs ${dispatcher.eventHubs ? 'on' : 'off'}; Event Grid webhook ${dispatcher.url}/events/eventgrid)\n`);

stopOnSignals({ log: (line) => process.stderr.write(`dispatcher: ${line}\n`), stop: () => dispatcher.close() });
