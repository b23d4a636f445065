// Builds signed MCUboot images the way imgtool does, so tests and the bench need no Python tooling.
import { createHash, createPublicKey, sign, constants } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { IMAGE_HEADER_SIZE, IMAGE_MAGIC, TLV, TLV_INFO_MAGIC, TLV_PROT_INFO_MAGIC, mcubootKeyBytes } from './mcubootImage.ts';
import type { ImageVersion } from './mcubootImage.ts';

export interface BuildImageOptions {
  payload: Uint8Array;
  version: ImageVersion | string;
  /** Zephyr reserves 0x200 for the header (CONFIG_ROM_START_OFFSET); imgtool's --header-size. */
  headerSize?: number;
  loadAddr?: number;
  flags?: number;
  /** Private key: Ed25519, ECDSA P-256 or RSA-2048. Without one the image carries only its SHA-256. */
  signingKey?: KeyObject;
  protectedTlvs?: { type: number; value: Uint8Array }[];
  /** Skip the KEYHASH TLV, as images built for a bootloader with a single embedded key may. */
  omitKeyHash?: boolean;
}

export function parseVersion(text: string): ImageVersion {
  const parts = text.split('.').map((p) => Number(p));
  if (parts.length < 1 || parts.length > 4 || parts.some((p) => !Number.isInteger(p) || p < 0)) {
    throw new RangeError(`not an image version: ${text}`);
  }
  const [major = 0, minor = 0, revision = 0, build = 0] = parts;
  if (major > 255 || minor > 255 || revision > 0xffff || build > 0xffffffff) throw new RangeError(`version out of range: ${text}`);
  return { major, minor, revision, build };
}

function tlvArea(magic: number, tlvs: { type: number; value: Uint8Array }[]): Buffer {
  const body = tlvs.map(({ type, value }) => {
    const head = Buffer.alloc(4);
    head.writeUInt16LE(type, 0);
    head.writeUInt16LE(value.length, 2);
    return Buffer.concat([head, value]);
  });
  const total = 4 + body.reduce((n, b) => n + b.length, 0);
  const info = Buffer.alloc(4);
  info.writeUInt16LE(magic, 0);
  info.writeUInt16LE(total, 2);
  return Buffer.concat([info, ...body]);
}

export function buildMcubootImage(options: BuildImageOptions): Uint8Array {
  const headerSize = options.headerSize ?? 0x200;
  if (headerSize < IMAGE_HEADER_SIZE) throw new RangeError('header size below 32 bytes');
  const version = typeof options.version === 'string' ? parseVersion(options.version) : options.version;
  const prot = options.protectedTlvs?.length ? tlvArea(TLV_PROT_INFO_MAGIC, options.protectedTlvs) : Buffer.alloc(0);

  const header = Buffer.alloc(headerSize);
  header.writeUInt32LE(IMAGE_MAGIC, 0);
  header.writeUInt32LE(options.loadAddr ?? 0, 4);
  header.writeUInt16LE(headerSize, 8);
  header.writeUInt16LE(prot.length, 10);
  header.writeUInt32LE(options.payload.length, 12);
  header.writeUInt32LE(options.flags ?? 0, 16);
  header.writeUInt8(version.major, 20);
  header.writeUInt8(version.minor, 21);
  header.writeUInt16LE(version.revision, 22);
  header.writeUInt32LE(version.build, 24);

  const hashed = Buffer.concat([header, options.payload, prot]);
  const digest = createHash('sha256').update(hashed).digest();
  const tlvs: { type: number; value: Uint8Array }[] = [{ type: TLV.sha256, value: digest }];

  const key = options.signingKey;
  if (key) {
    const pub = createPublicKey(key);
    if (!options.omitKeyHash) tlvs.push({ type: TLV.keyHash, value: createHash('sha256').update(mcubootKeyBytes(pub)).digest() });
    if (key.asymmetricKeyType === 'ed25519') {
      tlvs.push({ type: TLV.ed25519, value: sign(null, digest, key) });
    } else if (key.asymmetricKeyType === 'ec') {
      tlvs.push({ type: TLV.ecdsaSig, value: sign('sha256', hashed, { key, dsaEncoding: 'der' }) });
    } else if (key.asymmetricKeyType === 'rsa') {
      tlvs.push({ type: TLV.rsa2048Pss, value: sign('sha256', hashed, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }) });
    } else {
      throw new RangeError(`cannot sign MCUboot images with a ${key.asymmetricKeyType} key`);
    }
  }
  return new Uint8Array(Buffer.concat([hashed, tlvArea(TLV_INFO_MAGIC, tlvs)]));
}
