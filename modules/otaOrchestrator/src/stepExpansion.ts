import { OtaError, UpdateFileIds, childInlineSteps, formatUpdateId, isOtaError, isReferenceStep, matchCompatibility, parseDetachedManifest, referenceStepOf } from '@edge-ota/common';
import type { FullUpdateManifest, InlineStep, UpdateFile, UpdateId } from '@edge-ota/common';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

// ADU reference steps (multi-step ordered execution; the "proxy" or component updates), turned into one flat list
// of inline steps for the engine.
//
// A reference step names a file of the parent manifest (`detachedManifestFileId`); that file is the child update's
// update manifest. It has no signature of its own: it is trusted because its bytes match the size and sha256 the
// parent's signed entry gives, checked on the bytes that are parsed, every time they are read. A child may hold
// inline steps only (ADU allows one level). Its steps run in place of the reference step, in order, by the same
// handlers, and the files of every manifest form one map by file id, as the delivery's `fileUrls` does.
//
// The list depends on the manifest bytes alone (children are pinned by the parent's hashes), so the same job
// always gets the same steps at the same indexes: the engine's per-step phase records, keyed by index, stay valid
// across restarts. Whether a child applies to the target is decided separately (`selectForTarget`) and recorded
// by the engine, so a changed target does not reshuffle the list.
//
// Where things are kept, under the job's directory:
//   manifest/children/<fileId>.json    a child's update manifest (fetched once per job, re-verified on every read)
//   files/<filename>                   the parent's files (as for a manifest without reference steps)
//   children/<fileId>/<filename>       a child's files: two children may both have an `install.sh`

export interface ExpansionContext {
  jobDir: string;
  /** The delivery's download URLs by file id (parent and children share one map, as in ADU). */
  fileUrls: Readonly<Record<string, string>>;
  /**
   * Brings a signed file to `destination` (content cache first, then `url`) and checks it against `file`; a copy
   * already there that matches is kept.
   */
  fetch(url: string, file: UpdateFile, destination: string): Promise<void>;
}

/** A child update: the update manifest a reference step points at, and where its steps went. */
export interface ChildUpdate {
  /** Position of the reference step in the parent's `instructions.steps`. */
  manifestStep: number;
  /** The parent's file id of the child's update manifest. */
  fileId: string;
  manifest: FullUpdateManifest;
  /** Indexes of the child's steps in the expanded list, in the child's order. */
  stepIndexes: number[];
}

export interface ExpandedStep {
  /** Position in the expanded list: the key of the step's phase records and work directory. */
  index: number;
  step: InlineStep;
  /** The update the step belongs to: the parent's, or the child's for a step of a reference step. */
  updateId: UpdateId;
  /** For messages: `step 2`, or `step 2 (step 1 of Contoso/Motor@1.1, reference step 1)`. */
  label: string;
  /** JSON pointer of the step, through the reference step for a child's step. */
  pointer: string;
  /** Set for the steps of a reference step. */
  child?: ChildUpdate;
}

export interface JobFile {
  fileId: string;
  entry: UpdateFile;
  /** Where the verified file is kept while the job runs. */
  path: string;
}

export interface ExpandedSteps {
  steps: ExpandedStep[];
  /** Every file of the parent and its children, by file id. */
  files: ReadonlyMap<string, JobFile>;
  children: ChildUpdate[];
}

/**
 * Fetches (or re-reads) every child update manifest, checks it, and returns the parent's steps with each reference
 * step replaced by its child's steps, plus the merged file map. Refuses a child that does not match its signed
 * entry, is a pointer itself, has reference steps, or reuses a file id for a different file.
 */
