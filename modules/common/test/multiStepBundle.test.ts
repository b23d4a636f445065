import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBundle, writeBundle } from '../src/index.ts';
import type { ResultCodeName } from '../src/index.ts';
import { inspectBundle } from '../src/bundle/bundleInspector.ts';
import { encodeTarHeader, paddingFor } from '../src/bundle/tar.ts';
import { makeRoot, makeSigningKey, tempDir, trustStoreFor } from './fixtures.ts';
import { childManifest, fileEntry, payload, world } from './multiStepFixtures.ts';
import type { Child, Payload, World } from './multiStepFixtures.ts';

// Offline bundles of multi-step updates (ADU reference steps): the parent's files, which include each child's
// update manifest, then each child's payload under children/<detachedManifestFileId>/<filename>.

const root = makeRoot('multistep.root');
const signer = makeSigningKey(root, 'ES256');
const work = tempDir('edge-ota-multistep-');
let counter = 0;

const motorFiles = [payload('step1file0', 'install.sh', '#!/bin/sh\necho motor\n'), payload('step1file1', 'motor.bin', 'motor firmware '.repeat(100))];
const sensorFiles = [payload('step2file0', 'install.sh', '#!/bin/sh\necho sensor, a different script\n')];
const motor: Child = { id: 'file1', name: 'motor.json', manifest: childManifest('Motor', motorFiles), files: motorFiles };
const sensor: Child = { id: 'file2', name: 'sensor.json', manifest: childManifest('Sensor', sensorFiles), files: sensorFiles };
const two = world(signer, [motor, sensor]);

function contentsOf(w: World) {
  return {
    manifest: w.bytes,
    signature: w.signature,
    filePaths: Object.fromEntries([...w.parentFiles, ...w.children.map((c) => c.document)].map((f) => [f.name, path.join(w.dir, f.name)])),
    childFilePaths: Object.fromEntries(w.children.map((c) => [c.id, Object.fromEntries(c.files.map((f) => [f.name, path.join(w.dir, c.id, f.name)]))])),
  };
}

async function written(w: World): Promise<string> {
  const out = path.join(work, `w${(counter += 1)}.otabundle`);
  await writeBundle(contentsOf(w), out);
  return out;
}

// Raw tar entries, for bundles the writer would never produce.
type Entry = [name: string, data: Buffer | string];

function encode(entries: Entry[]): Buffer {
  const parts = entries.flatMap(([name, data]) => {
    const bytes = Buffer.from(data);
    return [encodeTarHeader({ name, size: bytes.length }), bytes, paddingFor(bytes.length)];
  });
  return Buffer.concat([...parts, Buffer.alloc(1024)]);
}

const metadata = (w: World): Entry[] => [['updatemanifest.json', w.bytes], ['updatemanifest.json.jws', w.signature]];
const parentEntries = (w: World): Entry[] => [...w.parentFiles, ...w.children.map((c) => c.document)].map((f) => [`files/${f.name}`, f.data]);
const childEntries = (w: World): Entry[] => w.children.flatMap((c) => c.files.map((f): Entry => [`children/${c.id}/${f.name}`, f.data]));
const goodEntries = (w: World): Entry[] => [...metadata(w), ...parentEntries(w), ...childEntries(w)];

async function expectRefused(bytes: Buffer, code: ResultCodeName, message?: RegExp): Promise<void> {
  const file = path.join(work, `h${(counter += 1)}.otabundle`);
  writeFileSync(file, bytes);
  const dir = tempDir();
  let caught: unknown;
  try {
    await readBundle(file, { trustStore: trustStoreFor(root), extractTo: dir });
  } catch (error) {
    caught = error;
  }
  expect((caught as { code?: string } | undefined)?.code, String(caught)).toBe(code);
  if (message) expect((caught as Error).message).toMatch(message);
  expect(readdirSync(dir), 'nothing extracted is left behind').toEqual([]);
}

