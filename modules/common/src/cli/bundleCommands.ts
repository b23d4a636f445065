import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { OtaError, isOtaError } from '../errors.ts';
import { CHILDREN_PREFIX } from '../bundle/layout.ts';
import { formatUpdateId } from '../manifest/types.ts';
import { inspectBundle } from '../bundle/bundleInspector.ts';
import { readBundle } from '../bundle/bundleReader.ts';
import { writeBundle } from '../bundle/bundleWriter.ts';
import { collectFiles, listFlag } from './fileArguments.ts';
import type { Flags as BaseFlags } from './fileArguments.ts';
import { trustStoreFromFlags } from './keyFiles.ts';
import type { TrustFlags } from './keyFiles.ts';
import { ProgressBar } from './output.ts';
import type { CommandOutput } from './output.ts';

type Flags = BaseFlags & TrustFlags;

export async function createBundle(flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  if (typeof flags.manifest !== 'string' || typeof flags.out !== 'string') {
    throw new OtaError('USAGE_ERROR', 'ota bundle create --manifest <updatemanifest.json> --files ... --out <file>');
  }
  const signaturePath = typeof flags.signature === 'string' ? flags.signature : `${flags.manifest}.jws`;
  const rootKeyPackage = typeof flags['root-key-package'] === 'string' ? await readFile(flags['root-key-package'], 'utf8') : undefined;
  const childFiles = typeof flags['child-files'] === 'string' ? flags['child-files'] : undefined;
  const bar = new ProgressBar('packing');
  let bytes: number;
  try {
    ({ bytes } = await writeBundle(
      {
        manifest: await readFile(flags.manifest),
        signature: (await readFile(signaturePath, 'utf8')).trim(),
        filePaths: await collectFiles(listFlag(flags.files)),
        ...(childFiles === undefined ? {} : { childFilePaths: await collectChildFiles(childFiles) }),
        ...(rootKeyPackage === undefined ? {} : { rootKeyPackage }),
      },
      flags.out,
      (p) => bar.update(p.bytesDone, p.bytesTotal),
    ));
  } catch (error) {
    // A child's file that was not found: say where it is looked for.
    if (!isOtaError(error, 'BUNDLE_FILE_MISSING') || !error.field?.startsWith(CHILDREN_PREFIX)) throw error;
    const expected = path.join(childFiles ?? '<dir>', ...error.field.slice(CHILDREN_PREFIX.length).split('/'));
    throw new OtaError('BUNDLE_FILE_MISSING', `${error.message}: expected at ${expected}${childFiles === undefined ? ' with --child-files <dir>' : ''}`, { field: error.field, cause: error });
  }
  bar.done();
  out.line(`bundle ${flags.out}: ${bytes} bytes`);
  return { file: flags.out, bytes };
}

/** --child-files <dir>: one folder per child update, named by the reference step's detachedManifestFileId. */
async function collectChildFiles(dir: string): Promise<Map<string, Map<string, string>>> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((cause: Error) => {
    throw new OtaError('IO_ERROR', `--child-files ${dir}: ${cause.message}`, { cause });
  });
  const children = new Map<string, Map<string, string>>();
  for (const entry of entries) if (entry.isDirectory()) children.set(entry.name, await collectFiles([path.join(dir, entry.name)]));
  return children;
}

export async function verifyBundle(positionals: string[], flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  const file = positionals[0];
  if (!file) throw new OtaError('USAGE_ERROR', 'ota bundle verify <bundle> --trust ... [--extract dir]');
  const trustStore = await trustStoreFromFlags(flags);
  const bar = new ProgressBar('verifying');
  const result = await readBundle(file, {
    trustStore,
    ...(typeof flags.extract === 'string' ? { extractTo: flags.extract } : {}),
    onProgress: (p) => bar.update(p.bytesDone, p.bytesTotal),
  });
  bar.done();
  out.line(`OK: ${formatUpdateId(result.manifest.updateId)} signed by ${result.signingKey.kid ?? '(no kid)'} under root ${result.rootKid}`);
  if (result.rootKeyPackage) out.line(`  root key package version ${result.rootKeyPackage.version}: ${result.rootKeyPackage.status}`);
  for (const f of result.files) {
    const of = f.child ? `  (child ${f.child.childManifestFileId}, reference step ${f.child.manifestStep})` : '';
    out.line(`  ${f.filename}${of}  ${f.sizeInBytes} bytes  sha256 ${f.sha256}${f.path ? `  -> ${f.path}` : ''}`);
  }
  return { ok: true, updateId: result.manifest.updateId, rootKid: result.rootKid, signingKey: result.signingKey.kid, rootKeyPackage: result.rootKeyPackage ?? null, files: result.files };
}

export async function inspect(positionals: string[], out: CommandOutput): Promise<Record<string, unknown>> {
  const file = positionals[0];
  if (!file) throw new OtaError('USAGE_ERROR', 'ota bundle inspect <bundle>');
  const result = await inspectBundle(file);
  out.line(`bundle ${file} (NOT verified; use "ota bundle verify")`);
  if (result.manifest) out.line(`  update ${formatUpdateId(result.manifest.updateId)}, edgeOta ${JSON.stringify(result.manifest.edgeOta ?? null)}`);
  if (result.signature) out.line(`  signature ${String(result.signature.alg)} by ${String(result.signature.signingKeyKid)} under root ${String(result.signature.rootKid)}`);
  if (result.rootKeyPackageVersion !== undefined) out.line(`  root key package version ${result.rootKeyPackageVersion}`);
  for (const e of result.entries) out.line(`  ${e.typeflag === '0' || e.typeflag === '\\0' ? '-' : e.typeflag} ${String(e.size).padStart(12)}  ${e.name}`);
  return { verified: false, ...result };
}
