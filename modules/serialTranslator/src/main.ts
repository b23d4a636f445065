import { startSerialTranslator } from './app.ts';
import { settingsFromEnvironment } from './configuration.ts';
import { connectToEdgeHub } from './iotEdgeConnection.ts';

// The serialTranslator IoT Edge module: settings from the environment aziot-edged and the deployment give it,
// MCUs from the module twin, the edgeHub connection, and a clean stop on SIGTERM (an interrupted flash stays
// unfinished in the state dir and is resumed on the next start).

const log = (line: string): void => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), module: 'serialTranslator', message: line })}\n`);
};

const { settings, problems } = settingsFromEnvironment(process.env);
for (const problem of problems) log(`configuration: ${problem.setting} ${problem.message}`);

const connection = await connectToEdgeHub(log);
const translator = startSerialTranslator({ connection, configuration: settings, configurationProblems: problems, log });
await translator.ready;
log(`serialTranslator ready on ${connection.deviceId} (state ${settings.stateDir})`);

let stopping = false;
const stop = (signal: string): void => {
  if (stopping) return;
  stopping = true;
  log(`${signal}: stopping`);
  translator
    .stop()
    .then(() => connection.close())
    .then(
      () => process.exit(0),
      (error: unknown) => {
        log(`error while stopping: ${(error as Error).message}`);
        process.exit(1);
      },
    );
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
