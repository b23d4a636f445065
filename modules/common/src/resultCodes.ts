// One table of stable result codes for every component, in Azure Device Update's layout:
// `resultCode` says what happened (0 = failure, 1 = success, ADU-style specific successes above that) and
// `extendedResultCode` pinpoints a failure as facility (4 bits) / component (8 bits) / code (20 bits).
// Numbers are part of the wire format: never renumber or reuse one. Add new entries at the end of their block.

export const RESULT_FAILURE = 0;
export const RESULT_SUCCESS = 1;

/** Facilities (top 4 bits of an extended result code). */
export const facilities = {
  trust: 0x1, // manifests, signatures, the key chain, policy
  download: 0x2,
  install: 0x3, // install, apply, health check, rollback
  workflow: 0x4, // job control: cancel, timeouts, state
  mcu: 0x5, // SMP / MCUboot over serial
  contentCache: 0x6,
  bundle: 0x7, // offline bundle container
  tooling: 0x8, // CLI and key files
} as const;
export type FacilityName = keyof typeof facilities;

export interface ResultCodeDefinition {
  readonly name: string;
  readonly resultCode: number;
  /** null for successes, which carry no extended code. */
  readonly facility: FacilityName | null;
  readonly component: number;
  readonly code: number;
  /** 0 for successes; facility/component/code packed in 32 bits otherwise. */
  readonly extendedResultCode: number;
  readonly meaning: string;
}

export function makeExtendedResultCode(facility: number, component: number, code: number): number {
  if (!Number.isInteger(facility) || facility < 0 || facility > 0xf) throw new RangeError(`facility ${facility} does not fit 4 bits`);
  if (!Number.isInteger(component) || component < 0 || component > 0xff) throw new RangeError(`component ${component} does not fit 8 bits`);
  if (!Number.isInteger(code) || code < 0 || code > 0xfffff) throw new RangeError(`code ${code} does not fit 20 bits`);
  // `>>> 0` keeps facility 0x8..0xf positive instead of wrapping into a negative int32.
  return ((facility << 28) | (component << 20) | code) >>> 0;
}

export function splitExtendedResultCode(erc: number): { facility: number; component: number; code: number } {
  return { facility: (erc >>> 28) & 0xf, component: (erc >>> 20) & 0xff, code: erc & 0xfffff };
}

type Row = readonly [name: string, facility: FacilityName, component: number, code: number, meaning: string];
type SuccessRow = readonly [name: string, resultCode: number, meaning: string];

// Successes carry no extended code; their resultCode follows ADU's numbering (5xx download, 6xx install, 7xx apply).
const successes = [
  ['SUCCESS', RESULT_SUCCESS, 'The operation succeeded.'],
  ['DOWNLOAD_SUCCEEDED', 500, 'All files were downloaded and matched their signed hashes.'],
  ['DOWNLOAD_SKIPPED_ALREADY_INSTALLED', 503, 'Download skipped: installedCriteria says the update is already installed.'],
  ['INSTALL_SUCCEEDED', 600, 'Install step finished.'],
  ['INSTALL_SKIPPED_ALREADY_INSTALLED', 603, 'Install skipped: installedCriteria says the update is already installed.'],
  ['APPLY_SUCCEEDED', 700, 'Apply step finished; the new software runs.'],
  ['APPLY_REQUIRES_REBOOT', 705, 'Apply finished but the target must reboot to run the new software.'],
  ['APPLY_REQUIRES_AGENT_RESTART', 706, 'Apply finished but the agent must restart to run the new software.'],
] as const satisfies readonly SuccessRow[];

// Components inside a facility; keep numbers stable.
const trust = { manifest: 0x01, signature: 0x02, chain: 0x03, rootKeyPackage: 0x04, policy: 0x05 } as const;
const download = { http: 0x01, content: 0x02, storage: 0x03 } as const;
const install = { install: 0x01, apply: 0x02, health: 0x03, rollback: 0x04 } as const;
const workflow = { job: 0x01, contract: 0x02 } as const;
const mcu = { transport: 0x01, smp: 0x02, image: 0x03, flash: 0x04 } as const;
const cache = { cache: 0x01 } as const;
const bundle = { container: 0x01, content: 0x02 } as const;
const tooling = { cli: 0x01, keys: 0x02 } as const;

