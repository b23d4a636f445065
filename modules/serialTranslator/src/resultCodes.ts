import { resultCodes } from '@edge-ota/common';
import type { ResultCodeName } from '@edge-ota/common';

// The flash flow's own names for what went wrong, each mapped onto the shared table in modules/common, so the
// extendedResultCode a translator puts on the wire is the number the orchestrator and the dispatcher look up.

const SHARED_NAMES = {
  // Refused before anything was sent: the MCU was not touched.
  'image-truncated': 'MCU_IMAGE_TRUNCATED',
  'image-bad-magic': 'MCU_IMAGE_BAD_MAGIC',
  'image-bad-header': 'MCU_IMAGE_BAD_HEADER',
  'image-bad-tlv': 'MCU_IMAGE_BAD_TLV',
  'image-no-hash': 'MCU_IMAGE_NO_HASH',
  'image-hash-mismatch': 'MCU_IMAGE_HASH_MISMATCH',
  'image-no-signature': 'MCU_IMAGE_NO_SIGNATURE',
  'image-key-mismatch': 'MCU_IMAGE_KEY_MISMATCH',
  'image-bad-signature': 'MCU_IMAGE_BAD_SIGNATURE',
  'image-unsupported-key': 'MCU_IMAGE_UNSUPPORTED_KEY',
  'image-too-large': 'MCU_IMAGE_TOO_LARGE',
  'image-version-mismatch': 'MCU_IMAGE_VERSION_MISMATCH',
  // Failed before the reset: the MCU still runs its old image unchanged.
  'device-unreachable': 'MCU_UNREACHABLE',
  'device-error': 'MCU_DEVICE_ERROR',
  'upload-failed': 'MCU_UPLOAD_FAILED',
  'test-mark-failed': 'MCU_TEST_MARK_FAILED',
  // After the reset: rolled back (MCUboot reverted to the previous image).
  'reconnect-timeout': 'MCU_RECONNECT_TIMEOUT',
  'new-image-not-active': 'MCU_NEW_IMAGE_NOT_ACTIVE',
  'new-image-wrong-version': 'MCU_NEW_IMAGE_WRONG_VERSION',
  'new-image-already-confirmed': 'MCU_NEW_IMAGE_ALREADY_CONFIRMED',
  'health-echo-failed': 'MCU_HEALTH_ECHO_FAILED',
  'health-app-failed': 'MCU_HEALTH_APP_FAILED',
  'confirm-failed': 'MCU_CONFIRM_FAILED',
} as const satisfies Record<string, ResultCodeName>;

export type SerialResultCode = keyof typeof SHARED_NAMES;

/** The shared table's name for a flash flow code. */
export function sharedResultCodeName(code: SerialResultCode): ResultCodeName {
  return SHARED_NAMES[code];
}

export const SERIAL_RESULT_CODES = Object.fromEntries(
  Object.entries(SHARED_NAMES).map(([code, name]) => [code, resultCodes[name].extendedResultCode]),
) as Record<SerialResultCode, number>;
