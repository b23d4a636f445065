import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { TrustStore, createRootKeyPackage, packagedRootKey, readBundle, signUpdateManifest, writeBundle } from '../src/index.ts';
import type { ResultCodeName, RootKeyPackageContents } from '../src/index.ts';
import { encodeTarHeader, paddingFor } from '../src/bundle/tar.ts';
import { makeRoot, makeSigningKey, rootDescription, signedManifest, tempDir, trustStoreFor } from './fixtures.ts';

const root = makeRoot('bundle.root');
const signer = makeSigningKey(root, 'ES256');
const files = [
  { filename: 'app.bin', size: 5000 },
  { filename: 'install.sh', size: 512 },
  { filename: `long-${'n'.repeat(120)}.bin`, size: 3 },
];
const world = signedManifest(signer, {}, files);
const work = tempDir('edge-ota-bundle-');
const byName = new Map(world.payload.map((p) => [p.filename, p]));
let counter = 0;

interface Entry {
  name: string;
  data?: Buffer;
  typeflag?: string;
  /** Header size, when it should lie about the data. */
  size?: number;
  corrupt?: (header: Buffer) => void;
}

function entry(name: string, data: Buffer | string, extra: Partial<Entry> = {}): Entry {
  return { name, data: Buffer.from(data), ...extra };
}

function pax(records: Record<string, string>): Entry {
  const body = Object.entries(records).map(([k, v]) => {
    const line = ` ${k}=${v}\n`;
    let n = Buffer.byteLength(line) + 1;
    while (String(n).length + Buffer.byteLength(line) !== n) n += 1;
    return `${n}${line}`;
  });
  return { name: 'PaxHeader', data: Buffer.from(body.join('')), typeflag: 'x' };
}

function encode(entries: Entry[], end: Buffer = Buffer.alloc(1024)): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries.flatMap((x) => (Buffer.byteLength(x.name) > 100 ? [pax({ path: x.name }), { ...x, name: x.name.slice(0, 99) }] : [x]))) {
    const data = e.data ?? Buffer.alloc(0);
    const header = encodeTarHeader({ name: e.name, size: e.size ?? data.length, ...(e.typeflag ? { typeflag: e.typeflag } : {}) });
    e.corrupt?.(header);
    parts.push(header, data, paddingFor(data.length));
  }
  parts.push(end);
  return Buffer.concat(parts);
}

const metadata = (): Entry[] => [entry('updatemanifest.json', world.bytes), entry('updatemanifest.json.jws', world.signature)];
const payloadEntries = (): Entry[] => world.payload.map((p) => entry(`files/${p.filename}`, p.data));

function writeTemp(bytes: Buffer): string {
  const file = path.join(work, `b${(counter += 1)}.otabundle`);
  writeFileSync(file, bytes);
  return file;
}

async function expectRefused(bytes: Buffer, code: ResultCodeName, message?: RegExp, store = trustStoreFor(root)): Promise<void> {
  let caught: unknown;
  try {
    await readBundle(writeTemp(bytes), { trustStore: store });
  } catch (error) {
    caught = error;
  }
  expect((caught as { code?: string } | undefined)?.code, String(caught)).toBe(code);
  if (message) expect((caught as Error).message).toMatch(message);
}

