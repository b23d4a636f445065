import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { OtaError } from '../errors.ts';
import { createBundle, inspect, verifyBundle } from './bundleCommands.ts';
import { buildPackage, createRoot, createSigning } from './keysCommands.ts';
import { CommandOutput } from './output.ts';
import type { Flags } from './fileArguments.ts';
import { importUpdate, verifyUpdate } from './updateCommands.ts';

export const USAGE = `ota - keys, signed update manifests and offline bundles for edge-ota

  ota keys create-root     --kid <kid> [--bits 3072] [--out-dir .]
  ota keys create-signing  --root <root.key.json> --kid <kid> [--alg ES256|EdDSA|RS256] [--out-dir .]
  ota keys package         --sign <root.key.json>... --out <pkg.json> [--root-pub <root.pub.json>...] [--from <pkg.json>]
                           [--version N] [--disable-root <kid>...] [--disable-signing <key|sjwk|hash>...] [--remove-root <kid>...] [--test]
  ota keys disable         --from <pkg.json> --sign <root.key.json>... --out <pkg.json> (--disable-root <kid> | --disable-signing <key|sjwk|hash>)...
  ota update import        <importmanifest.json> --files <file|dir>... --signing-key <key.json> [--out <file>]
                           [--expires-in 30d] [--rollback] [--minimum-version V] [--child <updatemanifest.json>...] [--manifest-id ID]
  ota update verify        <updatemanifest.json> [--signature <file>] <trust> [--device name=value...] [--installed-version V] [--at ISO]
  ota bundle create        --manifest <updatemanifest.json> [--signature <file>] [--root-key-package <pkg.json>] --files <file|dir>... --out <file>
                           [--child-files <dir>]   (a child update's files: <dir>/<detachedManifestFileId>/<filename>)
  ota bundle verify        <bundle> <trust> [--extract <dir>]
  ota bundle inspect       <bundle>

  <trust> = --trust <root.pub.json>... [--adu-roots] [--root-key-package <pkg.json>] [--test-mode]
  Every command takes --json for one JSON document on stdout. Progress bars go to stderr, only on a terminal.

Exit codes:
  0  success
  1  rejected: a signature, chain link, policy rule, manifest or bundle check failed (stderr names it)
  2  usage error
  3  I/O error, unreadable key file or unexpected failure
`;

const options = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  kid: { type: 'string' },
  bits: { type: 'string' },
  alg: { type: 'string' },
  root: { type: 'string' },
  'out-dir': { type: 'string' },
  out: { type: 'string' },
  sign: { type: 'string', multiple: true },
  'root-pub': { type: 'string', multiple: true },
  from: { type: 'string' },
  version: { type: 'string' },
  'disable-root': { type: 'string', multiple: true },
  'disable-signing': { type: 'string', multiple: true },
  'remove-root': { type: 'string', multiple: true },
  test: { type: 'boolean' },
  files: { type: 'string', multiple: true },
  'signing-key': { type: 'string' },
  'expires-in': { type: 'string' },
  rollback: { type: 'boolean' },
  'minimum-version': { type: 'string' },
  'manifest-id': { type: 'string' },
  child: { type: 'string', multiple: true },
  signature: { type: 'string' },
  trust: { type: 'string', multiple: true },
  'adu-roots': { type: 'boolean' },
  'root-key-package': { type: 'string' },
  'test-mode': { type: 'boolean' },
  device: { type: 'string', multiple: true },
  'installed-version': { type: 'string' },
  at: { type: 'string' },
  'allow-no-expiry': { type: 'boolean' },
  manifest: { type: 'string' },
  extract: { type: 'string' },
  'child-files': { type: 'string' },
} satisfies ParseArgsConfig['options'];

const REJECTED = 1;
const USAGE_ERROR = 2;
const FAILURE = 3;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    process.stderr.write(`ota: ${(error as Error).message}\n\n${USAGE}`);
    return USAGE_ERROR;
  }
  const { values: flags, positionals } = parsed;
  const [group, command, ...rest] = positionals;
  if (flags.help || !group || group === 'help') {
    process.stdout.write(USAGE);
    return group || flags.help ? 0 : USAGE_ERROR;
  }
  const out = new CommandOutput(flags.json === true);
  try {
    const result = await dispatch(`${group} ${command ?? ''}`, rest, flags, out);
    if (!result) {
      process.stderr.write(`ota: unknown command "${positionals.join(' ')}"\n\n${USAGE}`);
      return USAGE_ERROR;
    }
    out.finish(result);
    return 0;
  } catch (error) {
    return report(error, out);
  }
}

function dispatch(command: string, positionals: string[], flags: Flags, out: CommandOutput) {
  switch (command) {
    case 'keys create-root':
      return createRoot(flags, out);
    case 'keys create-signing':
      return createSigning(flags, out);
    case 'keys package':
      return buildPackage(flags, out, 'package');
    case 'keys disable':
      return buildPackage(flags, out, 'disable');
    case 'update import':
      return importUpdate(positionals, flags, out);
    case 'update verify':
      return verifyUpdate(positionals, flags, out);
    case 'bundle create':
      return createBundle(flags, out);
    case 'bundle verify':
      return verifyBundle(positionals, flags, out);
    case 'bundle inspect':
      return inspect(positionals, out);
    default:
      return undefined;
  }
}

function report(error: unknown, out: CommandOutput): number {
  if (error instanceof OtaError) {
    const code = error.code === 'USAGE_ERROR' ? USAGE_ERROR : error.code === 'IO_ERROR' || error.code === 'KEY_FILE_INVALID' ? FAILURE : REJECTED;
    if (out.json) process.stdout.write(`${JSON.stringify({ ok: false, error: error.toJSON() }, null, 2)}\n`);
    process.stderr.write(`ota: ${error.code} (0x${error.extendedResultCode.toString(16).padStart(8, '0')}): ${error.message}\n`);
    return code;
  }
  const message = error instanceof Error ? error.message : String(error);
  if (out.json) process.stdout.write(`${JSON.stringify({ ok: false, error: { code: 'UNEXPECTED', message } }, null, 2)}\n`);
  process.stderr.write(`ota: ${message}\n`);
  return FAILURE;
}

process.exitCode = await run(process.argv.slice(2));
