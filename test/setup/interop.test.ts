import { describe, expect, it } from 'vitest';

// Node gives the Azure SDKs (CommonJS) almost no named exports; the tests must see the module the same way,
// or a named import that passes here would crash in production.
describe('CommonJS interop matches Node', () => {
  it('exposes ModuleClient and Registry only through the default export', async () => {
    const device = (await import('azure-iot-device')) as Record<string, unknown> & { default: Record<string, unknown> };
    const service = (await import('azure-iothub')) as Record<string, unknown> & { default: Record<string, unknown> };
    expect(device.ModuleClient).toBeUndefined();
    expect(typeof device.default.ModuleClient).toBe('function');
    expect(service.Registry).toBeUndefined();
    expect(typeof service.default.Registry).toBe('function');
  });
});