describe('offline bundle round trip', () => {
  let bundlePath: string;
  beforeAll(async () => {
    bundlePath = path.join(work, 'good.otabundle');
    await writeBundle({ manifest: world.bytes, signature: world.signature, filePaths: new Map(world.payload.map((p) => [p.filename, p.path])) }, bundlePath);
  });

  it('verifies what the writer produced and reports every file', async () => {
    const result = await readBundle(bundlePath, { trustStore: trustStoreFor(root) });
    expect(result.rootKid).toBe(root.kid);
    expect(result.manifestBytes.equals(world.bytes)).toBe(true);
    expect(result.files.map((f) => f.filename).sort()).toEqual(files.map((f) => f.filename).sort());
  });

  it('extracts files byte-identical to the originals', async () => {
    const dir = tempDir();
    const result = await readBundle(bundlePath, { trustStore: trustStoreFor(root), extractTo: dir });
    for (const f of result.files) expect(readFileSync(f.path!).equals(byName.get(f.filename)!.data)).toBe(true);
  });

  it('is a plain tar that GNU tar lists', () => {
    const listing = execFileSync('tar', ['-tf', bundlePath], { encoding: 'utf8' }).trim().split('\n');
    expect(listing).toEqual(['updatemanifest.json', 'updatemanifest.json.jws', ...world.payload.map((p) => `files/${p.filename}`)]);
  });

  it('accepts a bundle packed by GNU tar and by tar-stream', async () => {
    const staging = tempDir();
    mkdirSync(path.join(staging, 'files'));
    writeFileSync(path.join(staging, 'updatemanifest.json'), world.bytes);
    writeFileSync(path.join(staging, 'updatemanifest.json.jws'), world.signature);
    for (const p of world.payload) writeFileSync(path.join(staging, 'files', p.filename), p.data);
    const gnu = path.join(work, 'gnu.tar');
    execFileSync('tar', ['-cf', gnu, '-C', staging, 'updatemanifest.json', 'updatemanifest.json.jws', ...world.payload.map((p) => `files/${p.filename}`)]);
    expect((await readBundle(gnu, { trustStore: trustStoreFor(root) })).files).toHaveLength(3);

    const pack = tarStream.pack();
    const chunks: Buffer[] = [];
    pack.on('data', (c) => chunks.push(c as Buffer));
    const done = new Promise<void>((resolve) => pack.on('end', () => resolve()));
    pack.entry({ name: 'updatemanifest.json' }, world.bytes);
    pack.entry({ name: 'updatemanifest.json.jws' }, world.signature);
    for (const p of world.payload) pack.entry({ name: `files/${p.filename}` }, p.data);
    pack.finalize();
    await done;
    expect((await readBundle(Readable.from([Buffer.concat(chunks)]), { trustStore: trustStoreFor(root) })).files).toHaveLength(3);
  });

  it('accepts zero padding after the end marker (tar record blocking)', async () => {
    const padded = Buffer.concat([readFileSync(bundlePath), Buffer.alloc(9216)]);
    expect((await readBundle(writeTemp(padded), { trustStore: trustStoreFor(root) })).files).toHaveLength(3);
  });

  it('refuses to write a bundle from files that do not match the manifest', async () => {
    const wrong = path.join(work, 'wrong.bin');
    writeFileSync(wrong, Buffer.alloc(5000));
    const out = path.join(work, 'never.otabundle');
    const paths = new Map(world.payload.map((p) => [p.filename, p.path]));
    await expect(writeBundle({ manifest: world.bytes, signature: world.signature, filePaths: new Map([...paths, ['app.bin', wrong]]) }, out)).rejects.toMatchObject({ code: 'BUNDLE_HASH_MISMATCH' });
    await expect(writeBundle({ manifest: world.bytes, signature: world.signature, filePaths: new Map([...paths, ['app.bin', byName.get('install.sh')!.path]]) }, out)).rejects.toMatchObject({ code: 'BUNDLE_SIZE_MISMATCH' });
    await expect(writeBundle({ manifest: world.bytes, signature: world.signature, filePaths: new Map() }, out)).rejects.toMatchObject({ code: 'BUNDLE_FILE_MISSING' });
    expect(readdirSync(work).filter((f) => f.startsWith('never'))).toEqual([]);
  });

  it('carries a root key package that a device adopts, and ignores an older one', async () => {
    const newRoot = makeRoot('bundle.root.2');
    const newSigner = makeSigningKey(newRoot, 'EdDSA');
    const m = signedManifest(newSigner, {}, [{ filename: 'a.bin', size: 10 }]);
    const contents = (version: number): RootKeyPackageContents => ({
      isTest: false, version, published: 1, disabledRootKeys: [], disabledSigningKeys: [], rootKeys: { [newRoot.kid]: packagedRootKey(newRoot.publicKey) },
    });
    const out = path.join(work, `rkp-${(counter += 1)}.otabundle`);
    await writeBundle({ manifest: m.bytes, signature: m.signature, rootKeyPackage: createRootKeyPackage(contents(3), [root]), filePaths: { 'a.bin': m.payload[0]!.path } }, out);
    const store = trustStoreFor(root);
    const result = await readBundle(out, { trustStore: store });
    expect(result.rootKeyPackage).toEqual({ status: 'applied', version: 3 });
    expect(store.rootKeyPackageVersion).toBe(3);
    expect((await readBundle(out, { trustStore: store })).rootKeyPackage).toEqual({ status: 'current', version: 3 });
    // A device that already moved to version 5 ignores the bundle's older package (and still verifies the update).
    const ahead = trustStoreFor(root);
    ahead.applyRootKeyPackage(createRootKeyPackage(contents(5), [root]));
    expect((await readBundle(out, { trustStore: ahead })).rootKeyPackage).toEqual({ status: 'older', version: 3 });
    // A valid newer package in a bundle that fails later is not adopted.
    const failing = trustStoreFor(root);
    const v4 = createRootKeyPackage(contents(4), [root]);
    const broken = encode([entry('updatemanifest.json', m.bytes), entry('updatemanifest.json.jws', m.signature), entry('rootkeypackage.json', v4), entry('files/a.bin', Buffer.alloc(10))]);
    await expectRefused(broken, 'BUNDLE_HASH_MISMATCH', undefined, failing);
    expect(failing.rootKeyPackageVersion).toBe(0);
    // A forged package is refused outright.
    const forged = createRootKeyPackage(contents(9), [makeRoot('forger')]);
    const bad = encode([...metadata(), entry('rootkeypackage.json', forged), ...payloadEntries()]);
    await expectRefused(bad, 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID');
  });

  it('the same bundle verifies against a store that also trusts the ADU service roots', async () => {
    const store = new TrustStore({ rootKeys: [rootDescription(root)] });
    expect((await readBundle(bundlePath, { trustStore: store })).files).toHaveLength(3);
  });
});

describe('hostile bundles', () => {
  const good = (): Entry[] => [...metadata(), ...payloadEntries()];
  const flip = (data: Buffer): Buffer => {
    const copy = Buffer.from(data);
    copy[copy.length - 1]! ^= 1;
    return copy;
  };
  const app = byName.get('app.bin')!.data;
  const longName = `files/long-${'n'.repeat(120)}.bin`;

  const cases: [string, () => Buffer, ResultCodeName, RegExp?][] = [
    ['empty file', () => Buffer.alloc(0), 'BUNDLE_TRUNCATED'],
    ['only an end marker', () => encode([]), 'BUNDLE_ORDER_INVALID'],
    ['truncated inside a header', () => encode(good()).subarray(0, 700), 'BUNDLE_TRUNCATED'],
    ['truncated inside payload data', () => encode(good()).subarray(0, encode(metadata()).length - 1024 + 512 + 2000), 'BUNDLE_TRUNCATED', /ends \d+ bytes early/],
    ['missing end-of-archive marker', () => encode(good(), Buffer.alloc(0)), 'BUNDLE_TRUNCATED'],
    ['half an end-of-archive marker', () => encode(good(), Buffer.alloc(512)), 'BUNDLE_TRUNCATED'],
    ['trailing garbage after the end marker', () => Buffer.concat([encode(good()), Buffer.from('#!/bin/sh\nrm -rf /\n')]), 'BUNDLE_TRAILING_DATA'],
    ['garbage far behind zero padding', () => Buffer.concat([encode(good()), Buffer.alloc(20_000), Buffer.from([1])]), 'BUNDLE_TRAILING_DATA'],
    ['a zero block followed by data', () => Buffer.concat([encode(good(), Buffer.alloc(512)), encodeTarHeader({ name: 'x', size: 0 }), Buffer.alloc(1024)]), 'BUNDLE_MALFORMED'],
    ['symlink in place of a payload', () => encode([...metadata(), { name: 'files/app.bin', typeflag: '2' }]), 'BUNDLE_ENTRY_TYPE_REFUSED', /type '2'/],
    ['hard link in place of a payload', () => encode([...metadata(), { name: 'files/app.bin', typeflag: '1' }]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['directory entry', () => encode([...metadata(), { name: 'files/', typeflag: '5' }, ...payloadEntries()]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['character device', () => encode([...metadata(), { name: 'files/app.bin', typeflag: '3' }]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['fifo', () => encode([...metadata(), { name: 'files/app.bin', typeflag: '6' }]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['pax global header', () => encode([{ ...pax({ comment: 'x' }), typeflag: 'g' }, ...good()]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['pax linkpath', () => encode([...metadata(), pax({ linkpath: '/etc/shadow' }), entry('files/app.bin', app)]), 'BUNDLE_ENTRY_TYPE_REFUSED'],
    ['dot-dot traversal', () => encode([...metadata(), entry('files/../../etc/cron.d/evil', app)]), 'BUNDLE_PATH_REFUSED', /"\.\."/],
    ['absolute path', () => encode([...metadata(), entry('/etc/passwd', app)]), 'BUNDLE_PATH_REFUSED', /absolute/],
    ['windows drive path', () => encode([...metadata(), entry('C:/evil', app)]), 'BUNDLE_PATH_REFUSED'],
    ['backslash traversal', () => encode([...metadata(), entry('files\\..\\..\\evil', app)]), 'BUNDLE_PATH_REFUSED', /backslash/],
    ['dot segment', () => encode([...metadata(), entry('files/./app.bin', app)]), 'BUNDLE_PATH_REFUSED'],
    ['empty segment', () => encode([...metadata(), entry('files//app.bin', app)]), 'BUNDLE_PATH_REFUSED'],
    ['nested directory', () => encode([...metadata(), entry('files/sub/app.bin', app)]), 'BUNDLE_PATH_REFUSED'],
    ['traversal via pax path', () => encode([...metadata(), pax({ path: '../../evil' }), entry('files/app.bin', app)]), 'BUNDLE_PATH_REFUSED'],
    ['traversal via GNU long name', () => encode([...metadata(), { name: '././@LongLink', data: Buffer.from('/tmp/evil\0'), typeflag: 'L' }, entry('files/app.bin', app)]), 'BUNDLE_PATH_REFUSED'],
    ['undeclared payload file', () => encode([...good().slice(0, -1), entry('files/extra.bin', 'x'), good().at(-1)!]), 'BUNDLE_PATH_REFUSED', /not a file the signed manifest declares/],
    ['unknown metadata entry', () => encode([...metadata(), entry('README', 'hi'), ...payloadEntries()]), 'BUNDLE_PATH_REFUSED'],
    ['duplicate payload entry', () => encode([...good(), entry('files/app.bin', app)]), 'BUNDLE_DUPLICATE_ENTRY'],
    ['duplicate manifest entry', () => encode([...metadata(), entry('updatemanifest.json', world.bytes), ...payloadEntries()]), 'BUNDLE_DUPLICATE_ENTRY'],
    ['payload declared larger than the manifest says', () => encode([...metadata(), entry('files/app.bin', Buffer.concat([app, Buffer.from('x')]))]), 'BUNDLE_SIZE_MISMATCH', /5001 bytes, the signed manifest says 5000/],
    ['payload declared smaller than the manifest says', () => encode([...metadata(), entry('files/app.bin', app.subarray(1))]), 'BUNDLE_SIZE_MISMATCH'],
    ['header size lies beyond the archive end', () => encode([...metadata(), { name: 'files/app.bin', data: app, size: 10 ** 9 }]), 'BUNDLE_SIZE_MISMATCH'],
    ['payload content altered (same size)', () => encode([...metadata(), entry('files/app.bin', flip(app)), ...payloadEntries().slice(1)]), 'BUNDLE_HASH_MISMATCH', /files\/app\.bin/],
    ['last payload byte altered', () => encode([...metadata(), ...payloadEntries().slice(0, 2), entry(longName, flip(byName.get(longName.slice(6))!.data))]), 'BUNDLE_HASH_MISMATCH'],
    ['declared file missing', () => encode([...metadata(), ...payloadEntries().slice(0, 2)]), 'BUNDLE_FILE_MISSING', /long-n+\.bin/],
    ['payload before the manifest', () => encode([...payloadEntries(), ...metadata()]), 'BUNDLE_ORDER_INVALID'],
    ['root key package after a payload', () => encode([...metadata(), ...payloadEntries().slice(0, 1), entry('rootkeypackage.json', '{}'), ...payloadEntries().slice(1)]), 'BUNDLE_ORDER_INVALID'],
    ['signature missing', () => encode([metadata()[0]!, ...payloadEntries()]), 'BUNDLE_ORDER_INVALID'],
    ['manifest altered inside the bundle', () => encode([entry('updatemanifest.json', flip(world.bytes)), metadata()[1]!, ...payloadEntries()]), 'MANIFEST_HASH_MISMATCH'],
    ['signature by an untrusted key', () => encode([metadata()[0]!, entry('updatemanifest.json.jws', signUpdateManifest(world.bytes, makeSigningKey(makeRoot('evil'), 'ES256'))), ...payloadEntries()]), 'ROOT_KEY_UNKNOWN'],
    ['signature garbage', () => encode([metadata()[0]!, entry('updatemanifest.json.jws', 'garbage'), ...payloadEntries()]), 'SIGNATURE_MALFORMED'],
    ['oversized metadata entry', () => encode([{ name: 'updatemanifest.json', data: Buffer.alloc(2 * 1024 * 1024, 0x20) }]), 'BUNDLE_TOO_LARGE'],
    ['oversized pax header', () => encode([{ name: 'PaxHeader', typeflag: 'x', data: Buffer.alloc(70_000, 0x41) }]), 'BUNDLE_TOO_LARGE'],
    ['malformed pax record', () => encode([...metadata(), { name: 'PaxHeader', typeflag: 'x', data: Buffer.from('99 path=x\n') }, entry('files/app.bin', app)]), 'BUNDLE_MALFORMED'],
    ['pax size not a number', () => encode([...metadata(), pax({ size: '12abc' }), entry('files/app.bin', app)]), 'BUNDLE_MALFORMED'],
    ['pax size disagreeing with the manifest', () => encode([...metadata(), pax({ size: '4999' }), entry('files/app.bin', app)]), 'BUNDLE_SIZE_MISMATCH'],
    ['bad header checksum', () => encode([...metadata().slice(0, 1), { ...entry('updatemanifest.json.jws', world.signature), corrupt: (h) => (h[0] = 0x55) }]), 'BUNDLE_MALFORMED', /checksum/],
    ['base-256 size field', () => encode([{ ...entry('updatemanifest.json', world.bytes), corrupt: (h) => { h[124] = 0x80; fixChecksum(h); } }]), 'BUNDLE_MALFORMED', /base-256/],
    ['non-octal size field', () => encode([{ ...entry('updatemanifest.json', world.bytes), corrupt: (h) => { h.write('0000000009z\0', 124, 'ascii'); fixChecksum(h); } }]), 'BUNDLE_MALFORMED', /octal/],
    ['pre-POSIX tar header without magic', () => encode([{ ...entry('updatemanifest.json', world.bytes), corrupt: (h) => { h.fill(0, 257, 265); fixChecksum(h); } }]), 'BUNDLE_MALFORMED', /magic/],
    ['random bytes', () => Buffer.from(createHash('sha512').update('noise').digest().toString('hex').repeat(20)), 'BUNDLE_MALFORMED'],
    ['a gzip file', () => Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(1020, 7)]), 'BUNDLE_MALFORMED'],
  ];

  for (const [name, build, code, message] of cases) {
    it(`refuses: ${name}`, async () => {
      await expectRefused(build(), code, message);
    });
  }

  it('removes extracted files when a later entry fails, and never overwrites existing files', async () => {
    const dir = tempDir();
    const bytes = encode([...metadata(), ...payloadEntries().slice(0, 2), entry(longName, flip(byName.get(longName.slice(6))!.data))]);
    await expect(readBundle(writeTemp(bytes), { trustStore: trustStoreFor(root), extractTo: dir })).rejects.toMatchObject({ code: 'BUNDLE_HASH_MISMATCH' });
    expect(readdirSync(dir)).toEqual([]);
    writeFileSync(path.join(dir, 'install.sh'), 'mine');
    await expect(readBundle(writeTemp(encode(good())), { trustStore: trustStoreFor(root), extractTo: dir })).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(readFileSync(path.join(dir, 'install.sh'), 'utf8')).toBe('mine');
    expect(existsSync(path.join(dir, 'app.bin'))).toBe(false);
  });
});

function fixChecksum(header: Buffer): void {
  header.write('        ', 148, 'ascii');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
}

describe('bundle inspection', () => {
  it('lists entries and unverified metadata, and still refuses a broken archive', async () => {
    const { inspectBundle } = await import('../src/bundle/bundleInspector.ts');
    const listing = await inspectBundle(writeTemp(encode([...metadata(), ...payloadEntries()])));
    expect(listing.entries.map((e) => e.name)).toEqual(['updatemanifest.json', 'updatemanifest.json.jws', ...world.payload.map((p) => `files/${p.filename}`)]);
    expect(listing.signature).toEqual({ alg: 'ES256', signingKeyKid: 'signer-ES256', rootKid: root.kid });
    expect(listing.manifest?.updateId.name).toBe('Toaster');
    await expect(inspectBundle(writeTemp(encode([...metadata(), ...payloadEntries()]).subarray(0, 4000)))).rejects.toMatchObject({ code: 'BUNDLE_TRUNCATED' });
  });
});
