import type { FeedbackMessage } from '@edge-ota/common';
import { FEEDBACK_MESSAGE_PROPERTY, isOtaError, parseFeedbackMessage } from '@edge-ota/common';
import type { DispatcherStore, FeedbackOutcome } from './store.ts';

// Per-step feedback from gateways' orchestrators (schema edge-ota/feedback/1, module output `feedback`,
// application property `edge-ota-message: feedback`). Repeats are dropped by message id, and a message older
// than the job's latest (by the job's own sequence) goes to the history without moving the job backwards.
// Feedback for a job the dispatcher never created (offline install) records that job, origin `offline`.

export const ORCHESTRATOR_MODULE_ID = 'otaOrchestrator';

export type FeedbackResult =
  | { outcome: FeedbackOutcome; message: FeedbackMessage }
  | { outcome: 'rejected'; code: 'FEEDBACK_INVALID' | 'FEEDBACK_SENDER_MISMATCH' | 'FEEDBACK_UNKNOWN_JOB'; reason: string };

export function isFeedbackTelemetry(properties: Readonly<Record<string, unknown>>): boolean {
  return properties[FEEDBACK_MESSAGE_PROPERTY] === 'feedback';
}

export class FeedbackIngestor {
  readonly #store: DispatcherStore;

  constructor(store: DispatcherStore) {
    this.#store = store;
  }

  ingest(sender: { deviceId: string; moduleId: string | undefined }, body: Buffer): FeedbackResult {
    let message: FeedbackMessage;
    try {
      message = parseFeedbackMessage(body);
    } catch (error) {
      return { outcome: 'rejected', code: 'FEEDBACK_INVALID', reason: isOtaError(error) ? error.message : String(error) };
    }
    // Only a gateway's own orchestrator speaks for the jobs it runs.
    if (sender.moduleId !== ORCHESTRATOR_MODULE_ID || sender.deviceId !== message.gatewayId) {
      return { outcome: 'rejected', code: 'FEEDBACK_SENDER_MISMATCH', reason: `feedback for gateway ${message.gatewayId} sent by ${sender.deviceId}/${sender.moduleId ?? ''}` };
    }
    // The sender is the orchestrator of message.gatewayId, so a job the dispatcher did not create (installed from a
    // USB drop-in or while cut off from the cloud) is recorded as an offline job when its device is that gateway
    // or sits behind it; anything else stays an unknown job.
    const outcome = this.#store.applyFeedback(message, { adoptUnknownJob: true });
    if (outcome === 'unknown-job') {
      return { outcome: 'rejected', code: 'FEEDBACK_UNKNOWN_JOB', reason: `no job ${message.jobId} for device ${message.deviceId}, and ${message.deviceId} is not a known device that is ${message.gatewayId} or behind it` };
    }
    return { outcome, message };
  }
}
