import type { McuDeviceConnection, TranslatorConnection } from './iotEdgeConnection.ts';

// Identity translation: the MCU's own IoT Hub device (a child of this gateway), connected through the gateway by
// the translator on the MCU's behalf. Its twin carries the classic firmware-update properties of the Azure
// firmware-update tutorial under reported `firmware`, and its desired `firmware` can start an update.

export type FwUpdateStatus = 'current' | 'downloading' | 'verifying' | 'applying' | 'rebooting' | 'error' | 'rolledback';

export interface FirmwareReport {
  currentFwVersion?: string;
  pendingFwVersion?: string;
  fwUpdateStatus?: FwUpdateStatus;
  fwUpdateSubstatus?: string;
  lastFwUpdateStartTime?: string;
  lastFwUpdateEndTime?: string;
}

export class McuIdentity {
  readonly mcuId: string;
  readonly connectionString: string;
  readonly #log: (line: string) => void;
  readonly #onDesired: (desired: Record<string, unknown>) => void;
  readonly #onConnected: (() => void) | undefined;
  #connection: McuDeviceConnection | undefined;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #firmware: FirmwareReport = {};
  #sending = false;
  #dirty = false;

  constructor(options: {
    mcuId: string;
    connectionString: string;
    edge: TranslatorConnection;
    log: (line: string) => void;
    onDesired: (desired: Record<string, unknown>) => void;
    /** Called when the identity connects, for the module's own reported state. */
    onConnected?: () => void;
    initial: FirmwareReport;
  }) {
    this.mcuId = options.mcuId;
    this.connectionString = options.connectionString;
    this.#log = options.log;
    this.#onDesired = options.onDesired;
    this.#onConnected = options.onConnected;
    this.#firmware = { ...options.initial };
    void this.#connect(options.edge, 500);
  }

  get connected(): boolean {
    return this.#connection !== undefined;
  }

  get firmware(): FirmwareReport {
    return { ...this.#firmware };
  }

  /** Merges into the reported `firmware` and sends it; the whole object goes each time, so a lost patch heals. */
  update(patch: FirmwareReport): void {
    this.#firmware = { ...this.#firmware, ...patch };
    this.#dirty = true;
    void this.#flush();
  }

  async #flush(): Promise<void> {
    if (this.#sending || !this.#connection) return;
    this.#sending = true;
    try {
      while (this.#dirty && this.#connection && !this.#closed) {
        this.#dirty = false;
        const firmware = { ...this.#firmware };
        try {
          await this.#connection.reportProperties({ firmware });
        } catch (error) {
          this.#log(`MCU ${this.mcuId}: twin report failed (${(error as Error).message}); will send again`);
          this.#dirty = true;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    } finally {
      this.#sending = false;
    }
  }

  async #connect(edge: TranslatorConnection, delayMs: number): Promise<void> {
    if (this.#closed) return;
    try {
      const connection = await edge.openMcuDevice(this.connectionString);
      if (this.#closed) {
        await connection.close();
        return;
      }
      this.#connection = connection;
      this.#log(`MCU ${this.mcuId}: identity connected through the gateway`);
      connection.onDesired((desired) => this.#onDesired(desired));
      this.#onConnected?.();
      this.#dirty = true;
      void this.#flush();
    } catch (error) {
      this.#log(`MCU ${this.mcuId}: identity not connected (${(error as Error).message}); retrying`);
      this.#timer = setTimeout(() => void this.#connect(edge, Math.min(delayMs * 2, 30_000)), delayMs);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const connection = this.#connection;
    this.#connection = undefined;
    await connection?.close().catch(() => undefined);
  }
}
