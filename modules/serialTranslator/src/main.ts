import { stopOnSignals } from '@edge-ota/common';
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

stopOnSignals({
  log,
  stop: async () => {
    await translator.stop();
    await connection.close();
  },
});
