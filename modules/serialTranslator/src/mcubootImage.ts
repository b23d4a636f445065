// MCUboot image format (mcu-tools/mcuboot docs/design.md): a 32-byte header padded to ih_hdr_size, the body,
// an optional protected TLV area (magic 0x6908, covered by the hash) and the TLV area (magic 0x6907) with
// the SHA-256 of header+body+protected TLVs and the signature over it. All fields are little-endian.
import { createHash, createPublicKey, timingSafeEqual, verify, constants } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

export const IMAGE_MAGIC = 0x96f3b83d;
export const IMAGE_HEADER_SIZE = 32;
export const TLV_INFO_MAGIC = 0x6907;
export const TLV_PROT_INFO_MAGIC = 0x6908;
export const TLV = {
  keyHash: 0x01,
  sha256: 0x10,
  rsa2048Pss: 0x20,
  ecdsaSig: 0x22,
  ed25519: 0x24,
} as const;

export interface ImageVersion {
  major: number;
  minor: number;
  revision: number;
  build: number;
}

export interface ImageTlv {
  type: number;
  value: Uint8Array;
  protected: boolean;
}

export interface McubootImage {
  loadAddr: number;
  headerSize: number;
  protectedTlvSize: number;
  imageSize: number;
  flags: number;
  version: ImageVersion;
  tlvs: ImageTlv[];
  /** Bytes covered by the SHA-256 TLV: header, body and protected TLV area. */
  hashedLength: number;
  /** Header + body + both TLV areas: what is uploaded. */
  totalLength: number;
}

export type ImageRefusal =
  | 'image-truncated'
  | 'image-bad-magic'
  | 'image-bad-header'
  | 'image-bad-tlv'
  | 'image-no-hash'
  | 'image-hash-mismatch'
  | 'image-no-signature'
  | 'image-key-mismatch'
  | 'image-bad-signature'
  | 'image-unsupported-key'
  | 'image-too-large'
  | 'image-version-mismatch';

export class McubootImageError extends Error {
  override name = 'McubootImageError';
  readonly code: ImageRefusal;
  constructor(code: ImageRefusal, message: string) {
    super(message);
    this.code = code;
  }
}

/** Formats a version the way Zephyr's img_mgmt reports it: the build number only when it is not zero. */
export function formatVersion(v: ImageVersion): string {
  return `${v.major}.${v.minor}.${v.revision}${v.build ? `.${v.build}` : ''}`;
}

function readTlvArea(bytes: Uint8Array, start: number, magic: number, isProtected: boolean): { tlvs: ImageTlv[]; end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (start + 4 > bytes.length) throw new McubootImageError('image-truncated', 'TLV info header missing');
  if (view.getUint16(start, true) !== magic) {
    throw new McubootImageError('image-bad-tlv', `expected TLV magic 0x${magic.toString(16)} at ${start}`);
  }
  const total = view.getUint16(start + 2, true);
  const end = start + total;
  if (total < 4 || end > bytes.length) throw new McubootImageError('image-truncated', 'TLV area runs past the end of the image');
  const tlvs: ImageTlv[] = [];
  for (let pos = start + 4; pos < end; ) {
    if (pos + 4 > end) throw new McubootImageError('image-bad-tlv', 'TLV header crosses the end of its area');
    const type = view.getUint16(pos, true);
    const len = view.getUint16(pos + 2, true);
    if (pos + 4 + len > end) throw new McubootImageError('image-bad-tlv', `TLV 0x${type.toString(16)} runs past its area`);
    tlvs.push({ type, value: bytes.subarray(pos + 4, pos + 4 + len), protected: isProtected });
    pos += 4 + len;
  }
  return { tlvs, end };
}

