import type { KeyObject } from 'node:crypto';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import { ADU_SERVICE_ROOT_KEYS } from './aduServiceRoots.ts';
import type { RootKeyDescription } from './aduServiceRoots.ts';
import { importPublicJwk, signingKeyHash } from './keys.ts';
import { parseRootKeyPackage, rootKeyObject, rootsThatSigned } from './rootKeyPackage.ts';
import type { RootKeyPackage } from './rootKeyPackage.ts';

export interface TrustStoreOptions {
  /** Roots built into this device or service (your own offline roots). */
  rootKeys?: readonly RootKeyDescription[];
  /** Also trust Microsoft's ADU service roots (ADU.200702.R, ADU.200703.R). Default true. */
  aduServiceRoots?: boolean;
  /** A test store takes only isTest packages and a production store only production ones. Default false. */
  testMode?: boolean;
  /** Distinct enabled roots that must have signed a root key package. Default 1. */
  packageSignatureThreshold?: number;
  /** The package the device holds already (as persisted from `rootKeyPackageJson`). */
  rootKeyPackage?: string | Uint8Array;
}

export type ApplyResult = { status: 'applied' | 'current'; version: number };

/**
 * What a verifier trusts: built-in roots plus those the current root key package adds, minus the roots and
 * signing keys it disables. Built-in roots can be disabled by a package but never removed; a newer package
 * replaces the previous one entirely (each package is a full statement, so un-listing a packaged root drops it).
 */
export class TrustStore {
  readonly testMode: boolean;
  readonly packageSignatureThreshold: number;
  #builtIn: Map<string, KeyObject>;
  #package: RootKeyPackage | undefined;
  #packageJson: string | undefined;
  #roots = new Map<string, KeyObject>();
  #disabledRoots = new Set<string>();
  #disabledSigningKeys = new Set<string>();

  constructor(options: TrustStoreOptions = {}) {
    this.testMode = options.testMode ?? false;
    this.packageSignatureThreshold = options.packageSignatureThreshold ?? 1;
    const builtIn = [...(options.aduServiceRoots === false ? [] : ADU_SERVICE_ROOT_KEYS), ...(options.rootKeys ?? [])];
    this.#builtIn = new Map(builtIn.map((root) => [root.kid, importPublicJwk(root.jwk, `root key ${root.kid}`, 'KEY_FILE_INVALID')]));
    this.#recompute();
    if (options.rootKeyPackage !== undefined) this.applyRootKeyPackage(options.rootKeyPackage);
  }

  /** An independent copy, for trying a package out without committing to it. */
  clone(): TrustStore {
    const copy = new TrustStore({ aduServiceRoots: false, testMode: this.testMode, packageSignatureThreshold: this.packageSignatureThreshold });
    copy.#builtIn = new Map(this.#builtIn);
    copy.#package = this.#package;
    copy.#packageJson = this.#packageJson;
    copy.#recompute();
    return copy;
  }

  get rootKeyPackage(): RootKeyPackage | undefined {
    return this.#package;
  }

  /** The accepted package's JSON, for the caller to persist and pass back in `rootKeyPackage` after a restart. */
  get rootKeyPackageJson(): string | undefined {
    return this.#packageJson;
  }

  get rootKeyPackageVersion(): number {
    return this.#package?.protected.version ?? 0;
  }

  enabledRootKids(): string[] {
    return [...this.#roots.keys()].filter((kid) => !this.#disabledRoots.has(kid));
  }

  /**
   * Verifies and adopts a root key package. Refuses one that is not newer than the current package (a stale or
   * replayed package could re-enable a revoked key), except the very same package again, which is 'current'.
   */
  applyRootKeyPackage(input: string | Uint8Array): ApplyResult {
    const pkg = parseRootKeyPackage(input);
    const contents = pkg.protected;
    if (contents.isTest !== this.testMode) {
      throw new OtaError(
        'ROOT_KEY_PACKAGE_TEST_MISMATCH',
        `root key package /protected/isTest: ${contents.isTest} package offered to a ${this.testMode ? 'test' : 'production'} trust store`,
        { field: '/protected/isTest' },
      );
    }
    const current = this.#package;
    if (current) {
      if (contents.version === current.protected.version && pkg.signedBytes.equals(current.signedBytes)) {
        return { status: 'current', version: contents.version };
      }
      if (contents.version <= current.protected.version) {
        throw new OtaError(
          'ROOT_KEY_PACKAGE_STALE',
          `root key package /protected/version: ${contents.version} is not newer than the held version ${current.protected.version}`,
          { field: '/protected/version' },
        );
      }
    }
    // Signers must be trusted now, and a root this package disables cannot vouch for its own revocation.
    const signers = new Map(
      this.enabledRootKids()
        .filter((kid) => !contents.disabledRootKeys.includes(kid))
        .map((kid) => [kid, this.#roots.get(kid)!] as const),
    );
    const signed = rootsThatSigned(pkg, signers);
    if (signed.size < this.packageSignatureThreshold) {
      throw new OtaError(
        'ROOT_KEY_PACKAGE_SIGNATURE_INVALID',
        `root key package /signatures: ${signed.size} valid signature(s) by trusted, enabled roots, ${this.packageSignatureThreshold} required ` +
          `(trusted: ${[...signers.keys()].join(', ') || 'none'})`,
        { field: '/signatures' },
      );
    }
    this.#package = pkg;
    this.#packageJson = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
    this.#recompute();
    return { status: 'applied', version: contents.version };
  }

  /** The root that signs signing keys: unknown and disabled are distinct failures of the chain. */
  resolveRootKey(kid: string, link: string): KeyObject {
    const key = this.#roots.get(kid);
    if (!key) {
      throw new OtaError('ROOT_KEY_UNKNOWN', `${link}: root key ${JSON.stringify(kid)} is not in the trust store`, { field: `${link}.kid` });
    }
    if (this.#disabledRoots.has(kid)) {
      throw new OtaError('ROOT_KEY_DISABLED', `${link}: root key ${JSON.stringify(kid)} is disabled by root key package version ${this.rootKeyPackageVersion}`, {
        field: `${link}.kid`,
      });
    }
    return key;
  }

  isSigningKeyDisabled(key: KeyObject): boolean {
    return this.#disabledSigningKeys.has(decodeAnyBase64(signingKeyHash(key))!.toString('hex'));
  }

  #recompute(): void {
    this.#roots = new Map(this.#builtIn);
    this.#disabledRoots = new Set();
    this.#disabledSigningKeys = new Set();
    const contents = this.#package?.protected;
    if (!contents) return;
    for (const [kid, key] of Object.entries(contents.rootKeys)) this.#roots.set(kid, rootKeyObject(kid, key));
    for (const kid of contents.disabledRootKeys) this.#disabledRoots.add(kid);
    // Only SHA256 identities can match the hash we compute; other algorithms are kept by ADU for future agents.
    for (const entry of contents.disabledSigningKeys) {
      if (entry.alg === 'SHA256') this.#disabledSigningKeys.add(decodeAnyBase64(entry.hash)!.toString('hex'));
    }
  }
}
