import { resultCodes } from './resultCodes.ts';
import type { ResultCodeName } from './resultCodes.ts';

/**
 * The one error type @edge-ota/common throws for anything a caller may report: `code` is the stable name from the
 * result code table, `resultCode`/`extendedResultCode` are what goes on the wire, and the message names the field
 * (or chain link) and the rule that failed.
 */
export class OtaError extends Error {
  readonly code: ResultCodeName;
  readonly resultCode: number;
  readonly extendedResultCode: number;
  /** JSON pointer (or chain link name) of what failed, when there is one. */
  readonly field: string | undefined;

  constructor(code: ResultCodeName, message: string, options: { field?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OtaError';
    this.code = code;
    const entry = resultCodes[code];
    this.resultCode = entry.resultCode;
    this.extendedResultCode = entry.extendedResultCode;
    this.field = options.field;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      resultCode: this.resultCode,
      extendedResultCode: this.extendedResultCode,
      ...(this.field === undefined ? {} : { field: this.field }),
      message: this.message,
    };
  }
}

export function isOtaError(error: unknown, code?: ResultCodeName): error is OtaError {
  return error instanceof OtaError && (code === undefined || error.code === code);
}