const failures = [
  // trust / manifest formats
  ['MANIFEST_NOT_JSON', 'trust', trust.manifest, 0x001, 'The manifest is not valid UTF-8 JSON.'],
  ['IMPORT_MANIFEST_INVALID', 'trust', trust.manifest, 0x002, 'The import manifest breaks a rule of the ADU import manifest v5 schema.'],
  ['UPDATE_MANIFEST_INVALID', 'trust', trust.manifest, 0x003, 'The update manifest breaks a rule of the ADU update manifest schema.'],
  ['MANIFEST_VERSION_UNSUPPORTED', 'trust', trust.manifest, 0x004, 'The manifestVersion is not one this product reads.'],
  ['MANIFEST_FILE_REFERENCE_INVALID', 'trust', trust.manifest, 0x005, 'A step names a file that the manifest does not declare.'],
  ['MANIFEST_FILE_NAME_UNSAFE', 'trust', trust.manifest, 0x006, 'A file name could escape its directory or is duplicated.'],
  ['MANIFEST_HASH_MALFORMED', 'trust', trust.manifest, 0x007, 'A declared sha256 is not 32 bytes of base64.'],
  ['MANIFEST_TOO_LARGE', 'trust', trust.manifest, 0x008, 'The manifest exceeds the size a device accepts.'],
  ['MANIFEST_EXTENSION_INVALID', 'trust', trust.manifest, 0x009, 'The edgeOta extension block (id, expiry, rollback) is malformed.'],
  ['MANIFEST_FILE_ID_CONFLICT', 'trust', trust.manifest, 0x00a, 'A file id names different files in a parent manifest and a child update manifest, or in two children.'],
  // trust / JWS structure
  ['SIGNATURE_MALFORMED', 'trust', trust.signature, 0x001, 'The manifest signature is not a compact JWS with a JSON header and payload.'],
  ['SIGNATURE_ALGORITHM_UNSUPPORTED', 'trust', trust.signature, 0x002, 'The JWS alg is not RS256/384/512, ES256 or EdDSA, or does not fit its key.'],
  ['SIGNATURE_INVALID', 'trust', trust.signature, 0x003, 'The manifest signature does not verify with the signing key.'],
  ['MANIFEST_HASH_MISMATCH', 'trust', trust.signature, 0x004, 'The signed sha256 does not match the manifest bytes.'],
  // trust / key chain
  ['SIGNING_KEY_MISSING', 'trust', trust.chain, 0x001, 'The JWS header carries no sjwk (signed signing key).'],
  ['SIGNING_KEY_MALFORMED', 'trust', trust.chain, 0x002, 'The sjwk is not a JWS carrying a usable public JWK.'],
  ['ROOT_KEY_UNKNOWN', 'trust', trust.chain, 0x003, 'The sjwk names a root key (kid) that the trust store does not hold.'],
  ['ROOT_KEY_DISABLED', 'trust', trust.chain, 0x004, 'The sjwk is signed by a root key that a root key package disabled.'],
  ['SIGNING_KEY_SIGNATURE_INVALID', 'trust', trust.chain, 0x005, 'The sjwk signature does not verify with the named root key.'],
  ['SIGNING_KEY_DISABLED', 'trust', trust.chain, 0x006, 'The signing key is listed as disabled by the root key package.'],
  // trust / root key package
  ['ROOT_KEY_PACKAGE_INVALID', 'trust', trust.rootKeyPackage, 0x001, 'The root key package breaks a rule of its schema.'],
  ['ROOT_KEY_PACKAGE_SIGNATURE_INVALID', 'trust', trust.rootKeyPackage, 0x002, 'The root key package lacks a valid signature by a trusted, enabled root key.'],
  ['ROOT_KEY_PACKAGE_STALE', 'trust', trust.rootKeyPackage, 0x003, 'The root key package is not newer than the one the device holds.'],
  ['ROOT_KEY_PACKAGE_TEST_MISMATCH', 'trust', trust.rootKeyPackage, 0x004, 'A test root key package was offered to a production trust store or vice versa.'],
  // trust / policy
  ['MANIFEST_EXPIRED', 'trust', trust.policy, 0x001, 'The manifest expiry has passed.'],
  ['MANIFEST_REPLAYED', 'trust', trust.policy, 0x002, 'A manifest with this id was already accepted once.'],
  ['MANIFEST_NOT_YET_VALID', 'trust', trust.policy, 0x003, 'The manifest was created in the future beyond the allowed clock skew.'],
  ['INCOMPATIBLE_DEVICE', 'trust', trust.policy, 0x004, 'No compatibility entry matches the device properties.'],
  ['DOWNGRADE_REFUSED', 'trust', trust.policy, 0x005, 'The update is older than the installed version and is not a signed rollback.'],
  ['MINIMUM_VERSION_NOT_MET', 'trust', trust.policy, 0x006, 'The installed version is below the minimum the manifest requires.'],
  ['MANIFEST_LIFETIME_MISSING', 'trust', trust.policy, 0x007, 'The manifest has no id or expiry and the policy requires them.'],
  // download
  ['DOWNLOAD_HTTP_ERROR', 'download', download.http, 0x001, 'The server answered with an HTTP error status.'],
  ['DOWNLOAD_CONNECTION_FAILED', 'download', download.http, 0x002, 'The connection failed or timed out.'],
  ['DOWNLOAD_TRUNCATED', 'download', download.content, 0x001, 'Fewer bytes arrived than sizeInBytes declares.'],
  ['DOWNLOAD_TOO_LONG', 'download', download.content, 0x002, 'More bytes arrived than sizeInBytes declares.'],
  ['DOWNLOAD_HASH_MISMATCH', 'download', download.content, 0x003, 'The downloaded file does not match its signed sha256.'],
  ['DOWNLOAD_DISK_FULL', 'download', download.storage, 0x001, 'No space left to store the download.'],
  ['DOWNLOAD_STORAGE_ERROR', 'download', download.storage, 0x002, 'Writing the download to disk failed.'],
  // install
  ['INSTALL_FAILED', 'install', install.install, 0x001, 'The handler could not install the update.'],
  ['INSTALL_HANDLER_UNKNOWN', 'install', install.install, 0x002, 'No handler on the target serves the step handler id.'],
  ['APPLY_FAILED', 'install', install.apply, 0x001, 'The installed update could not be activated.'],
  ['HEALTH_CHECK_FAILED', 'install', install.health, 0x001, 'The new software did not pass its health check.'],
  ['HEALTH_CHECK_TIMEOUT', 'install', install.health, 0x002, 'The new software did not report healthy in time.'],
  ['ROLLBACK_PERFORMED', 'install', install.rollback, 0x001, 'The target went back to the previous software after a failure.'],
  ['ROLLBACK_FAILED', 'install', install.rollback, 0x002, 'Going back to the previous software failed; the target needs attention.'],
  // workflow
  ['CANCELLED', 'workflow', workflow.job, 0x001, 'The job was cancelled before it finished.'],
  ['JOB_TIMEOUT', 'workflow', workflow.job, 0x002, 'The job did not finish within its deadline.'],
  ['JOB_SUPERSEDED', 'workflow', workflow.job, 0x003, 'A newer deployment replaced this job.'],
  ['JOB_STATE_LOOP', 'workflow', workflow.job, 0x004, 'The job entered the same state too often (a crash or reboot loop) and was stopped.'],
  ['UPDATE_DELIVERY_INVALID', 'workflow', workflow.contract, 0x001, 'An applyUpdate payload or deviceUpdate twin value breaks the update-delivery contract.'],
  ['FEEDBACK_INVALID', 'workflow', workflow.contract, 0x002, 'A feedback message breaks the feedback contract (schema, size, id).'],
  ['MCU_FLASH_REQUEST_INVALID', 'workflow', workflow.contract, 0x003, 'A flashFirmware request or mcuProgress message breaks the MCU flash contract.'],
  // MCU
  ['MCU_TIMEOUT', 'mcu', mcu.transport, 0x001, 'The MCU did not answer an SMP request in time.'],
  ['MCU_TRANSPORT_ERROR', 'mcu', mcu.transport, 0x002, 'The serial link failed or framing was corrupt.'],
  ['MCU_DEVICE_ERROR', 'mcu', mcu.smp, 0x001, 'The MCU answered with a non-zero SMP rc.'],
  ['MCU_IMAGE_INVALID', 'mcu', mcu.image, 0x001, 'The MCUboot image header or TLVs are invalid.'],
  ['MCU_IMAGE_SIGNATURE_INVALID', 'mcu', mcu.image, 0x002, 'MCUboot rejected the image signature.'],
  ['MCU_IMAGE_NOT_CONFIRMED', 'mcu', mcu.image, 0x003, 'The MCU booted the old image: the new one was not confirmed.'],
  // MCU, finer codes of the serial translator's flash flow (codes from 0x101 up, so they never meet the ones above)
  ['MCU_IMAGE_TRUNCATED', 'mcu', mcu.image, 0x101, 'The MCUboot image is shorter than its header and TLVs say; refused before upload.'],
  ['MCU_IMAGE_BAD_MAGIC', 'mcu', mcu.image, 0x102, 'The file does not start with the MCUboot image magic; refused before upload.'],
  ['MCU_IMAGE_BAD_HEADER', 'mcu', mcu.image, 0x103, 'The MCUboot image header is inconsistent; refused before upload.'],
  ['MCU_IMAGE_BAD_TLV', 'mcu', mcu.image, 0x104, 'The MCUboot TLV area is malformed; refused before upload.'],
  ['MCU_IMAGE_NO_HASH', 'mcu', mcu.image, 0x105, 'The MCUboot image carries no SHA-256 TLV; refused before upload.'],
  ['MCU_IMAGE_HASH_MISMATCH', 'mcu', mcu.image, 0x106, 'The MCUboot image does not match its own SHA-256 TLV (corrupted); refused before upload.'],
  ['MCU_IMAGE_NO_SIGNATURE', 'mcu', mcu.image, 0x107, 'The MCUboot image carries no signature TLV; refused before upload.'],
  ['MCU_IMAGE_KEY_MISMATCH', 'mcu', mcu.image, 0x108, 'The image names a signing key other than the one configured for the MCU.'],
  ['MCU_IMAGE_BAD_SIGNATURE', 'mcu', mcu.image, 0x109, 'The image signature does not verify with the MCU signing key; refused before upload.'],
  ['MCU_IMAGE_UNSUPPORTED_KEY', 'mcu', mcu.image, 0x10a, 'The configured MCU signing key is of a type the translator cannot verify.'],
  ['MCU_IMAGE_TOO_LARGE', 'mcu', mcu.image, 0x10b, 'The image does not fit the MCU secondary slot; refused before upload.'],
  ['MCU_IMAGE_VERSION_MISMATCH', 'mcu', mcu.image, 0x10c, 'The image header version is not the version the update asked for.'],
  ['MCU_UNREACHABLE', 'mcu', mcu.transport, 0x101, 'The MCU did not answer before the upload; its image is unchanged.'],
  ['MCU_UPLOAD_FAILED', 'mcu', mcu.smp, 0x102, 'The upload to the secondary slot failed; the MCU still runs its old image.'],
  ['MCU_TEST_MARK_FAILED', 'mcu', mcu.smp, 0x103, 'The MCU did not mark the uploaded image for test; it still runs its old image.'],
  ['MCU_UNKNOWN', 'mcu', mcu.flash, 0x001, 'The flash request names an MCU that this gateway has not configured.'],
  ['MCU_BUSY', 'mcu', mcu.flash, 0x002, 'The MCU is being flashed by another job; the request was not accepted.'],
  ['MCU_RECONNECT_TIMEOUT', 'mcu', mcu.flash, 0x101, 'The MCU did not answer after the reset; reset again without confirming.'],
  ['MCU_NEW_IMAGE_NOT_ACTIVE', 'mcu', mcu.flash, 0x102, 'After the reset the MCU does not run the new image; MCUboot kept or reverted to the old one.'],
  ['MCU_NEW_IMAGE_WRONG_VERSION', 'mcu', mcu.flash, 0x103, 'After the reset the MCU reports another version than the image header; rolled back.'],
  ['MCU_NEW_IMAGE_ALREADY_CONFIRMED', 'mcu', mcu.flash, 0x104, 'The new image was confirmed without a trial boot; rolled back.'],
  ['MCU_HEALTH_ECHO_FAILED', 'mcu', mcu.flash, 0x105, 'The new image did not answer the echo health check; rolled back.'],
  ['MCU_HEALTH_APP_FAILED', 'mcu', mcu.flash, 0x106, 'The new image failed its app-specific health check; rolled back.'],
  ['MCU_CONFIRM_FAILED', 'mcu', mcu.flash, 0x107, 'The MCU did not confirm the new image; rolled back.'],
  // content cache
  ['CACHE_UPSTREAM_UNREACHABLE', 'contentCache', cache.cache, 0x001, 'Neither the parent cache nor the origin could be reached.'],
  ['CACHE_CONTENT_MISMATCH', 'contentCache', cache.cache, 0x002, 'Cached content does not match its content address.'],
  ['CACHE_STORAGE_FULL', 'contentCache', cache.cache, 0x003, 'The cache has no room for the artifact.'],
  ['CACHE_MISS_OFFLINE', 'contentCache', cache.cache, 0x004, 'The artifact is not cached and the gateway is offline.'],
  // bundle
  ['BUNDLE_MALFORMED', 'bundle', bundle.container, 0x001, 'The bundle is not a well-formed tar archive.'],
  ['BUNDLE_TRUNCATED', 'bundle', bundle.container, 0x002, 'The bundle ends before its end-of-archive marker.'],
  ['BUNDLE_TRAILING_DATA', 'bundle', bundle.container, 0x003, 'Non-zero data follows the end-of-archive marker.'],
  ['BUNDLE_ENTRY_TYPE_REFUSED', 'bundle', bundle.container, 0x004, 'An entry is a link, directory or device rather than a regular file.'],
  ['BUNDLE_PATH_REFUSED', 'bundle', bundle.container, 0x005, 'An entry path is absolute, climbs out (..) or is not one the manifest names.'],
  ['BUNDLE_DUPLICATE_ENTRY', 'bundle', bundle.container, 0x006, 'An entry name appears twice.'],
  ['BUNDLE_ORDER_INVALID', 'bundle', bundle.container, 0x007, 'The manifest and signature must come before any payload file.'],
  ['BUNDLE_SIZE_MISMATCH', 'bundle', bundle.content, 0x001, 'An entry size disagrees with the signed sizeInBytes.'],
  ['BUNDLE_HASH_MISMATCH', 'bundle', bundle.content, 0x002, 'An entry does not match its signed sha256.'],
  ['BUNDLE_FILE_MISSING', 'bundle', bundle.content, 0x003, 'A file the manifest declares is not in the bundle.'],
  ['BUNDLE_TOO_LARGE', 'bundle', bundle.content, 0x004, 'A metadata entry exceeds its size limit.'],
  // tooling
  ['USAGE_ERROR', 'tooling', tooling.cli, 0x001, 'The command line is incomplete or contradictory.'],
  ['KEY_FILE_INVALID', 'tooling', tooling.keys, 0x001, 'A key file is unreadable or not the kind the command needs.'],
  ['IO_ERROR', 'tooling', tooling.cli, 0x002, 'A file could not be read or written.'],
] as const satisfies readonly Row[];

