import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Ajv from 'ajv';
import { describe, expect, it } from 'vitest';
import { repositoryRoot } from '../../deployment/src/manifest.ts';
import { FactoryError, readTopology, validateTopology } from '../../deployment/src/factoryTopology.ts';

// The topology file: every refusal has a stable code and names the JSON path it is about, and the JSON schema in
// deployment/factory agrees with the checker on every case a schema can express.

const schemaFile = path.join(repositoryRoot, 'deployment', 'factory', 'topology.schema.json');
const exampleFile = path.join(repositoryRoot, 'deployment', 'factory', 'example.topology.json');
const validateSchema = new Ajv({ allErrors: true }).compile(JSON.parse(readFileSync(schemaFile, 'utf8')) as object);

const dir = mkdtempSync(path.join(tmpdir(), 'factory-topology-'));
writeFileSync(path.join(dir, 'first.otabundle'), 'bundle bytes');

function refusal(document: unknown): { code: string; path: string | undefined } {
  try {
    validateTopology(document, dir);
  } catch (error) {
    expect(error).toBeInstanceOf(FactoryError);
    return { code: (error as FactoryError).code, path: (error as FactoryError).path };
  }
  throw new Error('accepted');
}

const top = { id: 'plant-top', layer: 0 };
const line = { id: 'line-1', layer: 1, parent: 'plant-top' };

