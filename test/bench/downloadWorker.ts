// Runs one real update job whose only step needs a downloaded file, in a process of its own so its peak RSS is
// the engine's; prints the download step's duration (from the engine's own feedback timestamps) as JSON.
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { ArtifactDownloader } from '../../modules/otaOrchestrator/src/artifactDownloader.ts';
import { FaultInjection } from '../../modules/otaOrchestrator/src/faultInjection.ts';
import { HandlerRegistry, done } from '../../modules/otaOrchestrator/src/handlers/updateHandler.ts';
import type { PhaseOutcome, UpdateHandler } from '../../modules/otaOrchestrator/src/handlers/updateHandler.ts';
import { JobStore } from '../../modules/otaOrchestrator/src/jobStore.ts';
import { UpdateEngine } from '../../modules/otaOrchestrator/src/updateEngine.ts';
import { compatibleProperties, createPublisher } from '../../modules/otaOrchestrator/test/support/signedUpdates.ts';

const [url, sha256, size, workDir] = process.argv.slice(2);
if (!url || !sha256 || !size || !workDir) throw new Error('usage: downloadWorker <url> <sha256 base64> <size> <work dir>');

/** A step that needs its file downloaded and verified, and then does nothing with it. */
const keepFile: UpdateHandler = {
  ids: ['bench/keep-file:1'],
  needsLocalFiles: true,
  isInstalled: () => Promise.resolve(false),
  install: (): Promise<PhaseOutcome> => Promise.resolve(done()),
  apply: (): Promise<PhaseOutcome> => Promise.resolve(done()),
  rollback: (): Promise<PhaseOutcome> => Promise.resolve(done()),
};

const publisher = createPublisher();
const root = mkdtempSync(path.join(workDir, 'engine-'));
const store = new JobStore(path.join(root, 'jobs.sqlite'));
const engine = new UpdateEngine({
  store,
  trustStore: publisher.trustStore(),
  handlers: new HandlerRegistry([keepFile]),
  downloader: new ArtifactDownloader({ reserveBytes: 0 }),
  dataDir: path.join(root, 'data'),
  gatewayId: 'bench-gw',
  targetProperties: () => ({ properties: compatibleProperties }),
  artifactSources: (originUrl) => [{ url: originUrl }],
  rebooter: { reboot: () => Promise.resolve() },
  faults: new FaultInjection(undefined),
});
// The manifest needs the file's real hash and size, not bytes in memory: build it from a stand-in of the same
// length is not possible, so sign a manifest whose file entry is patched to the real sha256/size.
const delivery = publisher.deliverDeclared({ version: '1.0.0', fileName: 'big.bin', sha256, sizeInBytes: Number(size), handler: 'bench/keep-file:1' }, url);
engine.start();
const started = process.hrtime.bigint();
const reply = engine.submit(delivery, 'method');
if (!reply.accepted) throw new Error(`job refused: ${reply.resultDetails ?? ''}`);
await engine.idle();
const totalSeconds = Number(process.hrtime.bigint() - started) / 1e9;
const feedback = store.pendingFeedback(1000).map((e) => e.message);
const at = (step: string, status: string): number => Date.parse(feedback.find((m) => m.step === step && m.status === status)?.timestamp ?? '');
const last = feedback.at(-1);
if (last?.status !== 'succeeded') throw new Error(`job ended ${last?.status ?? '?'}: ${last?.resultDetails ?? ''}`);
const downloadSeconds = (at('download', 'succeeded') - at('download', 'started')) / 1000;
process.stdout.write(`${JSON.stringify({ downloadSeconds, totalSeconds, maxRssMb: process.resourceUsage().maxRSS / 1024 })}\n`);
await engine.stop();
store.close();
