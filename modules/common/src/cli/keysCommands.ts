import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { OtaError } from '../errors.ts';
import { decodeBase64url } from '../encoding.ts';
import { generateKeyPair, importPublicJwk, publicJwk, signingKeyHash, SIGNING_ALGORITHMS } from '../signing/keys.ts';
import type { SigningAlgorithm } from '../signing/keys.ts';
import { createSigningKey } from '../signing/manifestSigner.ts';
import { createRootKeyPackage, packagedRootKey, parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import type { RootKeyPackageContents } from '../signing/rootKeyPackage.ts';
import { ROOT_KEY_KIND, ROOT_PUBLIC_KIND, SIGNING_KEY_KIND, readRootKey, readRootPublicKey, writePrivateFile, writePublicFile } from './keyFiles.ts';
import type { CommandOutput } from './output.ts';
import { listFlag } from './fileArguments.ts';
import type { Flags } from './fileArguments.ts';


const KID = /^[A-Za-z0-9._-]{1,64}$/;

function requireString(flags: Flags, name: string): string {
  const value = flags[name];
  if (typeof value !== 'string' || value === '') throw new OtaError('USAGE_ERROR', `--${name} is required`);
  return value;
}

function kidFlag(flags: Flags): string {
  const kid = requireString(flags, 'kid');
  if (!KID.test(kid)) throw new OtaError('USAGE_ERROR', `--kid ${JSON.stringify(kid)}: use 1 to 64 of [A-Za-z0-9._-]`);
  return kid;
}

export async function createRoot(flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  const kid = kidFlag(flags);
  const bits = Number(flags.bits ?? 3072);
  if (![2048, 3072, 4096].includes(bits)) throw new OtaError('USAGE_ERROR', '--bits must be 2048, 3072 or 4096');
  const dir = typeof flags['out-dir'] === 'string' ? flags['out-dir'] : '.';
  // Root keys are RSA: ADU's root key package format admits no other root key type.
  const { privateKey, publicKey } = generateKeyPair('RS256', bits);
  const privatePath = path.join(dir, `${kid}.root.key.json`);
  const publicPath = path.join(dir, `${kid}.root.pub.json`);
  await writePrivateFile(privatePath, { kind: ROOT_KEY_KIND, kid, alg: 'RS256', privateJwk: privateKey.export({ format: 'jwk' }) });
  await writePublicFile(publicPath, { kind: ROOT_PUBLIC_KIND, kid, jwk: publicJwk(publicKey) });
  const fingerprint = signingKeyHash(publicKey);
  out.line(`root key ${kid} (RSA ${bits})`);
  out.line(`  private: ${privatePath} (mode 0600; keep offline)`);
  out.line(`  public:  ${publicPath}`);
  out.line(`  sha256 of public key: ${fingerprint}`);
  return { kid, bits, privateKeyFile: privatePath, publicKeyFile: publicPath, publicKeySha256: fingerprint };
}

export async function createSigning(flags: Flags, out: CommandOutput): Promise<Record<string, unknown>> {
  const kid = kidFlag(flags);
  const alg = (flags.alg ?? 'ES256') as SigningAlgorithm;
  if (!SIGNING_ALGORITHMS.includes(alg)) throw new OtaError('USAGE_ERROR', `--alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  const root = await readRootKey(requireString(flags, 'root'));
  const dir = typeof flags['out-dir'] === 'string' ? flags['out-dir'] : '.';
  const key = createSigningKey({ kid, alg, rootKid: root.kid, rootPrivateKey: root.privateKey });
  const privatePath = path.join(dir, `${kid}.signing.key.json`);
  const sjwkPath = path.join(dir, `${kid}.sjwk`);
  await writePrivateFile(privatePath, { kind: SIGNING_KEY_KIND, kid, alg, rootKid: root.kid, privateJwk: key.privateKey.export({ format: 'jwk' }), sjwk: key.sjwk });
  await writePublicFile(sjwkPath, key.sjwk);
  const hash = signingKeyHash(key.privateKey);
  out.line(`signing key ${kid} (${alg}) certified by root ${root.kid}`);
  out.line(`  private: ${privatePath} (mode 0600)`);
  out.line(`  sjwk:    ${sjwkPath}`);
  out.line(`  sha256 of public key (for disabling): ${hash}`);
  return { kid, alg, rootKid: root.kid, privateKeyFile: privatePath, sjwkFile: sjwkPath, publicKeySha256: hash };
}

/** A signing key to disable, given as its key file, its .sjwk file or its hash. */
async function signingKeyHashFrom(value: string): Promise<string> {
  if (/^[A-Za-z0-9_+/-]{43}=?$/.test(value)) return value;
  const text = (await readFile(value, 'utf8').catch((cause: Error) => {
    throw new OtaError('IO_ERROR', `--disable-signing ${value}: ${cause.message}`, { cause });
  })).trim();
  let sjwk = text;
  if (text.startsWith('{')) {
    const parsed = JSON.parse(text) as { kind?: string; sjwk?: string };
    if (parsed.kind !== SIGNING_KEY_KIND || typeof parsed.sjwk !== 'string') throw new OtaError('KEY_FILE_INVALID', `${value}: not a signing key file`);
    sjwk = parsed.sjwk;
  }
  const payload = decodeBase64url(sjwk.split('.')[1] ?? '');
  if (!payload) throw new OtaError('KEY_FILE_INVALID', `${value}: not an sjwk`);
  return signingKeyHash(importPublicJwk(JSON.parse(payload.toString('utf8')), value, 'KEY_FILE_INVALID'));
}

/** `keys package` (and `keys disable`, which is a package with more disabled entries than the previous one). */
export async function buildPackage(flags: Flags, out: CommandOutput, mode: 'package' | 'disable'): Promise<Record<string, unknown>> {
  const previousPath = typeof flags.from === 'string' ? flags.from : undefined;
  if (mode === 'disable' && !previousPath) throw new OtaError('USAGE_ERROR', 'keys disable needs --from <current root key package>');
  const previous = previousPath ? parseRootKeyPackage(await readFile(previousPath, 'utf8')).protected : undefined;
  const disableRoots = listFlag(flags['disable-root']);
  const disableSigning = await Promise.all(listFlag(flags['disable-signing']).map(signingKeyHashFrom));
  if (mode === 'disable' && disableRoots.length + disableSigning.length === 0) {
    throw new OtaError('USAGE_ERROR', 'keys disable needs --disable-root <kid> and/or --disable-signing <key file|sjwk file|hash>');
  }
  const version = flags.version === undefined ? (previous?.version ?? 0) + 1 : Number(flags.version);
  if (!Number.isSafeInteger(version) || version < 1) throw new OtaError('USAGE_ERROR', '--version must be a whole number >= 1');
  const rootKeys = { ...(previous?.rootKeys ?? {}) };
  for (const file of listFlag(flags['root-pub'])) {
    const root = await readRootPublicKey(file);
    rootKeys[root.kid] = packagedRootKey(importPublicJwk(root.jwk, file, 'KEY_FILE_INVALID'));
  }
  for (const kid of listFlag(flags['remove-root'])) delete rootKeys[kid];
  if (Object.keys(rootKeys).length === 0) throw new OtaError('USAGE_ERROR', 'a package lists at least one root: pass --root-pub <root public key file>');
  const signers = await Promise.all(listFlag(flags.sign).map(readRootKey));
  if (signers.length === 0) throw new OtaError('USAGE_ERROR', '--sign <root private key file> is required (repeat for several roots)');
  const contents: RootKeyPackageContents = {
    isTest: flags.test === true || (previous?.isTest ?? false),
    version,
    published: Math.floor(Date.now() / 1000),
    disabledRootKeys: [...new Set([...(previous?.disabledRootKeys ?? []), ...disableRoots])],
    disabledSigningKeys: [
      ...(previous?.disabledSigningKeys ?? []),
      ...disableSigning.filter((h) => !previous?.disabledSigningKeys.some((d) => d.hash === h)).map((hash) => ({ alg: 'SHA256' as const, hash })),
    ],
    rootKeys,
  };
  const outPath = requireString(flags, 'out');
  await writePublicFile(outPath, JSON.parse(createRootKeyPackage(contents, signers)));
  out.line(`root key package version ${version} -> ${outPath}`);
  out.line(`  roots: ${Object.keys(rootKeys).join(', ')}`);
  out.line(`  disabled roots: ${contents.disabledRootKeys.join(', ') || '(none)'}`);
  out.line(`  disabled signing keys: ${contents.disabledSigningKeys.map((d) => d.hash).join(', ') || '(none)'}`);
  out.line(`  signed by: ${signers.map((s) => s.kid).join(', ')}`);
  return { file: outPath, ...contents, signedBy: signers.map((s) => s.kid) };
}

