import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadOrCreateCertificateAuthority } from '../../cloud/hubEmulator/src/index.ts';
import { runDemo } from './demoScenario.ts';
import { renderSummary } from './demoSummary.ts';

// `npm run demo [-- --json] [--state-dir DIR] [--mcu auto|host|qemu] [--no-usb] [--verbose]`: the whole product on this machine (see
// demoScenario.ts). Prints the flow live and a status table; exits 0 only when every check of the summary passed.
// With --json the live lines go to stderr and stdout's last line is the summary as one JSON object.

const usage = 'usage: npm run demo -- [--json] [--state-dir DIR] [--mcu auto|host|qemu] [--no-usb] [--verbose]';
const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const defaultStateDir = path.join(repositoryRoot, '.state', 'demo');

let values;
try {
  values = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      'state-dir': { type: 'string', default: defaultStateDir },
      'no-usb': { type: 'boolean', default: false },
      mcu: { type: 'string', default: 'auto' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }).values;
} catch (error) {
  process.stderr.write(`demo: ${(error as Error).message}\n${usage}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
if (!['auto', 'host', 'qemu'].includes(values.mcu)) {
  process.stderr.write(`demo: --mcu ${values.mcu}: expected auto, host or qemu\n${usage}\n`);
  process.exit(2);
}
// The simulated MCU is the C firmware sample on a pseudo-terminal pair from socat: built for a Cortex-M3 board and
// run under QEMU when QEMU and the Arm toolchain are installed (auto), otherwise built for this machine.
const qemuTools = ['qemu-system-arm', 'arm-none-eabi-gcc'];
const mcu = values.mcu === 'auto' ? (qemuTools.every(has) ? 'qemu' : 'host') : values.mcu as 'host' | 'qemu';
const missing = ['socat', 'make', ...(mcu === 'qemu' ? qemuTools : ['gcc'])].filter((tool) => !has(tool));
if (missing.length > 0) {
  process.stderr.write(`demo: missing ${missing.join(', ')} (the simulated MCU needs them). Install them with\n`
    + `  sh deployment/prerequisites.sh ${mcu === 'qemu' ? 'test' : 'demo'}\n`);
  process.exit(3);
}

const stateDir = path.resolve(values['state-dir']);
const caDir = path.join(stateDir, 'ca');
const REEXEC = 'EDGE_OTA_DEMO_STAGE';
const STATE_MARKER = '.edge-ota-demo-state';

if (process.env[REEXEC] !== 'run') {
  // A fresh state for every run, then the demo again with Node trusting the emulator's CA: the Azure service SDK has
  // no CA option and Node reads NODE_EXTRA_CA_CERTS only when it starts.
  // Only the default folder, one the demo made (it leaves a marker) or an empty one is emptied: --state-dir ~ must not
  // wipe a home folder.
  const ours = stateDir === defaultStateDir || existsSync(path.join(stateDir, STATE_MARKER));
  if (!ours && existsSync(stateDir) && readdirSync(stateDir).length > 0) {
    process.stderr.write(`demo: ${stateDir} is not empty and is not a demo state folder; choose another --state-dir\n`);
    process.exit(2);
  }
  rmSync(stateDir, { recursive: true, force: true });
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(path.join(stateDir, STATE_MARKER), 'edge-ota demo state; emptied by the next `npm run demo`\n');
  const ca = await loadOrCreateCertificateAuthority(caDir);
  // DEP0123: the emulator is addressed by its loopback IP, which TLS clients then pass as a server name.
  const child = spawn(process.execPath, [...process.execArgv, '--disable-warning=DEP0123', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: ca.certFile, [REEXEC]: 'run' },
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal));
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  const live = values.json ? (line: string) => void process.stderr.write(`${line}\n`) : (line: string) => void process.stdout.write(`${line}\n`);
  const moduleLogFile = path.join(stateDir, 'modules.log');
  const moduleLog = values.verbose ? (line: string) => void process.stderr.write(`${line}\n`) : (line: string) => appendFileSync(moduleLogFile, `${line}\n`);
  live(`edge-ota demo: state in ${path.relative(process.cwd(), stateDir) || '.'}, module output in ${path.relative(process.cwd(), moduleLogFile)}`);
  const interrupt = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (interrupt.signal.aborted) return;
      live(`demo: ${signal}, stopping everything it started`);
      interrupt.abort();
      // runDemo stops every process it started; should that hang, leave anyway.
      setTimeout(() => process.exit(130), 30_000).unref();
    });
  }
  try {
    const summary = await runDemo({ stateDir, caDir, usb: !values['no-usb'], mcu, out: live, moduleLog, signal: interrupt.signal });
    if (values.json) {
      process.stderr.write(`${renderSummary(summary)}\n`);
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } else {
      process.stdout.write(`${renderSummary(summary)}\n`);
    }
    process.exitCode = summary.ok ? 0 : 1;
  } catch (error) {
    if (interrupt.signal.aborted) {
      process.stderr.write('demo interrupted; everything it started has been stopped\n');
      process.exit(130);
    }
    process.stderr.write(`demo failed: ${(error as Error).stack ?? String(error)}\nmodule output: ${moduleLogFile}\n`);
    process.exitCode = 1;
  }
  // Handles the SDK clients keep (keep-alive sockets, timers) must not hold the demo open once it is done.
  setTimeout(() => process.exit(), 2_000).unref();
}