describe('multi-step bundle round trip', () => {
  it('carries the parent files, then each child payload in its own folder, and verifies them all', async () => {
    const file = await written(two);
    expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n')).toEqual([
      'updatemanifest.json', 'updatemanifest.json.jws',
      'files/app.bin', 'files/motor.json', 'files/sensor.json',
      'children/file1/install.sh', 'children/file1/motor.bin', 'children/file2/install.sh',
    ]);
    const result = await readBundle(file, { trustStore: trustStoreFor(root) });
    expect(result.files.map((f) => [f.fileId, f.filename, f.child])).toEqual([
      ['file0', 'app.bin', undefined],
      ['file1', 'motor.json', undefined],
      ['file2', 'sensor.json', undefined],
      ['step1file0', 'install.sh', { childManifestFileId: 'file1', manifestStep: 1 }],
      ['step1file1', 'motor.bin', { childManifestFileId: 'file1', manifestStep: 1 }],
      ['step2file0', 'install.sh', { childManifestFileId: 'file2', manifestStep: 2 }],
    ]);
  });

  it('extracts two children that both ship install.sh to different paths, byte for byte', async () => {
    const dir = tempDir();
    const result = await readBundle(await written(two), { trustStore: trustStoreFor(root), extractTo: dir });
    const scripts = result.files.filter((f) => f.filename === 'install.sh');
    expect(scripts.map((f) => path.relative(dir, f.path!))).toEqual([path.join('children', 'file1', 'install.sh'), path.join('children', 'file2', 'install.sh')]);
    expect(readFileSync(scripts[0]!.path!)).toEqual(motorFiles[0]!.data);
    expect(readFileSync(scripts[1]!.path!)).toEqual(sensorFiles[0]!.data);
    expect(readFileSync(path.join(dir, 'app.bin'))).toEqual(two.parentFiles[0]!.data);
  });

  it('carries a file a child declares under the parent\'s id for the same file once, in the parent\'s place', async () => {
    const shared = two.parentFiles[0]!;
    const files = [shared, payload('step1file0', 'install.sh', '#!/bin/sh\n')];
    const w = world(signer, [{ id: 'file1', name: 'c.json', manifest: childManifest('C', files), files: files.slice(1) }]);
    const file = await written(w);
    expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n').slice(2)).toEqual(['files/app.bin', 'files/c.json', 'children/file1/install.sh']);
    expect((await readBundle(file, { trustStore: trustStoreFor(root) })).files.map((f) => f.fileId)).toEqual(['file0', 'file1', 'step1file0']);
  });

  it('the writer names a child file it was not given, and refuses child files that do not match', async () => {
    const out = path.join(work, 'never-multi.otabundle');
    const contents = contentsOf(two);
    await expect(writeBundle({ ...contents, childFilePaths: { file1: contents.childFilePaths.file1!, file2: {} } }, out)).rejects.toMatchObject({
      code: 'BUNDLE_FILE_MISSING',
      message: expect.stringMatching(/"install\.sh" of child update manifest sensor\.json \(file id file2, \/instructions\/steps\/2\)/) as unknown,
    });
    const wrong = path.join(work, 'wrong-install.sh');
    writeFileSync(wrong, Buffer.from(motorFiles[0]!.data).fill(0x41, 0, 1));
    await expect(writeBundle({ ...contents, childFilePaths: { ...contents.childFilePaths, file1: { ...contents.childFilePaths.file1, 'install.sh': wrong } } }, out)).rejects.toMatchObject({
      code: 'BUNDLE_HASH_MISMATCH',
    });
    expect(readdirSync(work).filter((f) => f.startsWith('never-multi'))).toEqual([]);
  });

  it('inspection lists the child entries', async () => {
    const listing = await inspectBundle(await written(two));
    expect(listing.entries.map((e) => e.name).filter((n) => n.startsWith('children/'))).toEqual(['children/file1/install.sh', 'children/file1/motor.bin', 'children/file2/install.sh']);
  });
});

