// IoT Hub's error vocabulary: an HTTP status plus a named error code. The REST body uses IoT Hub's own
// `{"Message":"ErrorCode:<code>;<text>"}` shape, which the Azure SDKs parse into typed errors.

export type HubErrorCode =
  | 'ArgumentInvalid'
  | 'ArgumentNull'
  | 'IotHubUnauthorizedAccess'
  | 'IotHubUnauthorized'
  | 'DeviceNotFound'
  | 'ModuleNotFound'
  | 'DeviceAlreadyExists'
  | 'ModuleAlreadyExistsOnDevice'
  | 'DeviceNotOnline'
  | 'PreconditionFailed'
  | 'MessageTooLarge'
  | 'RequestEntityTooLarge'
  | 'GatewayTimeout'
  | 'DeviceInvalidResultCount'
  | 'InvalidProtocolVersion'
  | 'NotFound'
  | 'MethodNotAllowed'
  | 'ServerError';

// IoT Hub's six-digit codes (status * 1000 + n) as they appear in MQTT twin responses and error bodies.
const numericCodes: Record<HubErrorCode, number> = {
  ArgumentInvalid: 400004,
  ArgumentNull: 400005,
  InvalidProtocolVersion: 400001,
  IotHubUnauthorizedAccess: 401002,
  IotHubUnauthorized: 401001,
  DeviceNotFound: 404001,
  ModuleNotFound: 404010,
  DeviceNotOnline: 404103,
  NotFound: 404000,
  MethodNotAllowed: 405000,
  DeviceAlreadyExists: 409001,
  ModuleAlreadyExistsOnDevice: 409301,
  PreconditionFailed: 412002,
  MessageTooLarge: 413001,
  RequestEntityTooLarge: 413002,
  DeviceInvalidResultCount: 400016,
  ServerError: 500001,
  GatewayTimeout: 504101,
};

export class HubError extends Error {
  readonly status: number;
  readonly code: HubErrorCode;

  constructor(status: number, code: HubErrorCode, message: string) {
    super(message);
    this.name = 'HubError';
    this.status = status;
    this.code = code;
  }

  get numericCode(): number {
    return numericCodes[this.code];
  }

  /** The REST error body, as IoT Hub sends it. */
  toRestBody(): string {
    return JSON.stringify({
      Message: `ErrorCode:${this.code};${this.message}`,
      ExceptionMessage: `Tracking ID:emulator-${Date.now().toString(36)} ErrorCode:${this.code}`,
    });
  }

  /** The MQTT twin-response body; the device SDK treats any body with `errorCode` as a failure. */
  toMqttBody(): string {
    return JSON.stringify({ errorCode: this.numericCode, message: this.message });
  }
}

export const badRequest = (message: string): HubError => new HubError(400, 'ArgumentInvalid', message);
export const unauthorized = (message: string): HubError => new HubError(401, 'IotHubUnauthorizedAccess', message);
export const deviceNotFound = (deviceId: string): HubError =>
  new HubError(404, 'DeviceNotFound', `Device ${deviceId} not registered`);
export const moduleNotFound = (deviceId: string, moduleId: string): HubError =>
  new HubError(404, 'ModuleNotFound', `Module ${moduleId} on device ${deviceId} not registered`);
export const notOnline = (identity: string): HubError =>
  new HubError(404, 'DeviceNotOnline', `Timed out waiting for ${identity} to connect`);
export const tooLarge = (what: string, limit: number): HubError =>
  new HubError(413, 'RequestEntityTooLarge', `${what} exceeds the limit of ${limit} bytes`);
