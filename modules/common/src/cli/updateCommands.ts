import { readFile, writeFile } from 'node:fs/promises';
import { OtaError } from '../errors.ts';
import { parseImportManifest } from '../manifest/importManifest.ts';
import { updateManifestFromImport } from '../manifest/fromImportManifest.ts';
import type { DetachedManifestFile } from '../manifest/fromImportManifest.ts';
import { parseUpdateManifest } from '../manifest/updateManifest.ts';
import { formatUpdateId, isDetachedManifestPointer } from '../manifest/types.ts';
import { signUpdateManifest } from '../signing/manifestSigner.ts';
import { verifyUpdateManifest } from '../signing/manifestVerifier.ts';
import { checkUpdatePolicy } from '../policy/updatePolicy.ts';
import { collectFiles, hashFile, listFlag, parseDuration } from './fileArguments.ts';
import type { Flags as BaseFlags } from './fileArguments.ts';
import { readSigningKey, trustStoreFromFlags } from './keyFiles.ts';
import type { TrustFlags } from './keyFiles.ts';
import type { CommandOutput } from './output.ts';
import path from 'node:path';

type Flags = BaseFlags & TrustFlags;

/** `ota update import`: checks the payload files against the import manifest, then issues a signed update manifest. */
export async function importUpdate(positionals: string[], flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  const importPath = positionals[0];
  if (!importPath) throw new OtaError('USAGE_ERROR', 'ota update import <importmanifest.json> --files ... --signing-key ...');
  if (typeof flags['signing-key'] !== 'string') throw new OtaError('USAGE_ERROR', '--signing-key <signing key file> is required');
  const imported = parseImportManifest(await readFile(importPath));
  const files = await collectFiles(listFlag(flags.files));
  for (const [i, file] of (imported.files ?? []).entries()) {
    const filePath = files.get(file.filename);
    if (!filePath) throw new OtaError('BUNDLE_FILE_MISSING', `/files/${i}: ${file.filename} not found among --files`, { field: `/files/${i}` });
    const actual = await hashFile(filePath);
    if (actual.size !== file.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `/files/${i}/sizeInBytes: ${filePath} has ${actual.size} bytes, the import manifest says ${file.sizeInBytes}`, { field: `/files/${i}/sizeInBytes` });
    }
    if (Buffer.from(actual.sha256, 'base64').compare(Buffer.from(file.hashes.sha256, 'base64')) !== 0) {
      throw new OtaError('BUNDLE_HASH_MISMATCH', `/files/${i}/hashes/sha256: ${filePath} does not match`, { field: `/files/${i}/hashes/sha256` });
    }
  }
  const detachedManifests: DetachedManifestFile[] = [];
  for (const child of listFlag(flags.child)) {
    const bytes = await readFile(child);
    const manifest = parseUpdateManifest(bytes);
    if (isDetachedManifestPointer(manifest)) throw new OtaError('USAGE_ERROR', `--child ${child}: is a pointer, not a full update manifest`);
    const { sha256, size } = await hashFile(child);
    detachedManifests.push({ manifest, file: { filename: path.basename(child), sizeInBytes: size, hashes: { sha256 } } });
  }
  const signingKey = await readSigningKey(flags['signing-key']);
  const expiresIn = parseDuration(typeof flags['expires-in'] === 'string' ? flags['expires-in'] : '30d');
  const { manifest, bytes } = updateManifestFromImport(imported, {
    expiresDateTime: new Date(Date.now() + expiresIn),
    rollback: flags.rollback === true,
    detachedManifests,
    ...(typeof flags['minimum-version'] === 'string' ? { minimumVersion: flags['minimum-version'] } : {}),
    ...(typeof flags['manifest-id'] === 'string' ? { manifestId: flags['manifest-id'] } : {}),
  });
  const id = imported.updateId;
  const outPath = typeof flags.out === 'string' ? flags.out : `${id.provider}.${id.name}.${id.version}.updatemanifest.json`.toLowerCase();
  const signature = signUpdateManifest(bytes, signingKey);
  await writeFile(outPath, bytes);
  await writeFile(`${outPath}.jws`, signature);
  out.line(`update manifest for ${formatUpdateId(id)} -> ${outPath}`);
  out.line(`  signature -> ${outPath}.jws (${signingKey.alg}, signing key ${signingKey.kid})`);
  out.line(`  manifestId ${manifest.edgeOta!.manifestId}, expires ${manifest.edgeOta!.expiresDateTime}${manifest.edgeOta!.rollback ? ', signed rollback' : ''}`);
  return { manifestFile: outPath, signatureFile: `${outPath}.jws`, updateId: id, edgeOta: manifest.edgeOta, signingKey: signingKey.kid };
}

/** `ota update verify`: the signature chain, and the policy when device properties are given. */
export async function verifyUpdate(positionals: string[], flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  const manifestPath = positionals[0];
  if (!manifestPath) throw new OtaError('USAGE_ERROR', 'ota update verify <updatemanifest.json> [--signature file] --trust ...');
  const signaturePath = typeof flags.signature === 'string' ? flags.signature : `${manifestPath}.jws`;
  const store = await trustStoreFromFlags(flags);
  const verified = verifyUpdateManifest(await readFile(manifestPath), (await readFile(signaturePath, 'utf8')).trim(), store);
  out.line(`OK: ${formatUpdateId(verified.manifest.updateId)} signed by ${verified.signingKey.kid ?? '(no kid)'} (${verified.signingKey.alg}) under root ${verified.rootKid}`);
  const device = listFlag(flags.device);
  let policy: Record<string, unknown> | undefined;
  if (device.length > 0 || typeof flags['installed-version'] === 'string') {
    const properties = Object.fromEntries(device.map((pair) => {
      const eq = pair.indexOf('=');
      if (eq < 1) throw new OtaError('USAGE_ERROR', `--device ${pair}: use name=value`);
      return [pair.slice(0, eq), pair.slice(eq + 1)];
    }));
    const now = typeof flags.at === 'string' ? new Date(flags.at) : new Date();
    if (Number.isNaN(now.getTime())) throw new OtaError('USAGE_ERROR', '--at must be an ISO 8601 date-time');
    const decision = checkUpdatePolicy(verified.manifest, {
      properties,
      ...(typeof flags['installed-version'] === 'string' ? { installedVersion: flags['installed-version'] } : {}),
    }, { now, allowManifestsWithoutLifetime: flags['allow-no-expiry'] === true });
    policy = { ...decision };
    out.line(`OK: policy allows it for this device${decision.isRollback ? ' (signed rollback)' : ''}`);
  }
  return { ok: true, updateId: verified.manifest.updateId, rootKid: verified.rootKid, signingKey: { kid: verified.signingKey.kid, alg: verified.signingKey.alg, sha256: verified.signingKey.hash }, edgeOta: verified.manifest.edgeOta ?? null, ...(policy ? { policy } : {}) };
}
