// Public API of @edge-ota/common: the shared vocabulary of manifests, trust, bundles and result codes.

export { OtaError, isOtaError } from './errors.ts';
export {
  RESULT_FAILURE,
  RESULT_SUCCESS,
  describeExtendedResultCode,
  facilities,
  makeExtendedResultCode,
  resultCodeMarkdown,
  resultCodeTable,
  resultCodes,
  splitExtendedResultCode,
} from './resultCodes.ts';
export type { FacilityName, ResultCodeDefinition, ResultCodeName } from './resultCodes.ts';

export type * from './manifest/types.ts';
export { formatUpdateId, isDetachedManifestPointer, isReferenceStep } from './manifest/types.ts';
export { parseImportManifest } from './manifest/importManifest.ts';
export { EXTENSION_KEY, parseUpdateManifest } from './manifest/updateManifest.ts';
export { childUpdateManifestFromImport, updateManifestFromImport } from './manifest/fromImportManifest.ts';
export { FileVerifier, parseDetachedManifest } from './manifest/fileIntegrity.ts';
export { UpdateFileIds, childInlineSteps, referenceStepOf, referenceStepsOf } from './manifest/childUpdates.ts';
export type { ReferenceStepOf } from './manifest/childUpdates.ts';
export type { ChildUpdateManifestOptions, DetachedManifestFile, UpdateManifestOptions } from './manifest/fromImportManifest.ts';

export { JWS_ALGORITHMS, SIGNING_ALGORITHMS, generateKeyPair, publicJwk, signingKeyHash } from './signing/keys.ts';
export type { JwsAlgorithm, SigningAlgorithm } from './signing/keys.ts';
export { ADU_SERVICE_ROOT_KEYS } from './signing/aduServiceRoots.ts';
export type { RootKeyDescription } from './signing/aduServiceRoots.ts';
export { certifySigningKey, createSigningKey, manifestDigest, signUpdateManifest } from './signing/manifestSigner.ts';
export type { SigningKey, SigningKeyRequest } from './signing/manifestSigner.ts';
export { verifyUpdateManifest } from './signing/manifestVerifier.ts';
export type { VerifiedUpdateManifest } from './signing/manifestVerifier.ts';
export { createRootKeyPackage, packagedRootKey, parseRootKeyPackage } from './signing/rootKeyPackage.ts';
export type { RootKeyPackage, RootKeyPackageContents, DisabledSigningKey } from './signing/rootKeyPackage.ts';
export { TrustStore } from './signing/trustStore.ts';
export {
  ROOT_KEY_KIND, ROOT_PUBLIC_KIND, SIGNING_KEY_KIND, parseRootKeyFile, parseRootPublicKeyFile, parseSigningKeyFile, readRootPublicKeyFileSync, readSigningKeyFileSync,
} from './signing/keyFiles.ts';
export type { RootKeyFile, RootPublicKeyFile } from './signing/keyFiles.ts';
export type { ApplyResult, TrustStoreOptions } from './signing/trustStore.ts';

export { compareVersions } from './policy/version.ts';
export { matchCompatibility } from './policy/compatibility.ts';
export { isUpdateInstalled, stepInstalledCriteria } from './policy/installedCriteria.ts';
export { MemoryReplayGuard, SqliteReplayGuard } from './policy/replayGuard.ts';
export type { ReplayGuard } from './policy/replayGuard.ts';
export { acceptManifest, checkUpdatePolicy } from './policy/updatePolicy.ts';
export type { PolicyDecision, PolicyOptions, TargetState } from './policy/updatePolicy.ts';

export { writeBundle } from './bundle/bundleWriter.ts';
export type { BundleContents, BundleProgress } from './bundle/bundleWriter.ts';
export { readBundle } from './bundle/bundleReader.ts';
export type { BundleFile, ReadBundleOptions, VerifiedBundle } from './bundle/bundleReader.ts';
export { BUNDLE_EXTENSION, MANIFEST_ENTRY, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY } from './bundle/layout.ts';

export {
  FEEDBACK_MESSAGE_PROPERTY,
  FEEDBACK_OUTPUT,
  FEEDBACK_SCHEMA,
  MAX_FEEDBACK_BYTES,
  feedbackMessageId,
  isTerminalFeedback,
  parseFeedbackMessage,
} from './contracts/feedback.ts';
export type { FeedbackMessage, FeedbackStatus, FeedbackStep } from './contracts/feedback.ts';
export {
  APPLY_UPDATE_METHOD,
  DEVICE_UPDATE_TWIN_PROPERTY,
  MAX_DELIVERY_FILE_URLS,
  MAX_METHOD_PAYLOAD_BYTES,
  MAX_TWIN_STRING_BYTES,
  WORKFLOW_CANCEL,
  WORKFLOW_PROCESS_DEPLOYMENT,
  fitsInTwin,
  parseUpdateDelivery,
} from './contracts/updateDelivery.ts';
export type { ApplyUpdateReply, UpdateDelivery } from './contracts/updateDelivery.ts';
export {
  FLASH_FIRMWARE_METHOD,
  GET_FLASH_STATUS_METHOD,
  MCU_FLASH_SCHEMA,
  MCU_PROGRESS_INPUT,
  MCU_PROGRESS_OUTPUT,
  isFinalFlashStatus,
  parseMcuFlashProgress,
  parseMcuFlashRequest,
} from './contracts/mcuFlash.ts';
export type { McuFlashPhase, McuFlashProgress, McuFlashRequest, McuFlashStatus } from './contracts/mcuFlash.ts';
export { checkpointInBackground } from './persistence/backgroundCheckpoints.ts';
export type { BackgroundCheckpointOptions } from './persistence/backgroundCheckpoints.ts';

export { stopOnSignals } from './process/stopOnSignals.ts';
export type { StopOptions } from './process/stopOnSignals.ts';
