import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BootControl, Slot } from '../src/handlers/bootControl.ts';
import { FileBootControl, GrubEnvBootControl, UbootEnvBootControl } from '../src/handlers/bootControl.ts';
import { createFakeGrub, createFakeUboot } from './support/fakeBootloaders.ts';

// One contract for every BootControl, run against each: FileBootControl for real, GRUB and U-Boot through fake
// grub-editenv / fw_setenv that keep their environment in a file, with a boot() that does what the bootloader's
// script does at power-on. Then the exact commands each adapter runs.

interface Device {
  control: BootControl;
  /** Power-on: returns the slot the bootloader started. */
  boot: () => Promise<Slot>;
}

const devices: Array<[string, () => Device]> = [
  ['FileBootControl', () => {
    const control = new FileBootControl(path.join(mkdtempSync(path.join(tmpdir(), 'boot-')), 'boot.json'));
    return { control, boot: () => control.boot() };
  }],
  ['GrubEnvBootControl', () => {
    const grub = createFakeGrub(mkdtempSync(path.join(tmpdir(), 'grub-')));
    return { control: new GrubEnvBootControl({ envFile: grub.envFile, binDir: grub.binDir, cmdlineFile: grub.cmdlineFile }), boot: () => Promise.resolve(grub.boot()) };
  }],
  ['UbootEnvBootControl', () => {
    const uboot = createFakeUboot(mkdtempSync(path.join(tmpdir(), 'uboot-')));
    return { control: new UbootEnvBootControl({ binDir: uboot.binDir }), boot: () => Promise.resolve(uboot.boot()) };
  }],
];

describe.each(devices)('%s keeps the BootControl contract', (_name, create) => {
  it('boots A on a fresh device, and A is the default', async () => {
    const { control, boot } = create();
    expect(await boot()).toBe('A');
    expect(await control.activeSlot()).toBe('A');
    expect(await control.bootedSlot()).toBe('A');
  });

  it('boots a try-once slot once, then falls back unless it was marked good', async () => {
    const { control, boot } = create();
    await boot();
    await control.setNextBoot('B', { tryOnce: true });
    expect(await control.activeSlot()).toBe('A');
    expect(await boot()).toBe('B');
    expect(await control.bootedSlot()).toBe('B');
    expect(await control.activeSlot()).toBe('A');
    expect(await boot()).toBe('A');
    expect(await control.bootedSlot()).toBe('A');
    expect(await boot()).toBe('A');
  });

  it('makes a tried slot the default once it is marked good', async () => {
    const { control, boot } = create();
    await boot();
    await control.setNextBoot('B', { tryOnce: true });
    await boot();
    await control.markGood('B');
    expect(await control.activeSlot()).toBe('B');
    expect(await boot()).toBe('B');
    expect(await boot()).toBe('B');
  });

  it('goes back to the old slot at the next boot when the running new slot is marked bad', async () => {
    const { control, boot } = create();
    await boot();
    await control.setNextBoot('B', { tryOnce: true });
    await boot();
    await control.markBad('B');
    await control.setNextBoot('A', { tryOnce: false });
    // Twice, as a resumed rollback would: nothing changes.
    await control.markBad('B');
    await control.setNextBoot('A', { tryOnce: false });
    expect(await control.activeSlot()).toBe('A');
    expect(await boot()).toBe('A');
    expect(await boot()).toBe('A');
  });

  it('cancels a pending try when the slot is marked bad before the reboot', async () => {
    const { control, boot } = create();
    await boot();
    await control.setNextBoot('B', { tryOnce: true });
    await control.markBad('B');
    expect(await boot()).toBe('A');
  });

  it('switches the default without a try when asked to', async () => {
    const { control, boot } = create();
    await boot();
    await control.setNextBoot('B', { tryOnce: false });
    expect(await control.activeSlot()).toBe('B');
    expect(await boot()).toBe('B');
  });
});

describe('bootloader commands', () => {
  it('GRUB: next_entry for a try, saved_entry for the default, through grub-editenv on the configured file', async () => {
    const grub = createFakeGrub(mkdtempSync(path.join(tmpdir(), 'grub-')), { A: 'gw-rootfs-a', B: 'gw-rootfs-b' });
    const control = new GrubEnvBootControl({ envFile: grub.envFile, binDir: grub.binDir, cmdlineFile: grub.cmdlineFile, entries: { A: 'gw-rootfs-a', B: 'gw-rootfs-b' } });
    grub.boot();
    await control.setNextBoot('B', { tryOnce: true });
    grub.boot();
    await control.markGood('B');
    await control.markBad('A');
    expect(grub.calls()).toEqual([
      `grub-editenv ${grub.envFile} set next_entry=gw-rootfs-b edgeota_slot_B=trying`,
      `grub-editenv ${grub.envFile} set saved_entry=gw-rootfs-b edgeota_slot_B=good`,
      `grub-editenv ${grub.envFile} list`,
      `grub-editenv ${grub.envFile} set edgeota_slot_A=bad`,
    ]);
    expect(grub.env()).toEqual({ saved_entry: 'gw-rootfs-b', edgeota_slot_B: 'good', edgeota_slot_A: 'bad' });
  });

  it('GRUB: reads the booted slot from the kernel command line, and says so when it is missing', async () => {
    const grub = createFakeGrub(mkdtempSync(path.join(tmpdir(), 'grub-')));
    const control = new GrubEnvBootControl({ envFile: grub.envFile, binDir: grub.binDir, cmdlineFile: grub.envFile, cmdlineKey: 'edgeota.slot' });
    await expect(control.bootedSlot()).rejects.toThrow(/edgeota\.slot on the kernel command line .* is not set, expected A or B/);
  });

  it('U-Boot: boot_part, upgrade_available and bootcount in one fw_setenv script, with the configured fw_env.config', async () => {
    const uboot = createFakeUboot(mkdtempSync(path.join(tmpdir(), 'uboot-')));
    const control = new UbootEnvBootControl({ binDir: uboot.binDir, configFile: '/etc/fw_env.config' });
    uboot.boot();
    await control.setNextBoot('B', { tryOnce: true });
    uboot.boot();
    await control.markGood('B');
    const calls = uboot.calls().map((c) => c.replace(/-s \S+/, '-s <script>'));
    expect(calls).toEqual([
      'fw_setenv -c /etc/fw_env.config -s <script>',
      '  boot_part B',
      '  upgrade_available 1',
      '  bootcount 0',
      'fw_setenv -c /etc/fw_env.config -s <script>',
      '  boot_part B',
      '  upgrade_available 0',
      '  bootcount 0',
    ]);
    expect(uboot.env()).toMatchObject({ boot_part: 'B', upgrade_available: '0', bootcount: '0', bootlimit: '1' });
  });
});