export function parseMcubootImage(bytes: Uint8Array): McubootImage {
  if (bytes.length < IMAGE_HEADER_SIZE) throw new McubootImageError('image-truncated', 'shorter than an image header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (view.getUint32(0, true) !== IMAGE_MAGIC) throw new McubootImageError('image-bad-magic', 'not an MCUboot image (bad magic)');
  const headerSize = view.getUint16(8, true);
  const protectedTlvSize = view.getUint16(10, true);
  const imageSize = view.getUint32(12, true);
  if (headerSize < IMAGE_HEADER_SIZE) throw new McubootImageError('image-bad-header', `header size ${headerSize} below 32`);
  const bodyEnd = headerSize + imageSize;
  if (bodyEnd > bytes.length) throw new McubootImageError('image-truncated', `header says ${bodyEnd} bytes, file has ${bytes.length}`);

  const tlvs: ImageTlv[] = [];
  let pos = bodyEnd;
  if (protectedTlvSize) {
    const prot = readTlvArea(bytes, pos, TLV_PROT_INFO_MAGIC, true);
    if (prot.end - pos !== protectedTlvSize) throw new McubootImageError('image-bad-tlv', 'protected TLV size disagrees with the header');
    tlvs.push(...prot.tlvs);
    pos = prot.end;
  }
  const hashedLength = pos;
  const main = readTlvArea(bytes, pos, TLV_INFO_MAGIC, false);
  tlvs.push(...main.tlvs);
  return {
    loadAddr: view.getUint32(4, true),
    headerSize,
    protectedTlvSize,
    imageSize,
    flags: view.getUint32(16, true),
    version: {
      major: bytes[20]!,
      minor: bytes[21]!,
      revision: view.getUint16(22, true),
      build: view.getUint32(24, true),
    },
    tlvs,
    hashedLength,
    totalLength: main.end,
  };
}

export interface VerifyOptions {
  /** The public key configured for this MCU (PEM, DER SPKI or a KeyObject). Without it, only the hash is checked. */
  publicKey?: KeyObject | string;
  /** Size of the MCU's secondary slot, minus MCUboot's trailer. */
  maxSize?: number;
  /** Refuse unless the image carries exactly this version ("1.2.3" or "1.2.3.4"). */
  expectedVersion?: string;
}

export interface VerifiedImage {
  image: McubootImage;
  version: string;
  /** The SHA-256 TLV: what img_mgmt reports as the slot's hash and what test/confirm name the image by. */
  hash: Uint8Array;
  signatureType?: 'ed25519' | 'ecdsa-p256' | 'rsa-2048-pss';
}

/** The bytes MCUboot hashes into the KEYHASH TLV: PKCS#1 for RSA, SubjectPublicKeyInfo for EC and Ed25519. */
export function mcubootKeyBytes(key: KeyObject): Uint8Array {
  if (key.asymmetricKeyType === 'rsa') return new Uint8Array(key.export({ format: 'der', type: 'pkcs1' }));
  return new Uint8Array(key.export({ format: 'der', type: 'spki' }));
}

function signatureTypeOf(key: KeyObject): VerifiedImage['signatureType'] {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  if (key.asymmetricKeyType === 'rsa' && key.asymmetricKeyDetails?.modulusLength === 2048) return 'rsa-2048-pss';
  return undefined;
}

/**
 * Everything MCUboot would check at boot, checked before a byte is sent: a bad image never reaches the slot.
 * Throws McubootImageError with the refusal code.
 */
export function verifyMcubootImage(bytes: Uint8Array, options: VerifyOptions = {}): VerifiedImage {
  const image = parseMcubootImage(bytes);
  if (image.totalLength !== bytes.length) {
    throw new McubootImageError('image-bad-tlv', `${bytes.length - image.totalLength} bytes after the TLV area`);
  }
  if (options.maxSize !== undefined && bytes.length > options.maxSize) {
    throw new McubootImageError('image-too-large', `image of ${bytes.length} bytes does not fit the ${options.maxSize}-byte slot`);
  }
  const hashTlv = image.tlvs.find((t) => t.type === TLV.sha256 && !t.protected);
  if (!hashTlv || hashTlv.value.length !== 32) throw new McubootImageError('image-no-hash', 'no SHA-256 TLV');
  const digest = createHash('sha256').update(bytes.subarray(0, image.hashedLength)).digest();
  if (!timingSafeEqual(digest, hashTlv.value)) throw new McubootImageError('image-hash-mismatch', 'SHA-256 TLV does not match the image');

  const version = formatVersion(image.version);
  if (options.expectedVersion !== undefined && options.expectedVersion !== version) {
    throw new McubootImageError('image-version-mismatch', `image is ${version}, expected ${options.expectedVersion}`);
  }
  const result: VerifiedImage = { image, version, hash: new Uint8Array(hashTlv.value) };
  if (!options.publicKey) return result;

  const key = typeof options.publicKey === 'string' ? createPublicKey(options.publicKey) : options.publicKey;
  const type = signatureTypeOf(key);
  if (!type) throw new McubootImageError('image-unsupported-key', `key type ${key.asymmetricKeyType} is not one MCUboot verifies here`);
  const keyHashTlv = image.tlvs.find((t) => t.type === TLV.keyHash);
  const keyHash = createHash('sha256').update(mcubootKeyBytes(key)).digest();
  if (keyHashTlv && !timingSafeEqual(Buffer.from(keyHashTlv.value), keyHash)) {
    throw new McubootImageError('image-key-mismatch', 'image was signed for a different key than the one configured for this MCU');
  }
  const tlvType = type === 'ed25519' ? TLV.ed25519 : type === 'ecdsa-p256' ? TLV.ecdsaSig : TLV.rsa2048Pss;
  const sig = image.tlvs.find((t) => t.type === tlvType && !t.protected);
  if (!sig) throw new McubootImageError('image-no-signature', `no ${type} signature TLV`);

  // Ed25519 signs the digest (imgtool without --pure); ECDSA and RSA-PSS sign the hashed bytes with SHA-256.
  const ok =
    type === 'ed25519'
      ? verify(null, digest, key, sig.value)
      : type === 'ecdsa-p256'
        ? verify('sha256', bytes.subarray(0, image.hashedLength), { key, dsaEncoding: 'der' }, sig.value)
        : verify(
            'sha256',
            bytes.subarray(0, image.hashedLength),
            { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
            sig.value,
          );
  if (!ok) throw new McubootImageError('image-bad-signature', `${type} signature does not verify with the configured key`);
  return { ...result, signatureType: type };
}