export type ResultCodeName = (typeof successes)[number][0] | (typeof failures)[number][0];

function buildTable(): Record<ResultCodeName, ResultCodeDefinition> {
  const table = {} as Record<ResultCodeName, ResultCodeDefinition>;
  for (const [name, resultCode, meaning] of successes) {
    table[name] = { name, resultCode, facility: null, component: 0, code: 0, extendedResultCode: 0, meaning };
  }
  for (const [name, facility, component, code, meaning] of failures) {
    const extendedResultCode = makeExtendedResultCode(facilities[facility], component, code);
    table[name] = { name, resultCode: RESULT_FAILURE, facility, component, code, extendedResultCode, meaning };
  }
  return table;
}

/** Every result code by name. Use `resultCodes.MANIFEST_EXPIRED.extendedResultCode` on the wire. */
export const resultCodes: Readonly<Record<ResultCodeName, ResultCodeDefinition>> = Object.freeze(buildTable());


/** Looks a failure up by the number a device reported. */
export function describeExtendedResultCode(erc: number): ResultCodeDefinition | undefined {
  return Object.values(resultCodes).find((entry) => entry.extendedResultCode === erc && erc !== 0);
}

/** Rows for status views and docs, sorted by extended code. */
export function resultCodeTable(): ResultCodeDefinition[] {
  return Object.values(resultCodes).sort((a, b) => a.extendedResultCode - b.extendedResultCode || a.resultCode - b.resultCode);
}

/** The table as a Markdown page (docs/result-codes.md is this output; a test keeps them equal). */
export function resultCodeMarkdown(): string {
  const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;
  const rows = resultCodeTable().map(
    (r) => `| ${r.name} | ${r.resultCode} | ${r.extendedResultCode === 0 ? '-' : hex(r.extendedResultCode)} | ${r.extendedResultCode === 0 ? '-' : `${r.facility} / 0x${r.component.toString(16).padStart(2, '0')} / 0x${r.code.toString(16).padStart(3, '0')}`} | ${r.meaning} |`,
  );
  return [
    '# Result codes',
    '',
    'Generated from `src/resultCodes.ts` (`resultCodeMarkdown()`); do not edit by hand.',
    '',
    "Layout as in Azure Device Update: `resultCode` 0 is failure, 1 success, 5xx/6xx/7xx specific successes;",
    '`extendedResultCode` = facility (4 bits) | component (8 bits) | code (20 bits).',
    '',
    `Facilities: ${Object.entries(facilities).map(([name, value]) => `${name} = 0x${value.toString(16)}`).join(', ')}.`,
    '',
    '| name | resultCode | extendedResultCode | facility / component / code | meaning |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
