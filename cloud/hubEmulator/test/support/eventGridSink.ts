import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedGridEvent {
  id: string;
  eventType: string;
  subject: string;
  eventTime: string;
  data: Record<string, unknown>;
  deliveryCount: number;
}

/**
 * An Event Grid webhook subscriber on loopback: answers the validation handshake, records notifications, and can
 * be told to fail the next N deliveries (to exercise retries).
 */
export interface EventGridSink {
  readonly url: string;
  readonly events: ReceivedGridEvent[];
  readonly validations: number;
  failNext(count: number): void;
  ofType(eventType: string): ReceivedGridEvent[];
  close(): Promise<void>;
}

export async function startEventGridSink(): Promise<EventGridSink> {
  const events: ReceivedGridEvent[] = [];
  let validations = 0;
  let failures = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const batch = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Array<ReceivedGridEvent & { data: { validationCode?: string } }>;
      if (req.headers['aeg-event-type'] === 'SubscriptionValidation') {
        validations += 1;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ validationResponse: batch[0]?.data.validationCode }));
        return;
      }
      if (failures > 0) {
        failures -= 1;
        res.writeHead(503).end();
        return;
      }
      for (const event of batch) events.push({ ...event, deliveryCount: Number(req.headers['aeg-delivery-count'] ?? 0) });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/events`,
    events,
    get validations() {
      return validations;
    },
    failNext(count) {
      failures = count;
    },
    ofType(eventType) {
      return events.filter((e) => e.eventType === `Microsoft.Devices.${eventType}`);
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
