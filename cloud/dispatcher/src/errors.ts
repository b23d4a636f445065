// One catalogue of the dispatcher's refusals: every 4xx the API or the webhook answers carries one of these
// stable codes, so clients and dashboards can branch on a name instead of parsing messages.

export const dispatcherErrors = {
  REQUEST_INVALID: { status: 400, message: 'the request does not match the API description' },
  BODY_NOT_JSON: { status: 400, message: 'the request body is not JSON' },
  BODY_TOO_LARGE: { status: 413, message: 'the request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'unsupported content type' },
  NOT_FOUND: { status: 404, message: 'no such route' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed on this route' },
  DEVICE_NOT_FOUND: { status: 404, message: 'no such device' },
  DEVICE_EXISTS: { status: 409, message: 'a device with this id exists already' },
  PARENT_NOT_FOUND: { status: 422, message: 'the parent gateway does not exist' },
  PARENT_NOT_GATEWAY: { status: 422, message: 'the parent is not an IoT Edge gateway' },
  UPDATE_NOT_FOUND: { status: 422, message: 'the assigned update is not in the catalog' },
  UPDATE_EXISTS: { status: 409, message: 'this update is in the catalog already' },
  UPDATE_INVALID: { status: 422, message: 'the import manifest, its files or the bundle were refused' },
  UPDATE_FILE_MISSING: { status: 422, message: 'a file the import manifest declares was not supplied' },
  UPDATE_CHILD_MISSING: { status: 422, message: 'a reference step names an update that is neither in the catalog nor imported with it' },
  UPDATE_UNSUPPORTED: { status: 422, message: 'the update uses a feature the dispatcher cannot deliver yet' },
  GROUP_INVALID: { status: 400, message: 'group names are 1-64 characters of [A-Za-z0-9._-]' },
  ARTIFACT_URL_INVALID: { status: 403, message: 'the download URL is invalid or has expired' },
  ARTIFACT_NOT_FOUND: { status: 404, message: 'no such artifact' },
  EVENT_INVALID: { status: 400, message: 'the event is malformed' },
  HUB_UNAVAILABLE: { status: 503, message: 'IoT Hub did not answer' },
} as const;

export type DispatcherErrorCode = keyof typeof dispatcherErrors;

export class DispatcherError extends Error {
  readonly code: DispatcherErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: DispatcherErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? dispatcherErrors[code].message);
    this.name = 'DispatcherError';
    this.code = code;
    this.status = dispatcherErrors[code].status;
    this.details = details;
  }

  toJSON(): { error: { code: string; message: string; details?: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

export function isDispatcherError(error: unknown): error is DispatcherError {
  return error instanceof DispatcherError;
}