export async function expandSteps(manifest: FullUpdateManifest, context: ExpansionContext): Promise<ExpandedSteps> {
  const files = new Map<string, JobFile>();
  for (const [fileId, entry] of Object.entries(manifest.files)) files.set(fileId, { fileId, entry, path: path.join(context.jobDir, 'files', entry.filename) });
  const fileIds = new UpdateFileIds(manifest);
  const steps: ExpandedStep[] = [];
  const children: ChildUpdate[] = [];
  for (const [manifestStep, step] of manifest.instructions.steps.entries()) {
    const pointer = `/instructions/steps/${manifestStep}`;
    if (!isReferenceStep(step)) {
      const index = steps.length;
      steps.push({ index, step, updateId: manifest.updateId, label: index === manifestStep ? `step ${index}` : `step ${index} (manifest step ${manifestStep})`, pointer });
      continue;
    }
    const reference = referenceStepOf(manifest, manifestStep, step);
    const { fileId, childName } = reference;
    const childManifest = await readChild(manifest, fileId, pointer, context);
    const child: ChildUpdate = { manifestStep, fileId, manifest: childManifest, stepIndexes: [] };
    for (const [childFileId, entry] of fileIds.addChild(childManifest, reference)) {
      files.set(childFileId, { fileId: childFileId, entry, path: path.join(context.jobDir, 'children', fileId, entry.filename) });
    }
    for (const [childStep, inner] of childInlineSteps(childManifest, reference).entries()) {
      const index = steps.length;
      child.stepIndexes.push(index);
      steps.push({
        index,
        step: inner,
        updateId: childManifest.updateId,
        label: `step ${index} (step ${childStep} of ${formatUpdateId(childManifest.updateId)}, reference step ${manifestStep})`,
        pointer: `${pointer} -> ${childName}/instructions/steps/${childStep}`,
        child,
      });
    }
    children.push(child);
  }
  return { steps, files, children };
}

export type TargetSelection = { applies: true } | { applies: false; reason: string };

/**
 * Whether a child update is for the job's target.
 *
 * ADU's steps handler (Azure/iot-hub-device-update, src/extensions/update_manifest_handlers/steps_handler/src/
 * steps_handler.cpp) gives a reference step to the components a component enumerator selects with the child's
 * compatibility; when none is selected the step is optional and skipped (result 604,
 * ADUC_Result_Install_Skipped_NoMatchingComponents), and its IsInstalled answers "installed". Without an
 * enumerator it applies every child to the host without looking at the child's compatibility.
 *
 * We follow the enumerator path, with the job's target as the only component: a child whose compatibility
 * (matched by `matchCompatibility`, the function `checkUpdatePolicy` uses for the parent) does not match the
 * target's properties is skipped and counts as installed. Applying a child to a target it does not describe, as
 * the no-enumerator path would, would step around the compatibility check that guards every other update. One
 * difference: ADU selects components with the child's first compatibility entry, we accept any entry, as for the
 * parent.
 */
export function selectForTarget(child: ChildUpdate, targetProperties: Readonly<Record<string, string>>): TargetSelection {
  try {
    matchCompatibility(child.manifest.compatibility, targetProperties);
    return { applies: true };
  } catch (error) {
    if (isOtaError(error, 'INCOMPATIBLE_DEVICE')) return { applies: false, reason: error.message };
    throw error;
  }
}

/** The child's update manifest: fetched into the job directory once, and checked against the parent on every read. */
async function readChild(parent: FullUpdateManifest, fileId: string, pointer: string, context: ExpansionContext): Promise<FullUpdateManifest> {
  const entry = parent.files[fileId];
  if (!entry) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${pointer}/detachedManifestFileId: file id ${JSON.stringify(fileId)} is not in /files`, { field: pointer });
  const url = context.fileUrls[fileId];
  if (!url) {
    throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${pointer}: no download URL for child manifest ${entry.filename} (file id ${fileId}) in fileUrls`, { field: pointer });
  }
  const file = path.join(context.jobDir, 'manifest', 'children', `${fileId}.json`);
  try {
    await context.fetch(url, entry, file);
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (error) {
      throw new OtaError('DOWNLOAD_STORAGE_ERROR', `cannot read the kept copy: ${(error as Error).message}`, { cause: error });
    }
    // The bytes parsed are the bytes hashed: a copy changed on disk after the fetch is refused, not trusted.
    return parseDetachedManifest(parent, fileId, bytes);
  } catch (error) {
    if (!isOtaError(error)) throw error;
    throw new OtaError(error.code, `${pointer}: child manifest ${entry.filename}: ${error.message}`, { field: pointer, cause: error });
  }
}
