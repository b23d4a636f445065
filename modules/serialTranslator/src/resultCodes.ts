// Result codes of the serial translator until the shared table in modules/common takes them over. The numbers
// follow ADU's extendedResultCode layout: facility in the top nibble, component in the next, code below.
// Facility 0x5 and component 0x3 are this module's provisional slot; they move when the shared table lands.

const BASE = 0x53000000;

export const SERIAL_RESULT_CODES = {
  // Refused before anything was sent: the MCU was not touched.
  'image-truncated': BASE + 0x0101,
  'image-bad-magic': BASE + 0x0102,
  'image-bad-header': BASE + 0x0103,
  'image-bad-tlv': BASE + 0x0104,
  'image-no-hash': BASE + 0x0105,
  'image-hash-mismatch': BASE + 0x0106,
  'image-no-signature': BASE + 0x0107,
  'image-key-mismatch': BASE + 0x0108,
  'image-bad-signature': BASE + 0x0109,
  'image-unsupported-key': BASE + 0x010a,
  'image-too-large': BASE + 0x010b,
  'image-version-mismatch': BASE + 0x010c,
  // Failed before the reset: the MCU still runs its old image unchanged.
  'device-unreachable': BASE + 0x0201,
  'device-error': BASE + 0x0202,
  'upload-failed': BASE + 0x0203,
  'test-mark-failed': BASE + 0x0204,
  // After the reset: rolled back (MCUboot reverted to the previous image).
  'reconnect-timeout': BASE + 0x0301,
  'new-image-not-active': BASE + 0x0302,
  'new-image-wrong-version': BASE + 0x0303,
  'new-image-already-confirmed': BASE + 0x0304,
  'health-echo-failed': BASE + 0x0305,
  'health-app-failed': BASE + 0x0306,
  'confirm-failed': BASE + 0x0307,
} as const;

export type SerialResultCode = keyof typeof SERIAL_RESULT_CODES;
