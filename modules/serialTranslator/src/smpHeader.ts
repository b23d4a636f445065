// The 8-byte SMP header. Byte 0 packs Res(3) | Ver(2) | Op(3); Ver 1 is SMP v2 (the err{group,rc} replies).

export type SmpOp = number;
export const SMP_OP = { read: 0, readResponse: 1, write: 2, writeResponse: 3 } as const;
export const SMP_HEADER_SIZE = 8;

export interface SmpHeader {
  version: number;
  op: SmpOp;
  flags: number;
  length: number;
  group: number;
  seq: number;
  command: number;
}

export function encodeSmpHeader(h: SmpHeader): Uint8Array {
  const out = new Uint8Array(SMP_HEADER_SIZE);
  const view = new DataView(out.buffer);
  out[0] = ((h.version & 0b11) << 3) | (h.op & 0b111);
  out[1] = h.flags & 0xff;
  view.setUint16(2, h.length);
  view.setUint16(4, h.group);
  out[6] = h.seq & 0xff;
  out[7] = h.command & 0xff;
  return out;
}

export function decodeSmpHeader(bytes: Uint8Array): SmpHeader {
  if (bytes.length < SMP_HEADER_SIZE) throw new RangeError(`SMP header needs 8 bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, SMP_HEADER_SIZE);
  return {
    version: (bytes[0]! >> 3) & 0b11,
    op: bytes[0]! & 0b111,
    flags: bytes[1]!,
    length: view.getUint16(2),
    group: view.getUint16(4),
    seq: bytes[6]!,
    command: bytes[7]!,
  };
}
