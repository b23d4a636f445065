// mcumgr OS management group (0): echo, reset and the buffer parameters that size upload chunks.
import { SmpDeviceError, SmpTimeoutError } from './smpClient.ts';
import type { SmpClient } from './smpClient.ts';

export const OS_GROUP = 0;
export const OS_ECHO = 0;
export const OS_RESET = 5;
export const OS_MCUMGR_PARAMS = 6;

export interface McumgrParams {
  bufSize: number;
  bufCount: number;
  /** False when the device does not implement the params command and defaults were assumed. */
  reported: boolean;
}

/** mcumgr's own default when a device cannot tell: Zephyr's CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE. */
export const DEFAULT_BUF_SIZE = 384;

export async function echo(client: SmpClient, text: string, timeoutMs?: number, retries?: number): Promise<string> {
  const reply = await client.request({
    op: 'write',
    group: OS_GROUP,
    command: OS_ECHO,
    body: { d: text },
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(retries !== undefined ? { retries } : {}),
  });
  const r = reply.body.r;
  if (typeof r !== 'string') throw new Error('echo reply has no text');
  return r;
}

export async function readParams(client: SmpClient): Promise<McumgrParams> {
  try {
    const { body } = await client.request({ op: 'read', group: OS_GROUP, command: OS_MCUMGR_PARAMS });
    if (typeof body.buf_size === 'number' && typeof body.buf_count === 'number') {
      return { bufSize: body.buf_size, bufCount: body.buf_count, reported: true };
    }
  } catch (error) {
    // Older firmware answers ENOTSUP (8); anything else is a real failure.
    if (!(error instanceof SmpDeviceError && error.rc === 8)) throw error;
  }
  return { bufSize: DEFAULT_BUF_SIZE, bufCount: 1, reported: false };
}

/**
 * Asks the device to reset. Sent once, never retried: a retry would reach the freshly booted image and reset
 * it again. A lost reply is normal (the device may reset before it is out), so a timeout is not an error.
 */
export async function reset(client: SmpClient, timeoutMs = 1000): Promise<'acknowledged' | 'unacknowledged'> {
  try {
    await client.request({ op: 'write', group: OS_GROUP, command: OS_RESET, body: {}, retries: 0, timeoutMs });
    return 'acknowledged';
  } catch (error) {
    if (error instanceof SmpTimeoutError) return 'unacknowledged';
    throw error;
  }
}
