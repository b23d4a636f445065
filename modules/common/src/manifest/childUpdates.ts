import { OtaError, isOtaError } from '../errors.ts';
import { parseDetachedManifest } from './fileIntegrity.ts';
import { isReferenceStep } from './types.ts';
import type { FullUpdateManifest, InlineStep, ReferenceStep, UpdateFile } from './types.ts';

// The rules a parent update and the child updates its reference steps name must keep together, shared by the
// orchestrator's engine (which fetches children by URL) and the offline bundle (which carries them): a child holds
// inline steps only (one level, as in ADU), and one file id names one file across the parent and all its children,
// because one `fileUrls` map (or one bundle) serves them all.

export interface ReferenceStepOf {
  /** Position of the reference step in the parent's `instructions.steps`. */
  manifestStep: number;
  /** The parent's file id of the child's update manifest. */
  fileId: string;
  /** JSON pointer of the step, for messages. */
  pointer: string;
  /** The child manifest's file name in the parent (the id when the parent does not declare it). */
  childName: string;
}

/** The reference steps of a manifest, in step order. */
export function referenceStepsOf(manifest: FullUpdateManifest): ReferenceStepOf[] {
  return manifest.instructions.steps.flatMap((step, manifestStep) => (isReferenceStep(step) ? [referenceStepOf(manifest, manifestStep, step)] : []));
}

export function referenceStepOf(manifest: FullUpdateManifest, manifestStep: number, step: ReferenceStep): ReferenceStepOf {
  const fileId = step.detachedManifestFileId;
  return { manifestStep, fileId, pointer: `/instructions/steps/${manifestStep}`, childName: manifest.files[fileId]?.filename ?? fileId };
}

/** A child update's manifest from bytes the parent's signed entry vouches for; a refusal names the reference step. */
export function parseChildManifest(parent: FullUpdateManifest, reference: ReferenceStepOf, bytes: Uint8Array): FullUpdateManifest {
  try {
    return parseDetachedManifest(parent, reference.fileId, bytes);
  } catch (error) {
    if (!isOtaError(error)) throw error;
    throw new OtaError(error.code, `${reference.pointer}: child manifest ${reference.childName}: ${error.message}`, { field: reference.pointer, cause: error });
  }
}

/** A child update's steps; one with reference steps of its own is refused. */
export function childInlineSteps(child: FullUpdateManifest, reference: ReferenceStepOf): InlineStep[] {
  return child.instructions.steps.map((step, childStep) => {
    if (!isReferenceStep(step)) return step;
    throw new OtaError(
      'UPDATE_MANIFEST_INVALID',
      `${reference.pointer}: child manifest ${reference.childName} has a reference step at /instructions/steps/${childStep}; a child update holds inline steps only`,
      { field: reference.pointer },
    );
  });
}

/** File ids seen so far across a parent and its children, each with the manifest that declared it first. */
export class UpdateFileIds {
  readonly #files = new Map<string, { file: UpdateFile; declaredBy: string }>();

  constructor(parent: FullUpdateManifest) {
    for (const [fileId, file] of Object.entries(parent.files)) this.#files.set(fileId, { file, declaredBy: 'the parent manifest' });
  }

  /**
   * Adds a child's files and returns those it declares first. A file id the parent or an earlier child already
   * declares for the same file (name, size, sha256) is the same file, kept once; for another file it is
   * `MANIFEST_FILE_ID_CONFLICT`.
   */
  addChild(child: FullUpdateManifest, reference: ReferenceStepOf): Array<[string, UpdateFile]> {
    const added: Array<[string, UpdateFile]> = [];
    for (const [fileId, file] of Object.entries(child.files)) {
      const known = this.#files.get(fileId);
      if (!known) {
        this.#files.set(fileId, { file, declaredBy: `the child manifest of reference step ${reference.manifestStep}` });
        added.push([fileId, file]);
      } else if (!isSameFile(known.file, file)) {
        throw new OtaError(
          'MANIFEST_FILE_ID_CONFLICT',
          `${reference.pointer}: child manifest ${reference.childName} declares file id ${JSON.stringify(fileId)} as ${file.filename}, but ${known.declaredBy} declares it as a different file (${known.file.filename})`,
          { field: reference.pointer },
        );
      }
    }
    return added;
  }
}

/** One file under one id: same name (handlers find files by name), size and content. */
function isSameFile(a: UpdateFile, b: UpdateFile): boolean {
  return a.filename === b.filename && a.sizeInBytes === b.sizeInBytes && Buffer.from(a.hashes.sha256, 'base64').equals(Buffer.from(b.hashes.sha256, 'base64'));
}
