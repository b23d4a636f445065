import { createHash, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  SIGNING_ALGORITHMS,
  TrustStore,
  certifySigningKey,
  createRootKeyPackage,
  generateKeyPair,
  packagedRootKey,
  publicJwk,
  signUpdateManifest,
  signingKeyHash,
  verifyUpdateManifest,
} from '../src/index.ts';
import type { SigningKey } from '../src/index.ts';
import { base64url } from '../src/encoding.ts';
import { signCompactJws } from '../src/signing/jws.ts';
import { expectCode, makeRoot, makeSigningKey, rootDescription, signedManifest, trustStoreFor } from './fixtures.ts';

const root = makeRoot('contoso.root.1');
const otherRoot = makeRoot('contoso.root.2');
const signers = Object.fromEntries(SIGNING_ALGORITHMS.map((alg) => [alg, makeSigningKey(root, alg)])) as Record<string, SigningKey>;
const es256 = signers.ES256!;


/** Re-signs a JWS with an arbitrary header/payload using a given key, to forge well-formed but wrong tokens. */
function forge(header: Record<string, unknown>, payload: string, key: SigningKey): string {
  return signCompactJws(header, Buffer.from(payload), key.privateKey, key.alg);
}

function split(jws: string): [string, string, string] {
  return jws.split('.') as [string, string, string];
}

describe('update manifest signing round trips', () => {
  for (const alg of SIGNING_ALGORITHMS) {
    it(`signs and verifies with ${alg}`, () => {
      const { bytes, signature } = signedManifest(signers[alg]!);
      const verified = verifyUpdateManifest(bytes, signature, trustStoreFor(root));
      expect(verified.rootKid).toBe(root.kid);
      expect(verified.signingKey.alg).toBe(alg);
      expect(verified.signingKey.kid).toBe(`signer-${alg}`);
      expect(verified.manifestBytes.equals(bytes)).toBe(true);
      expect(verified.manifest.updateId.name).toBe('Toaster');
      const [header] = split(signature);
      expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toMatchObject({ alg });
    });
  }

  it('works with EC P-256 and Ed25519 roots built into a trust store (packages still carry RSA roots only)', () => {
    for (const alg of ['ES256', 'EdDSA'] as const) {
      const { privateKey, publicKey } = generateKeyPair(alg);
      const compactRoot = { kid: `root-${alg}`, privateKey, publicKey };
      const m = signedManifest(makeSigningKey(compactRoot, 'EdDSA'));
      expect(verifyUpdateManifest(m.bytes, m.signature, trustStoreFor(compactRoot)).rootKid, alg).toBe(`root-${alg}`);
    }
  });

  it('puts ADU-shaped payload and sjwk in the JWS', () => {
    const { bytes, signature } = signedManifest(signers.RS256!);
    const [, payload] = split(signature);
    expect(JSON.parse(Buffer.from(payload, 'base64url').toString())).toEqual({ sha256: createHash('sha256').update(bytes).digest('base64') });
    const sjwk = (JSON.parse(Buffer.from(split(signature)[0], 'base64url').toString()) as { sjwk: string }).sjwk;
    expect(JSON.parse(Buffer.from(split(sjwk)[0], 'base64url').toString())).toEqual({ kid: root.kid, alg: 'RS256' });
    expect(JSON.parse(Buffer.from(split(sjwk)[1], 'base64url').toString())).toMatchObject({ kty: 'RSA', alg: 'RS256', kid: 'signer-RS256', e: 'AQAB' });
  });

  it('ES256 and EdDSA signatures are compact enough for a 4 KB twin value', () => {
    for (const alg of ['ES256', 'EdDSA']) expect(signedManifest(signers[alg]!).signature.length, alg).toBeLessThan(1200);
  });

  it('accepts a valid signature when the manifest is sent as a string', () => {
    const { bytes, signature } = signedManifest(es256);
    expect(() => verifyUpdateManifest(bytes.toString('utf8'), signature, trustStoreFor(root))).not.toThrow();
  });
});

