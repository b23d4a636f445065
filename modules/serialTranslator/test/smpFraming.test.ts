import { describe, expect, it } from 'vitest';
import {
  ConsoleFrameDecoder,
  MAX_LINE_BYTES,
  consoleFrameBytes,
  crc16Xmodem,
  encodeConsoleFrame,
} from '../src/smpFraming.ts';
import { decodeSmpHeader, encodeSmpHeader } from '../src/smpHeader.ts';

const bytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));

// The echo request {"d":"hello"}, SMP v2, write, group 0, seq 0x42, command 0, worked out by hand:
//   header 0a 00 0009 0000 42 00 (byte 0 = ver 1 << 3 | op 2), CBOR a1 61 64 65 68656c6c6f,
//   CRC16/XMODEM of those 17 bytes = 0x4619, frame length = 17 + 2 = 0x0013.
const ECHO_PACKET = bytes('0a00 0009 0000 4200 a1 61 64 65 68656c6c6f');
const ECHO_LINE = Buffer.concat([Buffer.from([0x06, 0x09]), Buffer.from('ABMKAAAJAABCAKFhZGVoZWxsb0YZ\n', 'latin1')]);

describe('crc16Xmodem', () => {
  it('matches the catalogued check value for "123456789"', () => {
    expect(crc16Xmodem(Buffer.from('123456789'))).toBe(0x31c3);
  });
  it('matches the hand-computed CRC of the echo packet', () => {
    expect(crc16Xmodem(ECHO_PACKET)).toBe(0x4619);
  });
});

describe('SMP header', () => {
  it('packs version, op, length, group, seq and command as specified', () => {
    const h = encodeSmpHeader({ version: 1, op: 2, flags: 0, length: 9, group: 0, seq: 0x42, command: 0 });
    expect(Buffer.from(h).toString('hex')).toBe('0a00000900004200');
    const image = encodeSmpHeader({ version: 0, op: 0, flags: 0, length: 0x1234, group: 1, seq: 255, command: 1 });
    expect(Buffer.from(image).toString('hex')).toBe('000012340001ff01');
  });
  it('decodes what it encodes, including a read response', () => {
    expect(decodeSmpHeader(bytes('0900 0102 0001 07 00'))).toEqual({
      version: 1,
      op: 1,
      flags: 0,
      length: 0x102,
      group: 1,
      seq: 7,
      command: 0,
    });
  });
});

describe('console framing', () => {
  it('encodes the echo request byte for byte', () => {
    expect(Buffer.from(encodeConsoleFrame(ECHO_PACKET))).toEqual(ECHO_LINE);
  });

  it('splits long packets into 127-byte lines with 04 14 continuations', () => {
    const packet = new Uint8Array(300).map((_, i) => i & 0xff);
    const framed = Buffer.from(encodeConsoleFrame(packet));
    const lines = framed.toString('latin1').split('\n').slice(0, -1);
    // 304 raw bytes = 93 + 93 + 93 + 25: three full lines and one of 2 + 36 + 1 bytes.
    expect(lines.map((l) => l.length + 1)).toEqual([127, 127, 127, 39]);
    expect(lines.map((l) => l.charCodeAt(0).toString(16) + l.charCodeAt(1).toString(16))).toEqual(['69', '414', '414', '414']);
    expect(consoleFrameBytes(300)).toBe(framed.length);
    for (const line of lines) expect(line.length + 1).toBeLessThanOrEqual(MAX_LINE_BYTES);
    const decoded = new ConsoleFrameDecoder().push(framed);
    expect(decoded).toEqual([{ kind: 'packet', packet }]);
  });

  it('reassembles a packet delivered one byte at a time, between log lines and CRLFs', () => {
    const decoder = new ConsoleFrameDecoder();
    const stream = Buffer.concat([
      Buffer.from('*** Booting Zephyr OS ***\r\n[00:00:01] <inf> main: up\r\n'),
      ECHO_LINE,
      Buffer.from('[00:00:02] <wrn> app: low battery\n'),
    ]);
    const events = [...stream].flatMap((b) => decoder.push(Uint8Array.of(b)));
    expect(events.filter((e) => e.kind === 'packet')).toEqual([{ kind: 'packet', packet: ECHO_PACKET }]);
    expect(events.filter((e) => e.kind === 'noise')).toHaveLength(3);
  });

  it('drops a frame whose CRC does not match and recovers on the next one', () => {
    const bad = Buffer.from(ECHO_LINE);
    bad[10] = bad[10] === 0x41 ? 0x42 : 0x41;
    const events = new ConsoleFrameDecoder().push(Buffer.concat([bad, ECHO_LINE]));
    expect(events[0]?.kind).toBe('bad-frame');
    expect(events[1]).toEqual({ kind: 'packet', packet: ECHO_PACKET });
  });

  it('discards a packet that lost its continuation when a new start arrives', () => {
    const long = Buffer.from(encodeConsoleFrame(new Uint8Array(200).fill(7)));
    const firstLineOnly = long.subarray(0, 127);
    const events = new ConsoleFrameDecoder().push(Buffer.concat([firstLineOnly, ECHO_LINE]));
    expect(events).toEqual([{ kind: 'packet', packet: ECHO_PACKET }]);
  });

  it('rejects garbage base64 without throwing', () => {
    const events = new ConsoleFrameDecoder().push(Buffer.from('\x06\x09@@@@\n\x04\x14AAAA\n'));
    expect(events.map((e) => e.kind)).toEqual(['bad-frame', 'bad-frame']);
  });
});

describe('decoding hostile input', () => {
  it('never throws on random streams, whatever the markers and newlines', async () => {
    const { seededRandom } = await import('../src/faultyLink.ts');
    const { CborError, decodeCbor } = await import('../src/smpCbor.ts');
    const random = seededRandom(2024);
    const decoder = new ConsoleFrameDecoder();
    const alphabet = Buffer.from('\x06\x09\x04\x14\n\rABCDEFabcdef0123456789+/=');
    for (let round = 0; round < 200; round++) {
      const chunk = Uint8Array.from({ length: 1 + Math.floor(random() * 300) }, () =>
        random() < 0.7 ? alphabet[Math.floor(random() * alphabet.length)]! : Math.floor(random() * 256),
      );
      expect(() => decoder.push(chunk)).not.toThrow();
      try {
        decodeCbor(chunk);
      } catch (error) {
        expect(error).toBeInstanceOf(CborError);
      }
    }
    // And it still decodes a good frame afterwards.
    expect(decoder.push(Buffer.concat([Buffer.from('\n'), ECHO_LINE])).filter((e) => e.kind === 'packet')).toEqual([{ kind: 'packet', packet: ECHO_PACKET }]);
  });
});