describe('topology file', () => {
  it('accepts the example, orders parents first and fills host names', () => {
    expect(validateSchema(JSON.parse(readFileSync(exampleFile, 'utf8')))).toBe(true);
    const topology = readTopology(exampleFile);
    expect(topology.gateways.map((g) => [g.id, g.layer, g.parent, g.hostname])).toEqual([
      ['plant-top', 0, undefined, 'plant-top.factory.local'],
      ['line-1', 1, 'plant-top', 'line-1.factory.local'],
      ['line-1-cell-3', 2, 'line-1', 'cell3.line1.factory.local'],
    ]);
    expect(topology.gateways[1]!.mcus).toEqual([
      { id: 'line-1-mcu-a', port: '/dev/serial/by-id/usb-ZEPHYR_line-1-a-if00', firmware: 'contoso/mcu-fw@1.0.0' },
      { id: 'line-1-mcu-b', port: '/dev/ttyACM1', firmware: 'contoso/mcu-fw@1.0.0', baudRate: 115200 },
    ]);
  });

  it('sorts children after parents whatever the order in the file, and resolves the bundle against the file', () => {
    const topology = validateTopology({ gateways: [{ ...line, firstBootBundle: 'first.otabundle' }, top] }, dir);
    expect(topology.gateways.map((g) => g.id)).toEqual(['plant-top', 'line-1']);
    expect(topology.gateways[1]!.firstBootBundle).toBe(path.join(dir, 'first.otabundle'));
  });

  // [case, document, code, path]; `schema` says whether the JSON schema can see the problem too.
  const cases: Array<[string, unknown, string, string, boolean]> = [
    ['not an object', [], 'TOPOLOGY_TYPE', '', true],
    ['no gateways key', {}, 'TOPOLOGY_MISSING_KEY', '/gateways', true],
    ['empty gateways', { gateways: [] }, 'TOPOLOGY_NO_GATEWAYS', '/gateways', true],
    ['unknown top-level key', { gateways: [top], gatways: [] }, 'TOPOLOGY_UNKNOWN_KEY', '/gatways', true],
    ['unknown gateway key', { gateways: [{ ...top, parnet: 'x' }] }, 'TOPOLOGY_UNKNOWN_KEY', '/gateways/0/parnet', true],
    ['unknown MCU key', { gateways: [{ ...top, mcus: [{ id: 'm', port: '/dev/ttyACM0', fw: 'a/b@1.0' }] }] }, 'TOPOLOGY_UNKNOWN_KEY', '/gateways/0/mcus/0/fw', true],
    ['gateway without layer', { gateways: [{ id: 'g' }] }, 'TOPOLOGY_MISSING_KEY', '/gateways/0/layer', true],
    ['MCU without port', { gateways: [{ ...top, mcus: [{ id: 'm' }] }] }, 'TOPOLOGY_MISSING_KEY', '/gateways/0/mcus/0/port', true],
    ['id not valid for IoT Hub', { gateways: [{ id: 'plant top', layer: 0 }] }, 'TOPOLOGY_ID_INVALID', '/gateways/0/id', true],
    ['id too long', { gateways: [{ id: 'g'.repeat(129), layer: 0 }] }, 'TOPOLOGY_ID_INVALID', '/gateways/0/id', true],
    ['id not a string', { gateways: [{ id: 7, layer: 0 }] }, 'TOPOLOGY_TYPE', '/gateways/0/id', true],
    ['layer negative', { gateways: [{ id: 'g', layer: -1 }] }, 'TOPOLOGY_LAYER_INVALID', '/gateways/0/layer', true],
    ['layer not an integer', { gateways: [{ id: 'g', layer: 0.5 }] }, 'TOPOLOGY_LAYER_INVALID', '/gateways/0/layer', true],
    ['duplicate gateway id', { gateways: [top, { ...top }] }, 'TOPOLOGY_DUPLICATE_ID', '/gateways/1/id', false],
    ['MCU id equal to a gateway id', { gateways: [{ ...top, mcus: [{ id: 'plant-top', port: '/dev/ttyACM0' }] }] }, 'TOPOLOGY_DUPLICATE_ID', '/gateways/0/mcus/0/id', false],
    ['duplicate port on one gateway', { gateways: [{ ...top, mcus: [{ id: 'a', port: '/dev/ttyACM0' }, { id: 'b', port: '/dev/ttyACM0' }] }] }, 'TOPOLOGY_DUPLICATE_PORT', '/gateways/0/mcus/1/port', false],
    ['port not a serial port', { gateways: [{ ...top, mcus: [{ id: 'a', port: 'COM3' }] }] }, 'TOPOLOGY_PORT_INVALID', '/gateways/0/mcus/0/port', true],
    ['unknown parent', { gateways: [top, { ...line, parent: 'plant-tpo' }] }, 'TOPOLOGY_PARENT_UNKNOWN', '/gateways/1/parent', false],
    ['an MCU as parent', { gateways: [{ ...top, mcus: [{ id: 'm', port: '/dev/ttyACM0' }] }, { ...line, parent: 'm' }] }, 'TOPOLOGY_PARENT_UNKNOWN', '/gateways/1/parent', false],
    ['parent two layers up', { gateways: [top, line, { id: 'cell', layer: 2, parent: 'plant-top' }] }, 'TOPOLOGY_PARENT_LAYER', '/gateways/2/parent', false],
    ['parent in the same layer', { gateways: [top, { id: 'other', layer: 1, parent: 'plant-top' }, { ...line, parent: 'other' }] }, 'TOPOLOGY_PARENT_LAYER', '/gateways/2/parent', false],
    ['child without parent', { gateways: [top, { id: 'line-1', layer: 1 }] }, 'TOPOLOGY_PARENT_MISSING', '/gateways/1/parent', true],
    ['top layer with parent', { gateways: [{ id: 'a', layer: 0, parent: 'b' }, { id: 'b', layer: 0 }] }, 'TOPOLOGY_PARENT_NOT_ALLOWED', '/gateways/0/parent', true],
    ['own parent', { gateways: [top, { id: 'loop', layer: 1, parent: 'loop' }] }, 'TOPOLOGY_CYCLE', '/gateways/1/parent', false],
    ['two gateways that are each other\'s parent', { gateways: [{ id: 'a', layer: 1, parent: 'b' }, { id: 'b', layer: 1, parent: 'a' }] }, 'TOPOLOGY_PARENT_LAYER', '/gateways/0/parent', false],
    ['software not provider/name@version', { gateways: [{ ...top, software: 'gateway-app:1.0' }] }, 'TOPOLOGY_UPDATE_ID_INVALID', '/gateways/0/software', true],
    ['firmware not provider/name@version', { gateways: [{ ...top, mcus: [{ id: 'm', port: '/dev/ttyACM0', firmware: 'contoso/fw@latest' }] }] }, 'TOPOLOGY_UPDATE_ID_INVALID', '/gateways/0/mcus/0/firmware', true],
    ['host name with a space', { gateways: [{ ...top, hostname: 'plant top' }] }, 'TOPOLOGY_HOSTNAME_INVALID', '/gateways/0/hostname', false],
    ['id that is no host name and no hostname given', { gateways: [{ id: 'plant_top', layer: 0 }] }, 'TOPOLOGY_HOSTNAME_INVALID', '/gateways/0/id', false],
    ['missing first-boot bundle', { gateways: [{ ...top, firstBootBundle: 'missing.otabundle' }] }, 'TOPOLOGY_BUNDLE_NOT_FOUND', '/gateways/0/firstBootBundle', false],
    ['bad bundle hash', { gateways: [{ ...top, firstBootBundle: 'first.otabundle', firstBootBundleSha256: 'ABC' }] }, 'TOPOLOGY_SHA256_INVALID', '/gateways/0/firstBootBundleSha256', true],
    ['bundle hash without bundle', { gateways: [{ ...top, firstBootBundleSha256: 'a'.repeat(64) }] }, 'TOPOLOGY_MISSING_KEY', '/gateways/0/firstBootBundle', true],
  ];

  it.each(cases)('refuses %s', (_name, document, code, at, schemaSees) => {
    expect(refusal(document)).toEqual({ code, path: at });
    if (schemaSees) expect(validateSchema(document)).toBe(false);
  });

  it('names the file when it is missing or not JSON', () => {
    expect(() => readTopology(path.join(dir, 'nope.json'))).toThrow(expect.objectContaining({ code: 'TOPOLOGY_NOT_FOUND' }) as Error);
    writeFileSync(path.join(dir, 'broken.json'), '{ "gateways": [');
    expect(() => readTopology(path.join(dir, 'broken.json'))).toThrow(expect.objectContaining({ code: 'TOPOLOGY_NOT_JSON' }) as Error);
  });
});
