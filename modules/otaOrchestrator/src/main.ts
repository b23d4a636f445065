import { stopOnSignals } from '@edge-ota/common';
import { spawn } from 'node:child_process';
import { startOrchestrator } from './app.ts';
import { configurationFromEnvironment } from './configuration.ts';
import { gatewayHandlers } from './handlerWiring.ts';
import { connectToEdgeHub } from './iotEdgeConnection.ts';
import type { Rebooter } from './updateEngine.ts';

// The otaOrchestrator IoT Edge module: configuration from the environment aziot-edged and the deployment give it,
// the edgeHub connection, and clean shutdown on SIGTERM.

const log = (line: string): void => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), module: 'otaOrchestrator', message: line })}\n`);
};

const { configuration, problems } = configurationFromEnvironment(process.env);
for (const problem of problems) log(`configuration: ${problem.setting} ${problem.message}`);

// `exit-process` ends the module so the runtime restarts it: the state dir (a volume) makes that a "reboot" for
// the engine. A real gateway sets a command (e.g. `systemctl reboot` through a privileged helper).
const rebooter: Rebooter = {
  reboot(reason) {
    log(`reboot requested: ${reason}`);
    if (configuration.rebootCommand === 'exit-process') {
      setTimeout(() => process.exit(0), 100);
      return Promise.resolve();
    }
    const [command, ...args] = configuration.rebootCommand.split(' ').filter(Boolean);
    return new Promise((resolve) => {
      const child = spawn(command ?? 'reboot', args, { stdio: 'inherit' });
      child.on('error', (error) => {
        log(`reboot command failed: ${error.message}`);
        resolve();
      });
      child.on('exit', () => resolve());
    });
  },
};

const gateway = gatewayHandlers(configuration, process.env, log);
await gateway.start();
const connection = await connectToEdgeHub(log);
const orchestrator = startOrchestrator({ connection, configuration, configurationProblems: problems, rebooter, handlers: gateway.handlers, log });
log(`otaOrchestrator ready on ${connection.deviceId} (state ${configuration.stateDir})`);

stopOnSignals({
  log,
  stop: async () => {
    await orchestrator.stop();
    await gateway.stop();
    await connection.close();
  },
});
