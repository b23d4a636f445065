import { isOtaError } from '@edge-ota/common';
import type { FullUpdateManifest, UpdateFile } from '@edge-ota/common';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ExpansionContext } from '../src/stepExpansion.ts';
import { expandSteps, selectForTarget } from '../src/stepExpansion.ts';
import type { ChildDocument, PayloadFile } from './support/composedUpdates.ts';
import { childUpdate, fileEntry } from './support/composedUpdates.ts';
import { compatibleProperties } from './support/signedUpdates.ts';

// The expansion on its own, with real files in a job directory: which steps come out at which index, where every
// file is kept, and that a kept child manifest is checked again on every read.

const file = (id: string, name: string, text = `${id}\n`): PayloadFile => ({ id, name, data: Buffer.from(text) });
const script = (f: PayloadFile) => ({ handler: 'microsoft/script:1', files: [f.id], handlerProperties: { scriptFileName: f.name } });

function parent(steps: FullUpdateManifest['instructions']['steps'], files: Record<string, UpdateFile>): FullUpdateManifest {
  return {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: 'Composed', version: '1.0.0' },
    compatibility: [compatibleProperties],
    instructions: { steps },
    files,
    createdDateTime: '2026-01-01T00:00:00Z',
  };
}

/** Serves children by URL into the job directory, as the downloader would, and counts the fetches. */
function servingContext(jobDir: string, children: ChildDocument[]): ExpansionContext & { fetched: string[] } {
  const byUrl = new Map(children.map((c) => [`http://store/${c.id}`, c.bytes]));
  const fetched: string[] = [];
  return {
    jobDir,
    fetched,
    fileUrls: Object.fromEntries(children.map((c) => [c.id, `http://store/${c.id}`])),
    async fetch(url, _file, destination) {
      fetched.push(url);
      const bytes = byUrl.get(url);
      if (!bytes) throw new Error(`nothing at ${url}`);
      await mkdir(path.dirname(destination), { recursive: true });
      await writeFile(destination, bytes);
    },
  };
}

describe('step expansion', () => {
  const pre = file('p-pre', 'install.sh', 'parent script');
  const shared = file('shared', 'common.lib', 'one library for all');
  const motorScript = file('m-sh', 'install.sh', 'motor script');
  const cameraScript = file('c-sh', 'install.sh', 'camera script');
  const motor = childUpdate({ id: 'm-manifest', name: 'motor.json', update: 'Motor', version: '1.1', steps: [script(motorScript), script(shared)], files: [motorScript, shared] });
  const camera = childUpdate({ id: 'c-manifest', name: 'camera.json', update: 'Camera', version: '3.0', steps: [script(cameraScript)], files: [cameraScript] });
  const manifest = parent(
    [script(pre), { type: 'reference', detachedManifestFileId: motor.id }, script(shared), { type: 'reference', detachedManifestFileId: camera.id }],
    {
      [pre.id]: fileEntry(pre),
      [shared.id]: fileEntry(shared),
      [motor.id]: fileEntry({ name: motor.name, data: motor.bytes }),
      [camera.id]: fileEntry({ name: camera.name, data: camera.bytes }),
    },
  );

  it('puts each child’s steps in place of its reference step, the same way every time', async () => {
    const jobDir = mkdtempSync(path.join(tmpdir(), 'expansion-'));
    const first = await expandSteps(manifest, servingContext(jobDir, [motor, camera]));
    expect(first.steps.map((s) => [s.index, s.label, s.step.files[0]])).toEqual([
      [0, 'step 0', 'p-pre'],
      [1, 'step 1 (step 0 of Contoso/Motor@1.1, reference step 1)', 'm-sh'],
      [2, 'step 2 (step 1 of Contoso/Motor@1.1, reference step 1)', 'shared'],
      [3, 'step 3 (manifest step 2)', 'shared'],
      [4, 'step 4 (step 0 of Contoso/Camera@3.0, reference step 3)', 'c-sh'],
    ]);
    expect(first.steps.map((s) => s.updateId.name)).toEqual(['Composed', 'Motor', 'Motor', 'Composed', 'Camera']);
    expect(first.children.map((c) => [c.manifestStep, c.fileId, c.stepIndexes])).toEqual([[1, 'm-manifest', [1, 2]], [3, 'c-manifest', [4]]]);
    // A restart reads the kept copies: same steps, same indexes, so the journal's records still fit.
    const again = await expandSteps(manifest, servingContext(jobDir, [motor, camera]));
    expect(again.steps.map((s) => [s.index, s.label, s.pointer, s.step])).toEqual(first.steps.map((s) => [s.index, s.label, s.pointer, s.step]));
  });

  it('keeps each child’s files in its own folder, and a file both declare identically once', async () => {
    const jobDir = mkdtempSync(path.join(tmpdir(), 'expansion-'));
    const { files } = await expandSteps(manifest, servingContext(jobDir, [motor, camera]));
    expect(files.get('p-pre')?.path).toBe(path.join(jobDir, 'files', 'install.sh'));
    expect(files.get('m-sh')?.path).toBe(path.join(jobDir, 'children', 'm-manifest', 'install.sh'));
    expect(files.get('c-sh')?.path).toBe(path.join(jobDir, 'children', 'c-manifest', 'install.sh'));
    expect(files.get('shared')?.path).toBe(path.join(jobDir, 'files', 'common.lib'));
  });

  it('checks a kept child manifest against the parent on every read, not only when it is fetched', async () => {
    const jobDir = mkdtempSync(path.join(tmpdir(), 'expansion-'));
    await expandSteps(manifest, servingContext(jobDir, [motor, camera]));
    const kept = path.join(jobDir, 'manifest', 'children', `${motor.id}.json`);
    writeFileSync(kept, Buffer.from(motor.bytes.toString('utf8').replace('"1.1"', '"6.6"')));
    // A fetch that keeps whatever is there (as a downloader that found "its" file would) does not make it trusted.
    const trusting: ExpansionContext = { jobDir, fileUrls: servingContext(jobDir, [motor, camera]).fileUrls, fetch: () => Promise.resolve() };
    const error = await expandSteps(manifest, trusting).then(() => undefined, (rejection: unknown) => rejection);
    expect(isOtaError(error, 'DOWNLOAD_HASH_MISMATCH')).toBe(true);
    expect((error as Error).message).toMatch(/^\/instructions\/steps\/1: child manifest motor\.json: /);
  });

  it('selects a child by its compatibility against the target, through any of its entries', async () => {
    const jobDir = mkdtempSync(path.join(tmpdir(), 'expansion-'));
    const sensor = childUpdate({
      id: 's-manifest', name: 'sensor.json', update: 'Sensor', version: '1.0',
      compatibility: [{ deviceModel: 'Sensor' }, { deviceManufacturer: 'Contoso', deviceModel: 'Gateway' }], steps: [script(motorScript)], files: [motorScript],
    });
    const withSensor = parent([{ type: 'reference', detachedManifestFileId: sensor.id }], { [sensor.id]: fileEntry({ name: sensor.name, data: sensor.bytes }) });
    const [child] = (await expandSteps(withSensor, servingContext(jobDir, [sensor]))).children;
    expect(selectForTarget(child!, compatibleProperties)).toEqual({ applies: true });
    const toaster = selectForTarget(child!, { deviceManufacturer: 'Contoso', deviceModel: 'Toaster' });
    expect(toaster.applies).toBe(false);
    expect(toaster.applies ? '' : toaster.reason).toMatch(/^\/compatibility: no entry matches the device \(entry 0 wants deviceModel="Sensor"/);
  });
});
