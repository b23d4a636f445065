import { describe, expect, it } from 'vitest';
import type { HubMessage } from '../src/hubMessage.ts';
import { RouteSyntaxError, parseRoute, routeMatches, routesFromEdgeHubDesired } from '../src/routes.ts';

const message = (overrides: Partial<HubMessage> = {}): HubMessage => ({
  body: Buffer.from('x'),
  properties: { kind: 'feedback', step: 'download', attempt: '3', ok: 'true' },
  connectionDeviceId: 'gw',
  connectionModuleId: 'otaOrchestrator',
  outputName: 'feedback',
  enqueuedTime: new Date(0).toISOString(),
  ...overrides,
});

describe('edgeHub routes', () => {
  it.each([
    ['FROM /messages/* INTO $upstream', true],
    ['FROM /messages/modules/* INTO $upstream', true],
    ['FROM /messages/modules/otaOrchestrator/* INTO $upstream', true],
    ['FROM /messages/modules/otaOrchestrator/outputs/* INTO $upstream', true],
    ['FROM /messages/modules/otaOrchestrator/outputs/feedback INTO $upstream', true],
    ['FROM /messages/modules/otaOrchestrator/outputs/other INTO $upstream', false],
    ['FROM /messages/modules/contentCache/* INTO $upstream', false],
    ["FROM /messages/* WHERE kind = 'feedback' INTO $upstream", true],
    ["FROM /messages/* WHERE kind = 'other' INTO $upstream", false],
    ["FROM /messages/* WHERE kind <> 'other' AND step != 'install' INTO $upstream", true],
    ["FROM /messages/* WHERE kind = 'other' OR (step = 'download' AND NOT ok = false) INTO $upstream", true],
    ['FROM /messages/* WHERE attempt >= 3 AND attempt < 4 INTO $upstream', true],
    ['FROM /messages/* WHERE missing = 1 INTO $upstream', false],
    ['FROM /messages/* WHERE NOT missing = 1 INTO $upstream', false],
    ['FROM /messages/* WHERE IS_DEFINED(step) INTO $upstream', true],
    ['FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream', false],
    ["FROM /messages/* WHERE $connectionDeviceId = 'gw' AND $outputName = 'feedback' INTO $upstream", true],
    ["FROM /messages/* WHERE kind = 'it''s' INTO $upstream", false],
  ])('%s -> %s', (text, expected) => {
    expect(routeMatches(parseRoute('r', text), message())).toBe(expected);
  });

  it('parses both sink forms', () => {
    expect(parseRoute('a', 'FROM /messages/* INTO $upstream').sink).toEqual({ kind: 'upstream' });
    expect(parseRoute('b', 'FROM /messages/* INTO BrokeredEndpoint("/modules/serialTranslator/inputs/jobs")').sink).toEqual({
      kind: 'moduleInput',
      moduleId: 'serialTranslator',
      inputName: 'jobs',
    });
  });

  it.each([
    'SELECT * FROM devices',
    'FROM messages/* INTO $upstream',
    'FROM /messages/modules/*/outputs/x INTO $upstream',
    'FROM /messages/* INTO $downstream',
    'FROM /messages/* INTO BrokeredEndpoint("/modules/x/outputs/y")',
    "FROM /messages/* WHERE kind = INTO $upstream",
    "FROM /messages/* WHERE (kind = 'a' INTO $upstream",
    'FROM /messages/* WHERE kind INTO $upstream',
    "FROM /messages/* WHERE kind = 'a' AND INTO $upstream",
  ])('rejects %s with a RouteSyntaxError naming the route', (text) => {
    expect(() => parseRoute('bad', text)).toThrow(RouteSyntaxError);
    expect(() => parseRoute('bad', text)).toThrow(/^route bad:/);
  });

  it('reads routes from edgeHub schema 1.0 strings and 1.1+ objects', () => {
    const routes = routesFromEdgeHubDesired({
      routes: { old: 'FROM /messages/* INTO $upstream', modern: { route: 'FROM /messages/modules/a/* INTO $upstream', priority: 1 } },
    });
    expect(routes.map((r) => r.name)).toEqual(['old', 'modern']);
    expect(routesFromEdgeHubDesired({})).toEqual([]);
    expect(() => routesFromEdgeHubDesired({ routes: { x: 42 } })).toThrow(/route x/);
    expect(() => routesFromEdgeHubDesired({ routes: ['FROM /messages/* INTO $upstream'] })).toThrow(/object of named routes/);
  });
});
