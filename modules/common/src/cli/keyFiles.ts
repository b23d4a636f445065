import { chmod, readFile, writeFile } from 'node:fs/promises';
import { OtaError } from '../errors.ts';
import { parseRootKeyFile, parseRootPublicKeyFile, parseSigningKeyFile } from '../signing/keyFiles.ts';
import type { RootKeyFile, RootPublicKeyFile } from '../signing/keyFiles.ts';
import type { SigningKey } from '../signing/manifestSigner.ts';
import { TrustStore } from '../signing/trustStore.ts';

// Writing key files for the CLI (private ones 0600, never overwritten, never printed) and reading them
// asynchronously; the formats and their parsing are in signing/keyFiles.ts.

export { ROOT_KEY_KIND, ROOT_PUBLIC_KIND, SIGNING_KEY_KIND } from '../signing/keyFiles.ts';

export async function writePrivateFile(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600, flag: 'wx' }).catch((cause: NodeJS.ErrnoException) => {
    throw new OtaError('IO_ERROR', `${path}: ${cause.code === 'EEXIST' ? 'exists already; key files are never overwritten' : cause.message}`, { cause });
  });
  // The mode above is filtered by umask; make 0600 explicit.
  await chmod(path, 0o600);
}

/** Strings are written as they are (an sjwk), anything else as JSON. */
export async function writePublicFile(path: string, value: unknown): Promise<void> {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  await writeFile(path, `${text}\n`, { flag: 'wx' }).catch((cause: NodeJS.ErrnoException) => {
    throw new OtaError('IO_ERROR', `${path}: ${cause.code === 'EEXIST' ? 'exists already' : cause.message}`, { cause });
  });
}

async function readKeyFileText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${path}: not a readable JSON key file`, { cause });
  }
}

export async function readRootKey(path: string): Promise<RootKeyFile> {
  return parseRootKeyFile(await readKeyFileText(path), path);
}

export async function readRootPublicKey(path: string): Promise<RootPublicKeyFile> {
  return parseRootPublicKeyFile(await readKeyFileText(path), path);
}

export async function readSigningKey(path: string): Promise<SigningKey> {
  return parseSigningKeyFile(await readKeyFileText(path), path);
}

export interface TrustFlags {
  trust?: string[];
  'adu-roots'?: boolean;
  'root-key-package'?: string;
  'test-mode'?: boolean;
}

export async function trustStoreFromFlags(flags: TrustFlags): Promise<TrustStore> {
  const rootKeys = await Promise.all((flags.trust ?? []).map(readRootPublicKey));
  if (rootKeys.length === 0 && !flags['adu-roots']) {
    throw new OtaError('USAGE_ERROR', 'no trusted roots: pass --trust <root public key file> and/or --adu-roots');
  }
  const rootKeyPackage = flags['root-key-package'] ? await readFile(flags['root-key-package'], 'utf8') : undefined;
  return new TrustStore({
    rootKeys,
    aduServiceRoots: flags['adu-roots'] === true,
    testMode: flags['test-mode'] === true,
    ...(rootKeyPackage === undefined ? {} : { rootKeyPackage }),
  });
}
