import path from 'node:path';
import type { OrchestratorConfiguration } from './configuration.ts';
import { AbImageHandler } from './handlers/abImageHandler.ts';
import { AptHandler } from './handlers/aptHandler.ts';
import type { BootControl } from './handlers/bootControl.ts';
import { FileBootControl, GrubEnvBootControl, UbootEnvBootControl } from './handlers/bootControl.ts';
import { ProcessHandler } from './handlers/processHandler.ts';
import type { UpdateHandler } from './handlers/updateHandler.ts';
import { ProcessSupervisor } from './processSupervisor.ts';

// The handlers that depend on the gateway's hardware and OS, built from the module's environment:
//   apt:      OTA_APT_BIN_DIR (where apt-get/dpkg-query are; PATH otherwise)
//   A/B:      OTA_AB_SLOT_A, OTA_AB_SLOT_B (block devices or files), OTA_BOOT_CONTROL=file|grub|uboot,
//             OTA_BOOT_STATE_FILE (file), OTA_GRUBENV_FILE (grub), OTA_UBOOT_CONFIG (uboot), OTA_FACTORY_VERSION
//   process:  always on: apps under OTA_APPS_ROOT, supervised (state in the orchestrator's state dir)

export interface GatewayHandlers {
  handlers: UpdateHandler[];
  /** Runs before the engine starts: the simulated bootloader's power-on, the supervisor's restart of apps. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function gatewayHandlers(configuration: OrchestratorConfiguration, env: NodeJS.ProcessEnv, log: (line: string) => void): GatewayHandlers {
  const handlers: UpdateHandler[] = [new AptHandler(env.OTA_APT_BIN_DIR ? { binDir: env.OTA_APT_BIN_DIR } : {})];
  let fileBootControl: FileBootControl | undefined;
  if (env.OTA_AB_SLOT_A && env.OTA_AB_SLOT_B) {
    let bootControl: BootControl;
    switch (env.OTA_BOOT_CONTROL ?? 'file') {
      case 'grub':
        if (!env.OTA_GRUBENV_FILE) throw new Error('OTA_BOOT_CONTROL=grub needs OTA_GRUBENV_FILE');
        bootControl = new GrubEnvBootControl({ envFile: env.OTA_GRUBENV_FILE });
        break;
      case 'uboot':
        bootControl = new UbootEnvBootControl(env.OTA_UBOOT_CONFIG ? { configFile: env.OTA_UBOOT_CONFIG } : {});
        break;
      case 'file':
        fileBootControl = new FileBootControl(env.OTA_BOOT_STATE_FILE ?? path.join(configuration.stateDir, 'boot.json'));
        bootControl = fileBootControl;
        break;
      default:
        throw new Error(`OTA_BOOT_CONTROL must be file, grub or uboot, not ${env.OTA_BOOT_CONTROL ?? ''}`);
    }
    handlers.push(new AbImageHandler({
      slots: { A: env.OTA_AB_SLOT_A, B: env.OTA_AB_SLOT_B },
      bootControl,
      stateDir: configuration.stateDir,
      ...(env.OTA_FACTORY_VERSION ? { factoryVersion: env.OTA_FACTORY_VERSION } : {}),
    }));
  }
  const supervisor = new ProcessSupervisor({ stateFile: path.join(configuration.stateDir, 'apps.json'), logDir: path.join(configuration.stateDir, 'app-logs'), log });
  handlers.push(new ProcessHandler({ appsRoot: configuration.appsRoot, supervisor, allowedRoots: configuration.fileRoots }));
  return {
    handlers,
    async start() {
      // The file boot control plays the bootloader: this start-up is the power-on that picks the slot.
      if (fileBootControl) log(`booted slot ${await fileBootControl.boot()}`);
      await supervisor.start();
    },
    async stop() {
      await supervisor.stop();
    },
  };
}
