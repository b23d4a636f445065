import type { DemoSummary } from './demoScenario.ts';
import { mib } from './liveFeed.ts';

// The demo's closing status table: devices with what they run, bytes per cache layer, and the checks.

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function renderSummary(summary: DemoSummary): string {
  const devices = table(
    ['device', 'role', 'parent', 'installed', 'jobs (update: state, origin)'],
    summary.devices.map((d) => [
      d.deviceId, d.role, d.parentId ?? '-', d.installedVersion ?? '-',
      d.jobs.map((j) => `${j.updateId}: ${j.state}${j.origin ? `, ${j.origin}` : ''}`).join('; ') || '-',
    ]),
  );
  const caches = table(
    ['cache layer', 'fetched from', 'bytes fetched', 'requests', 'bytes served', 'of them from store'],
    Object.entries(summary.caches).map(([gateway, c]) => [`${gateway} contentCache`, c.upstream, mib(c.upstreamBytes), String(c.upstreamRequests), mib(c.servedBytes), mib(c.servedFromStoreBytes)]),
  );
  const store = table(
    ['artifact (cloud store)', 'bytes', 'requests', 'bytes sent'],
    summary.cloudStore.artifacts.map((a) => [a.file, mib(a.bytes), String(a.requests), mib(a.bytesSent)]),
  );
  const apps = Object.entries(summary.gatewayApps).map(([gateway, a]) => `${gateway}: ${a.running ? `running (pid ${a.pid ?? '-'})` : 'NOT running'}`).join(', ');
  const checks = summary.checks.map((c) => `  [${c.ok ? ' ok ' : 'FAIL'}] ${c.name}: ${c.details}`).join('\n');
  return [
    '',
    '== status',
    devices,
    '',
    caches,
    '',
    store,
    '',
    `gateway application: ${apps}`,
    `MCU ${summary.mcu.deviceId} reports: ${JSON.stringify(summary.mcu.reportedFirmware)}`,
    '',
    checks,
    '',
    `${summary.ok ? 'demo passed' : 'demo FAILED'} in ${summary.durationSeconds} s`,
  ].join('\n');
}
