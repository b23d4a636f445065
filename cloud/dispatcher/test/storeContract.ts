import { describe, expect, it } from 'vitest';
import type { FeedbackMessage } from '@edge-ota/common';
import type { CatalogUpdate, DeliveryRecord, DeviceRecord, DispatcherStore } from '../src/store.ts';

// The contract every DispatcherStore implementation must pass (SQLite today, a server database later).

export function device(deviceId: string, extra: Partial<DeviceRecord> = {}): DeviceRecord {
  return {
    deviceId, parentId: 'gw', isGateway: false, group: 'g', tags: {}, assignedUpdateId: 'P/N@1.0', lifecycle: 'registered', lifecycleAt: undefined,
    installedVersion: undefined, createdAt: '2026-11-22T00:00:00.000Z', assignmentRevision: 0, ...extra,
  };
}

export function delivery(jobId: string, deviceId: string, extra: Partial<DeliveryRecord> = {}): DeliveryRecord {
  return {
    jobId, deviceId, gatewayId: 'gw', updateId: 'P/N@1.0', state: 'pending', payload: '{}', twinPayload: '{}', attempts: 0, nextAttemptAt: 0,
    twinWritten: false, lastError: undefined, createdAt: '2026-11-22T00:00:00.000Z', deliveredAt: undefined, ...extra,
  };
}

export function feedback(jobId: string, deviceId: string, sequence: number, step: FeedbackMessage['step'], status: FeedbackMessage['status'], extra: Partial<FeedbackMessage> = {}): FeedbackMessage {
  return {
    schema: 'edge-ota/feedback/1', messageId: `${jobId}/${sequence}`, jobId, sequence, gatewayId: 'gw', deviceId, updateId: { provider: 'P', name: 'N', version: '1.0' },
    step, status, resultCode: 700, extendedResultCode: 0, timestamp: `2026-11-22T00:00:0${sequence}.000Z`, ...extra,
  };
}

