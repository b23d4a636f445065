// Multi-step updates (ADU reference steps) for bundle tests: a signed parent with one inline step and a reference
// step per child, with explicit file ids (unique across parent and children, as the dispatcher issues them), every
// file on disk: the parent's in the world's folder, each child's in a sub-folder named by the child manifest's file
// id (the layout `ota bundle create --child-files` reads).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { signUpdateManifest } from '../src/index.ts';
import type { FullUpdateManifest, SigningKey } from '../src/index.ts';
import { sha256b64, tempDir } from './fixtures.ts';

export interface Payload {
  id: string;
  name: string;
  data: Buffer;
}

export const payload = (id: string, name: string, text: string): Payload => ({ id, name, data: Buffer.from(text) });
export const fileEntry = (p: { name: string; data: Buffer }) => ({ filename: p.name, sizeInBytes: p.data.length, hashes: { sha256: sha256b64(p.data) } });
const compatibility = [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster' }];

export function childManifest(name: string, files: Payload[], extra: Partial<FullUpdateManifest> = {}): object {
  return {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name, version: '1.0' },
    compatibility,
    instructions: { steps: [{ handler: 'microsoft/script:1', files: files.map((f) => f.id), handlerProperties: { scriptFileName: 'install.sh' } }] },
    files: Object.fromEntries(files.map((f) => [f.id, fileEntry(f)])),
    createdDateTime: '2026-01-02T03:04:05Z',
    ...extra,
  };
}

export interface Child {
  /** The parent's file id of the child's manifest. */
  id: string;
  name: string;
  manifest: object;
  files: Payload[];
}

export interface World {
  bytes: Buffer;
  signature: string;
  parentFiles: Payload[];
  children: Array<Child & { document: Payload }>;
  dir: string;
}

/** A signed parent with one inline step (app.bin) and a reference step per child, every file on disk. */
export function world(signer: SigningKey, children: Child[], parentFiles: Payload[] = [payload('file0', 'app.bin', 'application '.repeat(300))]): World {
  const documents = children.map((c) => ({ ...c, document: { id: c.id, name: c.name, data: Buffer.from(JSON.stringify(c.manifest)) } }));
  const manifest = {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: 'Toaster', version: '2.0' },
    compatibility,
    instructions: { steps: [{ handler: 'microsoft/script:1', files: ['file0'] }, ...children.map((c) => ({ type: 'reference', detachedManifestFileId: c.id }))] },
    files: Object.fromEntries([...parentFiles, ...documents.map((d) => d.document)].map((f) => [f.id, fileEntry(f)])),
    createdDateTime: '2026-01-02T03:04:05Z',
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const dir = tempDir();
  for (const f of [...parentFiles, ...documents.map((d) => d.document)]) writeFileSync(path.join(dir, f.name), f.data);
  for (const c of documents) {
    mkdirSync(path.join(dir, c.id));
    for (const f of c.files) writeFileSync(path.join(dir, c.id, f.name), f.data);
  }
  return { bytes, signature: signUpdateManifest(bytes, signer), parentFiles, children: documents, dir };
}
