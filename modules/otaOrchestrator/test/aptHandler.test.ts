import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AptHandler } from '../src/handlers/aptHandler.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { FakeApt } from './support/fakeApt.ts';
import { createFakeApt } from './support/fakeApt.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';

// microsoft/apt:1 through the real engine, with fake apt-get and dpkg-query that record their argv and keep their
// "dpkg database" in a file: real jobs, real processes, nothing on the machine changes.

describe('apt handler', () => {
  let publisher: Publisher;
  let server: ArtifactServer;
  let harness: EngineHarness | undefined;
  let apt: FakeApt;
  beforeAll(async () => {
    publisher = createPublisher();
    server = await startArtifactServer();
  });
  afterAll(async () => {
    await server.close();
  });
  beforeEach(() => {
    apt = createFakeApt(mkdtempSync(path.join(tmpdir(), 'apt-')));
  });
  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  const run = async (version: string, packages: Array<{ name: string; version?: string }>) => {
    const manifest = Buffer.from(JSON.stringify({ name: 'contoso-tools', version, packages }));
    const fileName = `contoso-tools-${version}.json`;
    server.put(fileName, manifest);
    harness = startEngine(publisher, { extraHandlers: [new AptHandler({ binDir: apt.binDir })] });
    const delivery = publisher.deliver({
      version,
      name: 'ContosoTools',
      files: { [fileName]: manifest },
      steps: [{ handler: 'microsoft/apt:1', files: [fileName], handlerProperties: { installedCriteria: `contoso-tools-${version}` } }],
    }, { baseUrl: server.baseUrl });
    expect(harness.engine.submit(delivery, 'method')).toMatchObject({ accepted: true });
    await harness.engine.idle();
    return harness.feedback(delivery.workflow.id);
  };
  const aptCalls = () => apt.calls().filter((c) => c.startsWith('apt-get'));

  it('dry-runs, then installs the pinned versions after apt-get update and reports the manifest version', async () => {
    apt.offer('foo=1.0', 'foo=1.1', 'bar=2.0');
    apt.setInstalled('foo=1.0');
    const feedback = await run('1.1.0', [{ name: 'foo', version: '1.1' }, { name: 'bar', version: '2.0' }]);
    expect(steps(feedback).at(-1)).toBe('job:succeeded');
    expect(feedback.at(-1)).toMatchObject({ installedVersion: '1.1.0' });
    expect(apt.installed()).toEqual({ foo: '1.1', bar: '2.0' });
    const options = '-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold';
    expect(aptCalls()).toEqual([
      'apt-get update',
      'apt-get install --dry-run -y --allow-downgrades foo=1.1 bar=2.0',
      'apt-get update',
      `apt-get install -y --allow-downgrades ${options} foo=1.1 bar=2.0`,
    ]);
    expect(apt.calls()).toContain('dpkg-query -W -f ${db:Status-Status}\t${Version} bar');
  });

  it('fails an unknown package in the dry run, before anything is installed', async () => {
    apt.offer('foo=1.1');
    apt.setInstalled('foo=1.0');
    const feedback = await run('2.0.0', [{ name: 'foo', version: '1.1' }, { name: 'no-such-package', version: '9' }]);
    expect(steps(feedback).slice(-3)).toEqual(['validate:started', 'validate:failed', 'job:failed']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: apt-get dry run refused contoso-tools 2\.0\.0 \(exit code 100\): E: Unable to locate package no-such-package/);
    expect(aptCalls().filter((c) => c.startsWith('apt-get install') && !c.includes('--dry-run'))).toEqual([]);
    expect(apt.installed()).toEqual({ foo: '1.0' });
  });

  it('rolls back to the versions recorded before install when dpkg fails half way', async () => {
    apt.offer('foo=1.0', 'foo=1.1', 'bar=2.0', 'baz=3.0');
    apt.setInstalled('foo=1.0', 'bar=1.9');
    apt.failOn('bar');
    const feedback = await run('3.0.0', [{ name: 'foo', version: '1.1' }, { name: 'baz', version: '3.0' }, { name: 'bar', version: '2.0' }]);
    expect(steps(feedback).slice(-5)).toEqual(['install:started', 'install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: apt-get install contoso-tools 3\.0\.0 ended with exit code 100: .*corrupted filesystem tarfile/);
    // foo and baz went in before bar broke: foo goes back to 1.0, baz (new) goes away, bar never changed.
    expect(apt.installed()).toEqual({ foo: '1.0', bar: '1.9' });
    expect(aptCalls().slice(-2)).toEqual([
      'apt-get install -y --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold foo=1.0',
      'apt-get remove -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold baz',
    ]);
  });

  it('reports ROLLBACK_FAILED when the previous version can no longer be installed', async () => {
    apt.offer('foo=1.1', 'bar=2.0');
    apt.setInstalled('foo=0.9');
    apt.failOn('bar');
    const feedback = await run('4.0.0', [{ name: 'foo', version: '1.1' }, { name: 'bar', version: '2.0' }]);
    expect(steps(feedback).slice(-3)).toEqual(['rollback:started', 'rollback:failed', 'job:failed']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^ROLLBACK_FAILED: could not reinstall the previous versions foo=0\.9 \(exit code 100\): E: Version '0\.9' for 'foo' was not found/);
    expect(apt.installed()).toEqual({ foo: '1.1' });
  });

  it('skips install when dpkg already has every pinned version', async () => {
    apt.offer('foo=1.1');
    apt.setInstalled('foo=1.1');
    const feedback = await run('5.0.0', [{ name: 'foo', version: '1.1' }]);
    expect(steps(feedback).at(-1)).toBe('job:succeeded');
    expect(aptCalls().filter((c) => c.startsWith('apt-get install') && !c.includes('--dry-run'))).toEqual([]);
  });

  it('refuses a package name that could smuggle an option into apt-get', async () => {
    apt.offer('foo=1.1');
    const feedback = await run('6.0.0', [{ name: '-oAPT::Get::foo=1', version: '1' }]);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: APT manifest: packages\[0\]\.name is not a Debian package name/);
    expect(aptCalls()).toEqual([]);
  });
});
