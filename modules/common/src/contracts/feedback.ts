import { OtaError } from '../errors.ts';
import { contractViolation } from './contractSchemas.ts';

// Per-step feedback from a gateway's orchestrator to the dispatcher (schema: schemas/edge-ota-feedback-1.json).
// It travels as a D2C message on the module output `feedback`, with the application property
// `edge-ota-message: feedback` so routes and consumers can pick it out, and content type application/json.

export const FEEDBACK_SCHEMA = 'edge-ota/feedback/1';
export const FEEDBACK_OUTPUT = 'feedback';
export const FEEDBACK_MESSAGE_PROPERTY = 'edge-ota-message';
/** Well under IoT Hub's 256 KB D2C limit; a feedback message is a few hundred bytes. */
export const MAX_FEEDBACK_BYTES = 16 * 1024;

export type FeedbackStep = 'job' | 'manifest' | 'download' | 'validate' | 'install' | 'apply' | 'run' | 'healthCheck' | 'commit' | 'rollback' | 'cancel';
export type FeedbackStatus = 'started' | 'progress' | 'succeeded' | 'failed' | 'skipped' | 'rolledBack' | 'cancelled';

export interface FeedbackMessage {
  schema: typeof FEEDBACK_SCHEMA;
  messageId: string;
  jobId: string;
  sequence: number;
  gatewayId: string;
  deviceId: string;
  updateId: { provider: string; name: string; version: string };
  step: FeedbackStep;
  status: FeedbackStatus;
  progress?: { doneBytes?: number; totalBytes?: number; fileId?: string };
  resultCode: number;
  extendedResultCode: number;
  resultDetails?: string;
  installedVersion?: string;
  timestamp: string;
}

/** A job's last message: step `job` with a terminal status. */
export function isTerminalFeedback(message: Pick<FeedbackMessage, 'step' | 'status'>): boolean {
  return message.step === 'job' && ['succeeded', 'failed', 'rolledBack', 'cancelled'].includes(message.status);
}

export function feedbackMessageId(jobId: string, sequence: number): string {
  return `${jobId}/${sequence}`;
}

/** Parses and checks a feedback message body; throws OtaError FEEDBACK_INVALID naming the field. */
export function parseFeedbackMessage(body: Buffer | string): FeedbackMessage {
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (size > MAX_FEEDBACK_BYTES) throw new OtaError('FEEDBACK_INVALID', `feedback message of ${size} bytes exceeds ${MAX_FEEDBACK_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch {
    throw new OtaError('FEEDBACK_INVALID', 'feedback message is not JSON');
  }
  const violation = contractViolation('feedback', value);
  if (violation) throw new OtaError('FEEDBACK_INVALID', `feedback message ${violation}`, { field: violation.split(':')[0] });
  const message = value as FeedbackMessage;
  if (Number.isNaN(Date.parse(message.timestamp))) throw new OtaError('FEEDBACK_INVALID', 'feedback message /timestamp: not a date-time', { field: '/timestamp' });
  if (message.messageId !== feedbackMessageId(message.jobId, message.sequence)) {
    throw new OtaError('FEEDBACK_INVALID', 'feedback message /messageId: must be <jobId>/<sequence>', { field: '/messageId' });
  }
  return message;
}
