import type { EmulatorFixture } from './emulatorFixture.ts';

/** Applies an IoT Edge deployment (edgeAgent 1.1, edgeHub 1.2) with the given modules and routes, as `az iot edge set-modules` would. */
export async function deployModules(hub: EmulatorFixture, deviceId: string, moduleIds: string[], routes: Record<string, string>): Promise<Record<string, string>> {
  const modules: Record<string, unknown> = {};
  for (const moduleId of moduleIds) {
    modules[moduleId] = {
      version: '1.0',
      type: 'docker',
      status: 'running',
      restartPolicy: 'always',
      settings: { image: `example.azurecr.io/${moduleId.toLowerCase()}:1.0`, createOptions: '{}' },
    };
  }
  await hub.registry.applyConfigurationContentOnDevice(deviceId, {
    modulesContent: {
      $edgeAgent: {
        'properties.desired': {
          schemaVersion: '1.1',
          runtime: { type: 'docker', settings: { minDockerVersion: 'v1.25' } },
          systemModules: {
            edgeAgent: { type: 'docker', settings: { image: 'mcr.microsoft.com/azureiotedge-agent:1.5', createOptions: '{}' } },
            edgeHub: { type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'mcr.microsoft.com/azureiotedge-hub:1.5', createOptions: '{}' } },
          },
          modules,
        },
      },
      $edgeHub: {
        'properties.desired': {
          schemaVersion: '1.2',
          routes: Object.fromEntries(Object.entries(routes).map(([name, route]) => [name, { route, priority: 0, timeToLiveSecs: 7200 }])),
          storeAndForwardConfiguration: { timeToLiveSecs: 7200 },
        },
      },
    },
  });
  const generations: Record<string, string> = {};
  for (const moduleId of moduleIds) {
    generations[moduleId] = (await hub.registry.getModule(deviceId, moduleId)).responseBody.generationId ?? '';
  }
  return generations;
}
