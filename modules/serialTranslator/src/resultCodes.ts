// Result codes of the serial translator until the shared table in modules/common takes them over. The layout
// is the shared one (ADU's extendedResultCode): facility (4 bits) | component (8 bits) | code (20 bits), with
// facility 0x5 (mcu) and its components transport 0x01, smp 0x02, image 0x03; 0x04 (flash: after the reset)
// is proposed here. Codes start at 0x101 so they cannot collide with the entries common already has.

const MCU = 0x5;
const component = { transport: 0x01, smp: 0x02, image: 0x03, flash: 0x04 } as const;
const erc = (c: number, code: number): number => ((MCU << 28) | (c << 20) | code) >>> 0;

export const SERIAL_RESULT_CODES = {
  // Refused before anything was sent: the MCU was not touched.
  'image-truncated': erc(component.image, 0x101),
  'image-bad-magic': erc(component.image, 0x102),
  'image-bad-header': erc(component.image, 0x103),
  'image-bad-tlv': erc(component.image, 0x104),
  'image-no-hash': erc(component.image, 0x105),
  'image-hash-mismatch': erc(component.image, 0x106),
  'image-no-signature': erc(component.image, 0x107),
  'image-key-mismatch': erc(component.image, 0x108),
  'image-bad-signature': erc(component.image, 0x109),
  'image-unsupported-key': erc(component.image, 0x10a),
  'image-too-large': erc(component.image, 0x10b),
  'image-version-mismatch': erc(component.image, 0x10c),
  // Failed before the reset: the MCU still runs its old image unchanged.
  'device-unreachable': erc(component.transport, 0x101),
  'device-error': erc(component.smp, 0x101),
  'upload-failed': erc(component.smp, 0x102),
  'test-mark-failed': erc(component.smp, 0x103),
  // After the reset: rolled back (MCUboot reverted to the previous image).
  'reconnect-timeout': erc(component.flash, 0x101),
  'new-image-not-active': erc(component.flash, 0x102),
  'new-image-wrong-version': erc(component.flash, 0x103),
  'new-image-already-confirmed': erc(component.flash, 0x104),
  'health-echo-failed': erc(component.flash, 0x105),
  'health-app-failed': erc(component.flash, 0x106),
  'confirm-failed': erc(component.flash, 0x107),
} as const;

export type SerialResultCode = keyof typeof SERIAL_RESULT_CODES;