describe('every link of the chain fails on its own', () => {
  const { bytes, signature } = signedManifest(es256);
  const store = trustStoreFor(root);
  const [headerPart, payloadPart, signaturePart] = split(signature);
  const header = JSON.parse(Buffer.from(headerPart, 'base64url').toString()) as { sjwk: string };
  const [sjwkHeader, sjwkPayload, sjwkSignature] = split(header.sjwk);

  it('manifest bytes changed by one byte: hash mismatch', () => {
    const tampered = Buffer.from(bytes);
    tampered[10]! ^= 1;
    expectCode(() => verifyUpdateManifest(tampered, signature, store), 'MANIFEST_HASH_MISMATCH', /manifest signature: payload sha256/);
  });

  it('manifest re-serialized (same JSON, other bytes): hash mismatch', () => {
    const pretty = JSON.stringify(JSON.parse(bytes.toString()), null, 2);
    expectCode(() => verifyUpdateManifest(pretty, signature, store), 'MANIFEST_HASH_MISMATCH');
  });

  it('manifest signature bytes flipped: signature invalid at the manifest link', () => {
    const sig = Buffer.from(signaturePart, 'base64url');
    sig[5]! ^= 0xff;
    expectCode(() => verifyUpdateManifest(bytes, `${headerPart}.${payloadPart}.${base64url(sig)}`, store), 'SIGNATURE_INVALID', /manifest signature \(signed by signer-ES256\)/);
  });

  it('payload swapped for another manifest digest: signature invalid', () => {
    const other = base64url(JSON.stringify({ sha256: createHash('sha256').update('evil').digest('base64') }));
    expectCode(() => verifyUpdateManifest('evil', `${headerPart}.${other}.${signaturePart}`, store), 'SIGNATURE_INVALID');
  });

  it('sjwk signature flipped: signing key signature invalid at the root link', () => {
    const sig = Buffer.from(sjwkSignature, 'base64url');
    sig[0]! ^= 0xff;
    const badHeader = base64url(JSON.stringify({ ...header, sjwk: `${sjwkHeader}.${sjwkPayload}.${base64url(sig)}` }));
    expectCode(() => verifyUpdateManifest(bytes, `${badHeader}.${payloadPart}.${signaturePart}`, store), 'SIGNING_KEY_SIGNATURE_INVALID', /signed by root contoso\.root\.1/);
  });

  it('attacker key certified by an unknown root: root key unknown', () => {
    const attackerRoot = makeRoot('attacker.root');
    const attacker = makeSigningKey(attackerRoot, 'ES256');
    expectCode(() => verifyUpdateManifest(bytes, signUpdateManifest(bytes, attacker), store), 'ROOT_KEY_UNKNOWN', /"attacker\.root"/);
  });

  it('attacker key with a forged sjwk claiming our root kid: signing key signature invalid', () => {
    const attackerRoot = { ...makeRoot('x'), kid: root.kid };
    const attacker = makeSigningKey(attackerRoot, 'ES256');
    expectCode(() => verifyUpdateManifest(bytes, signUpdateManifest(bytes, attacker), store), 'SIGNING_KEY_SIGNATURE_INVALID');
  });

  it('real sjwk, manifest signed by a different key: signature invalid', () => {
    const impostor = { ...makeSigningKey(root, 'ES256'), sjwk: es256.sjwk };
    expectCode(() => verifyUpdateManifest(bytes, signUpdateManifest(bytes, impostor), store), 'SIGNATURE_INVALID');
  });

  it('alg in the manifest header differs from the key type: algorithm refused', () => {
    const rsa = { ...signers.RS256!, sjwk: es256.sjwk };
    expectCode(() => verifyUpdateManifest(bytes, signUpdateManifest(bytes, rsa), store), 'SIGNATURE_ALGORITHM_UNSUPPORTED');
  });

  it('alg "none" and HS256 are refused before any key is touched', () => {
    for (const alg of ['none', 'HS256', 'PS256', 'ES512']) {
      const h = base64url(JSON.stringify({ alg, sjwk: header.sjwk }));
      expectCode(() => verifyUpdateManifest(bytes, `${h}.${payloadPart}.${signaturePart}`, store), 'SIGNATURE_ALGORITHM_UNSUPPORTED', new RegExp(alg));
    }
  });

  it('header without sjwk: signing key missing', () => {
    const h = base64url(JSON.stringify({ alg: 'ES256' }));
    expectCode(() => verifyUpdateManifest(bytes, `${h}.${payloadPart}.${signaturePart}`, store), 'SIGNING_KEY_MISSING');
  });

  it('sjwk without kid: malformed signing key', () => {
    const sjwk = forge({ alg: 'RS256' }, Buffer.from(sjwkPayload, 'base64url').toString(), signers.RS256!);
    const h = base64url(JSON.stringify({ alg: 'ES256', sjwk }));
    expectCode(() => verifyUpdateManifest(bytes, `${h}.${payloadPart}.${signaturePart}`, store), 'SIGNING_KEY_MALFORMED', /kid/);
  });

  it('sjwk payload that is not a JWK, or carries a private key, or a weak RSA key: malformed signing key', () => {
    const weak = { kty: 'RSA', n: base64url(Buffer.alloc(128, 0xff)), e: 'AQAB' };
    const privateJwk = { ...publicJwk(es256.privateKey), d: 'AAAA' };
    for (const payload of ['not json', '[]', JSON.stringify(weak), JSON.stringify(privateJwk), JSON.stringify({ kty: 'EC', crv: 'P-384', x: 'AA', y: 'AA' })]) {
      const sjwk = signCompactJws({ kid: root.kid }, Buffer.from(payload), root.privateKey, 'RS256');
      const h = base64url(JSON.stringify({ alg: 'ES256', sjwk }));
      expectCode(() => verifyUpdateManifest(bytes, `${h}.${payloadPart}.${signaturePart}`, store), 'SIGNING_KEY_MALFORMED', undefined);
    }
  });

  it('structurally broken JWS strings: malformed signature', () => {
    const cases = ['', 'a.b', 'a.b.c.d', `${headerPart}.${payloadPart}.`, `!!.${payloadPart}.${signaturePart}`, `${base64url('{')}.${payloadPart}.${signaturePart}`,
      `${base64url('[1]')}.${payloadPart}.${signaturePart}`, `${base64url(JSON.stringify({ alg: 'ES256', sjwk: header.sjwk, crit: ['exp'] }))}.${payloadPart}.${signaturePart}`,
      'x'.repeat(70_000)];
    for (const jws of cases) expectCode(() => verifyUpdateManifest(bytes, jws, store), 'SIGNATURE_MALFORMED');
  });

  it('payload that is not {"sha256": 32 bytes}: malformed signature', () => {
    for (const payload of ['[]', '{}', '{"sha256": "AAAA"}', '{"sha256": 5}', 'nope']) {
      expectCode(() => verifyUpdateManifest(bytes, forge({ sjwk: es256.sjwk }, payload, es256), store), 'SIGNATURE_MALFORMED');
    }
  });

  it('ES256 signature in DER instead of JWS form: refused', () => {
    const der = sign('sha256', Buffer.from(`${headerPart}.${payloadPart}`), es256.privateKey);
    expectCode(() => verifyUpdateManifest(bytes, `${headerPart}.${payloadPart}.${base64url(der)}`, store), 'SIGNATURE_INVALID', /64 bytes/);
  });

  it('signed bytes that are not a valid manifest: manifest invalid after the chain holds', () => {
    const garbage = Buffer.from('{"hello":"world"}');
    expectCode(() => verifyUpdateManifest(garbage, signUpdateManifest(garbage, es256), store), 'UPDATE_MANIFEST_INVALID');
  });
});