describe('hostile multi-step bundles', () => {
  const flipped = (entries: Entry[], name: string): Entry[] =>
    entries.map(([n, d]): Entry => {
      if (n !== name) return [n, d];
      const copy = Buffer.from(d);
      copy[copy.length - 1]! ^= 1;
      return [n, copy];
    });
  const without = (entries: Entry[], name: string): Entry[] => entries.filter(([n]) => n !== name);
  const motorBin: Entry = ['children/file1/motor.bin', motorFiles[1]!.data];

  const cases: Array<[string, () => Buffer, ResultCodeName, RegExp?]> = [
    ['a child payload with a wrong byte', () => encode(flipped(goodEntries(two), 'children/file1/motor.bin')), 'BUNDLE_HASH_MISMATCH', /children\/file1\/motor\.bin/],
    ['a child payload of another size', () => encode(goodEntries(two).map(([n, d]): Entry => [n, n === 'children/file2/install.sh' ? `${d.toString()}x` : d])), 'BUNDLE_SIZE_MISMATCH'],
    ['a child entry missing', () => encode(without(goodEntries(two), 'children/file1/motor.bin')), 'BUNDLE_FILE_MISSING', /children\/file1\/motor\.bin/],
    ['an unexpected file in a child folder', () => encode([...goodEntries(two), ['children/file1/extra.sh', 'x']]), 'BUNDLE_PATH_REFUSED', /not a file of a child update/],
    ['a folder for a child no reference step names', () => encode([...goodEntries(two), ['children/file0/app.bin', two.parentFiles[0]!.data]]), 'BUNDLE_PATH_REFUSED'],
    ['a child file in another child\'s folder', () => encode([...without(goodEntries(two), 'children/file1/motor.bin'), ['children/file2/motor.bin', motorFiles[1]!.data]]), 'BUNDLE_PATH_REFUSED'],
    ['a child entry twice', () => encode([...goodEntries(two), motorBin]), 'BUNDLE_DUPLICATE_ENTRY'],
    ['a child entry before its manifest', () => encode([...metadata(two), parentEntries(two)[0]!, motorBin, ...parentEntries(two).slice(1), ...without(childEntries(two), motorBin[0])]), 'BUNDLE_ORDER_INVALID', /before the child update manifest it belongs to \(files\/motor\.json\)/],
    ['a parent file after a child file', () => encode([...metadata(two), ...without(parentEntries(two), 'files/sensor.json'), ...childEntries(two).slice(0, 2), ['files/sensor.json', two.children[1]!.document.data], ...childEntries(two).slice(2)]), 'BUNDLE_ORDER_INVALID'],
    ['a child entry cut short', () => encode(goodEntries(two)).subarray(0, encode(goodEntries(two).slice(0, -1)).length - 1024 + 512 + 10), 'BUNDLE_TRUNCATED'],
    ['a child folder ".."', () => encode([...goodEntries(two).slice(0, -1), ['children/../files/install.sh', sensorFiles[0]!.data]]), 'BUNDLE_PATH_REFUSED', /"\.\."/],
    ['".." inside a child folder', () => encode([...goodEntries(two).slice(0, -1), ['children/file2/../../install.sh', sensorFiles[0]!.data]]), 'BUNDLE_PATH_REFUSED'],
    ['a sub-folder in a child folder', () => encode([...goodEntries(two).slice(0, -1), ['children/file2/sub/install.sh', sensorFiles[0]!.data]]), 'BUNDLE_PATH_REFUSED', /nested/],
  ];

  for (const [name, build, code, message] of cases) {
    it(`refuses: ${name}`, async () => {
      await expectRefused(build(), code, message);
    });
  }

  const hostileChild = (manifest: object, files: Payload[] = []): World => world(signer, [{ id: 'file1', name: 'evil.json', manifest, files }]);
  const script = payload('step1file0', 'install.sh', '#!/bin/sh\n');
  const childCases: Array<[string, () => World, ResultCodeName, RegExp]> = [
    ['a child manifest that is a detached-manifest pointer', () => hostileChild({
      manifestVersion: '4', updateId: { provider: 'Contoso', name: 'P', version: '1.0' }, detachedManifestFileId: 'step1file0', files: { step1file0: fileEntry(script) },
    }, [script]), 'UPDATE_MANIFEST_INVALID', /^\/instructions\/steps\/1: child manifest evil\.json: .*pointer/],
    ['a child manifest with a reference step of its own', () => hostileChild(childManifest('Nested', [script], {
      instructions: { steps: [{ type: 'reference', detachedManifestFileId: 'step1file0' }] },
    }), [script]), 'UPDATE_MANIFEST_INVALID', /^\/instructions\/steps\/1: child manifest evil\.json has a reference step at \/instructions\/steps\/0/],
    ['a child manifest reusing a parent file id for another file', () => {
      const clash = payload('file0', 'app.bin', 'not the parent app');
      return hostileChild(childManifest('Clash', [clash]), [clash]);
    }, 'MANIFEST_FILE_ID_CONFLICT', /file id "file0" as app\.bin, but the parent manifest declares it as a different file/],
    ['two children declaring one file id for different files', () => {
      const a = payload('shared', 'a.bin', 'a');
      const b = payload('shared', 'b.bin', 'b');
      return world(signer, [{ id: 'file1', name: 'a.json', manifest: childManifest('A', [a]), files: [a] }, { id: 'file2', name: 'b.json', manifest: childManifest('B', [b]), files: [b] }]);
    }, 'MANIFEST_FILE_ID_CONFLICT', /but the child manifest of reference step 1 declares it/],
    ['a child file name that climbs out', () => {
      const evil = payload('step1file0', '../evil.sh', 'x');
      return hostileChild(childManifest('Evil', [evil]), []);
    }, 'MANIFEST_FILE_NAME_UNSAFE', /^\/instructions\/steps\/1: child manifest evil\.json: /],
    ['a parent file named "children" beside reference steps', () => world(signer, [motor], [payload('file0', 'children', 'x')]), 'BUNDLE_PATH_REFUSED', /cannot be named "children"/],
  ];

  for (const [name, build, code, message] of childCases) {
    it(`refuses: ${name}`, async () => {
      const w = build();
      await expectRefused(encode(goodEntries(w)), code, message);
      // The writer applies the same rules: it never produces such a bundle.
      await expect(writeBundle(contentsOf(w), path.join(work, `never-${(counter += 1)}.otabundle`))).rejects.toMatchObject({ code });
    });
  }

  it('removes extracted child files and folders when a later entry fails, and leaves an existing children folder alone', async () => {
    const dir = tempDir();
    const file = path.join(work, 'late-failure.otabundle');
    writeFileSync(file, encode(flipped(goodEntries(two), 'children/file2/install.sh')));
    await expect(readBundle(file, { trustStore: trustStoreFor(root), extractTo: dir })).rejects.toMatchObject({ code: 'BUNDLE_HASH_MISMATCH' });
    expect(readdirSync(dir)).toEqual([]);
    mkdirSync(path.join(dir, 'children'));
    writeFileSync(path.join(dir, 'children', 'mine'), 'mine');
    await expect(readBundle(await written(two), { trustStore: trustStoreFor(root), extractTo: dir })).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(readdirSync(dir)).toEqual(['children']);
    expect(readFileSync(path.join(dir, 'children', 'mine'), 'utf8')).toBe('mine');
    expect(existsSync(path.join(dir, 'app.bin'))).toBe(false);
  });
});
