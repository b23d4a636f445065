import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatSummary, runFactory } from './factory.ts';
import { resolveHub } from './factoryIdentities.ts';
import type { HubTarget } from './factoryIdentities.ts';
import { FactoryError } from './factoryTopology.ts';

// `npm run factory -- --topology topology.json --hub <hub.json | service connection string> [--dispatcher URL]
//   [--out DIR] [--trust-bundle PEM] [--edge-ca-dir DIR [--edge-ca-days N]] [--trust ROOT.root.pub.json ...] [--json]`
// Exit codes: 0 done, 2 bad command line or topology (nothing was written), 1 anything else (hub, dispatcher,
// conflicts, output); the message names the stable code.

const usage = `usage: npm run factory -- --topology FILE --hub <hub.json | HostName=...;SharedAccessKeyName=...;SharedAccessKey=...>
         [--dispatcher http://host:port] [--out DIR (default ./factory-out)] [--trust-bundle PEM]
         [--edge-ca-dir DIR [--edge-ca-days 365]] [--trust ROOT.root.pub.json ...] [--json]`;

const INPUT_CODES = new Set(['USAGE', 'HUB_INVALID']);

function fail(error: unknown, json: boolean): never {
  const factoryError = error instanceof FactoryError ? error : new FactoryError('INTERNAL', (error as Error).stack ?? String(error));
  process.stderr.write(`factory: ${factoryError.code}: ${factoryError.message}\n`);
  if (factoryError.code === 'USAGE') process.stderr.write(`${usage}\n`);
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: factoryError.toJSON() })}\n`);
  process.exit(INPUT_CODES.has(factoryError.code) || factoryError.code.startsWith('TOPOLOGY_') ? 2 : 1);
}

let values: {
  topology?: string; hub?: string; dispatcher?: string; out: string; 'trust-bundle'?: string; 'edge-ca-dir'?: string; 'edge-ca-days'?: string; trust?: string[]; json: boolean; help: boolean;
};
try {
  values = parseArgs({
    options: {
      topology: { type: 'string' },
      hub: { type: 'string' },
      dispatcher: { type: 'string' },
      out: { type: 'string', default: 'factory-out' },
      'trust-bundle': { type: 'string' },
      'edge-ca-dir': { type: 'string' },
      trust: { type: 'string', multiple: true },
      'edge-ca-days': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  }).values;
} catch (error) {
  fail(new FactoryError('USAGE', (error as Error).message), process.argv.includes('--json'));
}

if (values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
if (!values.topology || !values.hub) fail(new FactoryError('USAGE', `${!values.topology ? '--topology' : '--hub'} is required`), values.json);

// `npm run` starts scripts in the repository root; relative paths mean what they meant in the caller's shell.
const callerDir = process.env.INIT_CWD ?? process.cwd();
const fromCaller = (file: string): string => path.resolve(callerDir, file);

let hub: HubTarget;
try {
  hub = resolveHub(/^\s*HostName=/i.test(values.hub) ? values.hub : fromCaller(values.hub));
} catch (error) {
  fail(error, values.json);
}

// The service SDK (azure-iothub) has no CA option and Node reads NODE_EXTRA_CA_CERTS only at start-up: against
// the emulator the command starts itself again with the hub.json caFile, as `npm run edge` does.
if (hub.caFile && process.env.NODE_EXTRA_CA_CERTS !== hub.caFile) {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--conditions=source', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: hub.caFile },
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal));
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  try {
    const result = await runFactory({
      topology: fromCaller(values.topology),
      hub,
      outDir: fromCaller(values.out),
      ...(values.dispatcher ? { dispatcher: values.dispatcher } : {}),
      ...(values['trust-bundle'] ? { trustBundleFile: fromCaller(values['trust-bundle']) } : {}),
      ...(values.trust?.length ? { trustRoots: values.trust.map(fromCaller) } : {}),
      ...(values['edge-ca-dir'] ? { edgeCaDir: fromCaller(values['edge-ca-dir']) } : {}),
      ...(values['edge-ca-days'] ? { edgeCaDays: Number(values['edge-ca-days']) } : {}),
      log: (line) => void process.stdout.write(`${line}\n`),
    });
    process.stdout.write(`${formatSummary(result)}\n`);
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  } catch (error) {
    fail(error, values.json);
  }
}