describe('root key package effects on verification', () => {
  const signer = makeSigningKey(root, 'EdDSA', 'signer-rotating');
  const { bytes, signature } = signedManifest(signer);
  const contents = (version: number, extra: Partial<Parameters<typeof createRootKeyPackage>[0]> = {}) => ({
    isTest: false,
    version,
    published: 1_700_000_000 + version,
    disabledRootKeys: [],
    disabledSigningKeys: [],
    rootKeys: { [otherRoot.kid]: packagedRootKey(otherRoot.publicKey) },
    ...extra,
  });

  it('a disabled signing key is refused at the signing key link', () => {
    const store = trustStoreFor(root);
    store.applyRootKeyPackage(
      createRootKeyPackage(contents(1, { disabledSigningKeys: [{ alg: 'SHA256', hash: signingKeyHash(signer.privateKey) }] }), [root]),
    );
    expectCode(() => verifyUpdateManifest(bytes, signature, store), 'SIGNING_KEY_DISABLED', /signer-rotating .* version 1/);
    // Other keys under the same root still work.
    const fresh = signedManifest(es256);
    expect(() => verifyUpdateManifest(fresh.bytes, fresh.signature, store)).not.toThrow();
  });

  it('a disabled signing key is matched whatever base64 flavour the package uses', () => {
    const store = trustStoreFor(root);
    const hash = Buffer.from(signingKeyHash(signer.privateKey), 'base64url').toString('base64');
    store.applyRootKeyPackage(createRootKeyPackage(contents(1, { disabledSigningKeys: [{ alg: 'SHA256', hash }] }), [root]));
    expectCode(() => verifyUpdateManifest(bytes, signature, store), 'SIGNING_KEY_DISABLED');
  });

  it('a disabled root is refused at the root link, and keys re-certified under a packaged root work', () => {
    const store = trustStoreFor(root, otherRoot);
    store.applyRootKeyPackage(createRootKeyPackage(contents(1, { disabledRootKeys: [root.kid] }), [otherRoot]));
    expectCode(() => verifyUpdateManifest(bytes, signature, store), 'ROOT_KEY_DISABLED', /contoso\.root\.1/);
    const recertified = { ...signer, sjwk: certifySigningKey(signer.privateKey, { kid: signer.kid, alg: signer.alg, rootKid: otherRoot.kid, rootPrivateKey: otherRoot.privateKey }) };
    const again = signUpdateManifest(bytes, recertified);
    expect(verifyUpdateManifest(bytes, again, store).rootKid).toBe(otherRoot.kid);
  });

  it('a root added only by a package is trusted once the package is applied', () => {
    const third = makeRoot('contoso.root.3');
    const key = makeSigningKey(third, 'ES256');
    const m = signedManifest(key);
    const store = trustStoreFor(root);
    expectCode(() => verifyUpdateManifest(m.bytes, m.signature, store), 'ROOT_KEY_UNKNOWN');
    store.applyRootKeyPackage(createRootKeyPackage(contents(1, { rootKeys: { [third.kid]: packagedRootKey(third.publicKey) } }), [root]));
    expect(verifyUpdateManifest(m.bytes, m.signature, store).rootKid).toBe(third.kid);
  });

  it('trusts Microsoft ADU service roots by default, and only if asked otherwise', () => {
    expect(new TrustStore().enabledRootKids()).toEqual(['ADU.200702.R', 'ADU.200703.R']);
    expect(new TrustStore({ aduServiceRoots: false, rootKeys: [rootDescription(root)] }).enabledRootKids()).toEqual([root.kid]);
    // A signing key claiming an ADU root but signed by someone else fails at the root link, with the real modulus.
    const fake = makeSigningKey({ ...root, kid: 'ADU.200702.R' }, 'RS256');
    const m = signedManifest(fake);
    expectCode(() => verifyUpdateManifest(m.bytes, m.signature, new TrustStore()), 'SIGNING_KEY_SIGNATURE_INVALID', /ADU\.200702\.R/);
  });
});