export function storeContract(name: string, open: () => { store: DispatcherStore; reopen?: () => DispatcherStore; cleanup: () => void }): void {
  describe(`DispatcherStore contract: ${name}`, () => {
    it('keeps devices, refuses a second insert and lists by group in id order', () => {
      const { store, cleanup } = open();
      try {
        expect(store.insertDevice(device('b'))).toBe(true);
        expect(store.insertDevice(device('b'))).toBe(false);
        store.insertDevice(device('a'));
        store.insertDevice(device('c', { group: 'other' }));
        expect(store.listDevices({ group: 'g', limit: 10 }).map((d) => d.deviceId)).toEqual(['a', 'b']);
        expect(store.listDevices({ limit: 1, after: 'a' }).map((d) => d.deviceId)).toEqual(['b']);
        expect(store.getDevice('a')).toEqual(device('a'));
      } finally {
        cleanup();
      }
    });

    it('orders lifecycle events by time: a later delete beats an earlier create in either arrival order', () => {
      const { store, cleanup } = open();
      try {
        store.insertDevice(device('d'));
        expect(store.applyLifecycle('d', 'deleted', '2026-11-22T10:00:02Z')).toBe(true);
        expect(store.applyLifecycle('d', 'live', '2026-11-22T10:00:01Z')).toBe(false);
        expect(store.getDevice('d')?.lifecycle).toBe('deleted');
        expect(store.applyLifecycle('d', 'live', '2026-11-22T10:00:03Z')).toBe(true);
        expect(store.getDevice('d')?.lifecycle).toBe('live');
      } finally {
        cleanup();
      }
    });

    it('reassigns a device, counting each reassignment, and cancels pending work but the job asked to keep', () => {
      const { store, cleanup } = open();
      try {
        store.insertDevice(device('d'));
        expect(store.reassignDevice('d', 'P/N@2.0')).toMatchObject({ assignedUpdateId: 'P/N@2.0', assignmentRevision: 1 });
        expect(store.reassignDevice('d', undefined)).toMatchObject({ assignedUpdateId: undefined, assignmentRevision: 2 });
        expect(store.getDevice('d')).toMatchObject({ assignedUpdateId: undefined, assignmentRevision: 2 });
        expect(store.reassignDevice('nobody', 'P/N@2.0')).toBeUndefined();
        store.insertDelivery(delivery('old', 'd'));
        store.insertDelivery(delivery('new', 'd'));
        expect(store.cancelPending('d', 'reassigned', 'new').map((j) => j.jobId)).toEqual(['old']);
        expect(store.getDelivery('new')?.state).toBe('pending');
        expect(store.getDelivery('old')?.state).toBe('cancelled');
      } finally {
        cleanup();
      }
    });

    it('records a delivery once, hands out due work, backs off, and cancels pending work', () => {
      const { store, cleanup } = open();
      try {
        store.insertDevice(device('d'));
        expect(store.insertDelivery(delivery('j1', 'd', { nextAttemptAt: 100 }))).toBe(true);
        expect(store.insertDelivery(delivery('j1', 'd'))).toBe(false);
        expect(store.dueDeliveries(50, 10)).toEqual([]);
        expect(store.dueDeliveries(100, 10).map((d) => d.jobId)).toEqual(['j1']);
        store.markAttempt('j1', { delivered: false, error: 'offline', nextAttemptAt: 5_000, twinWritten: true });
        expect(store.getDelivery('j1')).toMatchObject({ attempts: 1, twinWritten: true, lastError: 'offline', state: 'pending' });
        expect(store.nextDueAt()).toBe(5_000);
        expect(store.expediteGateway('gw', 200)).toBe(1);
        expect(store.dueDeliveries(200, 10)).toHaveLength(1);
        expect(store.dueDeliveries(200, 10, new Set(['j1']))).toEqual([]);
        expect(store.cancelPending('d', 'deleted')).toEqual([{ jobId: 'j1', gatewayId: 'gw', twinWritten: true }]);
        expect(store.getDelivery('j1')?.state).toBe('cancelled');
        expect(store.dueDeliveries(Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
        store.insertDelivery(delivery('j2', 'd', { payload: '{"full":true}', twinPayload: '{"pointer":true}' }));
        expect(store.getDelivery('j2')).toMatchObject({ payload: '{"full":true}', twinPayload: '{"pointer":true}' });
        expect(store.deliveriesFor('d').map((x) => x.jobId)).toEqual(['j1', 'j2']);
        store.markAttempt('j2', { delivered: true, nextAttemptAt: 0 });
        expect(store.getDelivery('j2')?.state).toBe('delivered');
        expect(store.cancelPending('d', 'deleted')).toEqual([]);
        store.insertDelivery(delivery('j3', 'd'));
        store.markAttempt('j3', { delivered: true, nextAttemptAt: 0, rejected: { resultCode: 0, extendedResultCode: 7, details: 'bad signature' } });
        expect(store.jobStatus('j3')).toMatchObject({ step: 'manifest', status: 'failed', terminal: true, extendedResultCode: 7 });
        expect(store.failedDevices(10)).toEqual([expect.objectContaining({ jobId: 'j3', step: 'manifest', resultDetails: 'bad signature' })]);
      } finally {
        cleanup();
      }
    });

    it('applies feedback in job order, drops repeats, keeps every message in the history, and counts states', () => {
      const { store, cleanup } = open();
      try {
        store.insertDevice(device('d'));
        store.insertDelivery(delivery('j', 'd'));
        expect(store.applyFeedback(feedback('j', 'd', 0, 'job', 'started'))).toBe('applied');
        expect(store.applyFeedback(feedback('j', 'd', 2, 'install', 'failed', { resultCode: 0, extendedResultCode: 42, resultDetails: 'disk' }))).toBe('applied');
        expect(store.applyFeedback(feedback('j', 'd', 1, 'download', 'succeeded'))).toBe('stale');
        expect(store.applyFeedback(feedback('j', 'd', 1, 'download', 'succeeded'))).toBe('duplicate');
        expect(store.applyFeedback(feedback('j', 'd', 3, 'job', 'failed', { resultCode: 0, extendedResultCode: 42 }))).toBe('applied');
        expect(store.applyFeedback(feedback('j', 'other', 4, 'job', 'failed'))).toBe('unknown-job');
        expect(store.jobStatus('j')).toMatchObject({ step: 'job', status: 'failed', terminal: true, lastSequence: 3 });
        expect(store.getDelivery('j')?.state).toBe('delivered');
        expect(store.history('d', 100).filter((h) => h.kind === 'feedback')).toHaveLength(4);
        expect(store.failedDevices(10)).toEqual([expect.objectContaining({ deviceId: 'd', step: 'install', extendedResultCode: 42, resultDetails: 'disk' })]);
        expect(store.countsByUpdate()).toEqual([{ updateId: 'P/N@1.0', state: 'failed', count: 1 }]);
        expect(store.countsByGroup()).toEqual([{ group: 'g', state: 'failed', count: 1 }]);
        store.insertDelivery(delivery('k', 'd', { updateId: 'P/N@2.0', createdAt: '2026-11-22T01:00:00.000Z' }));
        expect(store.applyFeedback(feedback('k', 'd', 0, 'job', 'succeeded', { installedVersion: '2.0' }))).toBe('applied');
        expect(store.getDevice('d')?.installedVersion).toBe('2.0');
        expect(store.countsByGroup()).toEqual([{ group: 'g', state: 'succeeded', count: 1 }]);
      } finally {
        cleanup();
      }
    });

    it('records a job it did not create when its sender vouches for it and the device is that gateway or behind it', () => {
      const { store, cleanup } = open();
      try {
        store.insertDevice(device('gw', { parentId: undefined, isGateway: true }));
        store.insertDevice(device('d'));
        store.insertDevice(device('elsewhere', { parentId: 'gw-2' }));
        // Without the sender's word nothing is adopted.
        expect(store.applyFeedback(feedback('usb-1', 'd', 0, 'job', 'started'))).toBe('unknown-job');
        expect(store.jobStatus('usb-1')).toBeUndefined();
        // Unknown devices and devices behind another gateway stay unknown jobs.
        expect(store.applyFeedback(feedback('usb-x', 'ghost', 0, 'job', 'started'), { adoptUnknownJob: true })).toBe('unknown-job');
        expect(store.applyFeedback(feedback('usb-y', 'elsewhere', 0, 'job', 'started'), { adoptUnknownJob: true })).toBe('unknown-job');
        expect(store.jobStatus('usb-x')).toBeUndefined();
        expect(store.jobStatus('usb-y')).toBeUndefined();
        expect(store.history('elsewhere', 10)).toEqual([]);

        // Arriving out of order: the earliest message still dates the job.
        expect(store.applyFeedback(feedback('usb-1', 'd', 1, 'install', 'succeeded'), { adoptUnknownJob: true })).toBe('applied');
        expect(store.jobStatus('usb-1')).toMatchObject({ origin: 'offline', deviceId: 'd', updateId: 'P/N@1.0', step: 'install', terminal: false });
        expect(store.getDelivery('usb-1')).toBeUndefined();
        expect(store.deliveriesFor('d')).toEqual([]);
        expect(store.dueDeliveries(Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
        expect(store.applyFeedback(feedback('usb-1', 'd', 0, 'job', 'started'), { adoptUnknownJob: true })).toBe('stale');
        expect(store.applyFeedback(feedback('usb-1', 'd', 0, 'job', 'started'), { adoptUnknownJob: true })).toBe('duplicate');
        expect(store.applyFeedback(feedback('usb-1', 'd', 2, 'job', 'succeeded', { installedVersion: '1.0' }), { adoptUnknownJob: true })).toBe('applied');
        expect(store.applyFeedback(feedback('usb-1', 'd', 2, 'job', 'succeeded', { installedVersion: '1.0' }), { adoptUnknownJob: true })).toBe('duplicate');
        expect(store.jobStatus('usb-1')).toMatchObject({ origin: 'offline', step: 'job', status: 'succeeded', terminal: true, lastSequence: 2 });
        expect(store.getDevice('d')?.installedVersion).toBe('1.0');
        const history = store.history('d', 100);
        expect(history.filter((h) => h.kind === 'feedback').map((h) => `${h.step}:${h.status}`)).toEqual(['install:succeeded', 'job:started', 'job:succeeded']);
        expect(history.some((h) => h.kind === 'delivery' && h.status === 'offlineJobRecorded' && h.jobId === 'usb-1')).toBe(true);
        expect(store.countsByUpdate()).toEqual([{ updateId: 'P/N@1.0', state: 'succeeded', count: 1 }]);

        // The gateway's own offline job, a failure, shows in the failed list.
        expect(store.applyFeedback(feedback('usb-2', 'gw', 0, 'install', 'failed', { resultCode: 0, extendedResultCode: 9, updateId: { provider: 'P', name: 'GW', version: '2.0' } }), { adoptUnknownJob: true })).toBe('applied');
        expect(store.applyFeedback(feedback('usb-2', 'gw', 1, 'job', 'failed', { resultCode: 0, extendedResultCode: 9, updateId: { provider: 'P', name: 'GW', version: '2.0' } }), { adoptUnknownJob: true })).toBe('applied');
        expect(store.jobsFor('gw')).toEqual([expect.objectContaining({ jobId: 'usb-2', origin: 'offline', updateId: 'P/GW@2.0', status: 'failed' })]);
        expect(store.failedDevices(10)).toEqual([expect.objectContaining({ deviceId: 'gw', jobId: 'usb-2', step: 'install', extendedResultCode: 9 })]);

        // A dispatched job stays dispatched, and a known job id for another device stays unknown.
        store.insertDelivery(delivery('j', 'd', { createdAt: '2026-11-22T02:00:00.000Z' }));
        expect(store.jobStatus('j')?.origin).toBe('dispatched');
        expect(store.applyFeedback(feedback('j', 'gw', 0, 'job', 'started'), { adoptUnknownJob: true })).toBe('unknown-job');
        expect(store.jobsFor('d').map((j) => [j.jobId, j.origin])).toEqual([['usb-1', 'offline'], ['j', 'dispatched']]);
      } finally {
        cleanup();
      }
    });

    it('keeps checkpoints and grants ownership only against the etag last seen', () => {
      const { store, cleanup } = open();
      try {
        const c = { fullyQualifiedNamespace: 'ns', eventHubName: 'eh', consumerGroup: '$Default', partitionId: '0', offset: '5', sequenceNumber: 5 };
        store.saveCheckpoint(c);
        store.saveCheckpoint({ ...c, offset: '9', sequenceNumber: 9 });
        expect(store.listCheckpoints('ns', 'eh', '$Default')).toEqual([{ ...c, offset: '9', sequenceNumber: 9 }]);
        const claim = { fullyQualifiedNamespace: 'ns', eventHubName: 'eh', consumerGroup: '$Default', partitionId: '0', ownerId: 'a', etag: 'e1', lastModifiedTimeInMs: 1 };
        expect(store.claimOwnership(claim, undefined)).toEqual(claim);
        expect(store.claimOwnership({ ...claim, ownerId: 'b', etag: 'e2' }, 'stale')).toBeUndefined();
        expect(store.claimOwnership({ ...claim, ownerId: 'b', etag: 'e2' }, 'e1')?.ownerId).toBe('b');
        expect(store.listOwnership('ns', 'eh', '$Default').map((o) => o.ownerId)).toEqual(['b']);
      } finally {
        cleanup();
      }
    });

    it('inserts updates all together or none: one already in the catalog keeps the others out and is named', () => {
      const { store, cleanup } = open();
      try {
        const update = (name: string, version: string): CatalogUpdate => ({
          updateId: `P/${name}@${version}`, provider: 'P', name, version, source: 'import', importedAt: '2026-11-22T00:00:00.000Z', files: [],
          importManifest: { updateId: { provider: 'P', name, version }, compatibility: [{ model: 'm' }], instructions: { steps: [] }, files: [], manifestVersion: '5.0', createdDateTime: '2026-11-22T00:00:00Z' },
        });
        expect(store.insertUpdates([update('Child', '1.0'), update('Parent', '1.0')])).toBeUndefined();
        expect(store.getUpdate('P/Child@1.0')).toEqual(update('Child', '1.0'));
        expect(store.insertUpdates([update('Other', '1.0'), update('Child', '1.0'), update('Parent', '2.0')])).toBe('P/Child@1.0');
        expect(store.getUpdate('P/Other@1.0')).toBeUndefined();
        expect(store.getUpdate('P/Parent@2.0')).toBeUndefined();
        expect(store.listUpdates().map((u) => u.updateId)).toEqual(['P/Child@1.0', 'P/Parent@1.0']);
      } finally {
        cleanup();
      }
    });

    it('remembers seen events and group rules', () => {
      const { store, reopen, cleanup } = open();
      try {
        expect(store.markEventSeen('e', 't')).toBe(true);
        expect(store.markEventSeen('e', 't')).toBe(false);
        expect(store.isEventSeen('e')).toBe(true);
        store.setGroupRule('g', 'P/N@1.0');
        expect(store.groupRule('g')).toBe('P/N@1.0');
        store.insertDevice(device('d'));
        store.insertDelivery(delivery('j', 'd'));
        if (reopen) {
          const again = reopen();
          expect(again.isEventSeen('e')).toBe(true);
          expect(again.getDelivery('j')?.state).toBe('pending');
          expect(again.listGroupRules()).toEqual([{ group: 'g', updateId: 'P/N@1.0' }]);
        }
      } finally {
        cleanup();
      }
    });
  });
}
