import { createHmac, timingSafeEqual } from 'node:crypto';
import rhea from 'rhea';
import type { Connection, EventContext, Message, Receiver, Sender } from 'rhea';
import type { Server as TlsServer } from 'node:tls';
import type { BuiltInEndpoint, CloudEvent } from './builtInEndpoint.ts';
import { partitionCount } from './builtInEndpoint.ts';
import { parseSasToken } from './sharedAccessSignature.ts';

// IoT Hub's Event Hubs-compatible built-in endpoint over AMQP 1.0 (TLS, 5671), so the unmodified
// @azure/event-hubs client reads the emulator's event log: SASL ANONYMOUS/PLAIN, claims-based security on
// `$cbs` (put-token with a SAS token of the hub's policy), the `$management` node's READ requests for the hub and
// its partitions, and one receiver link per `<hub>/ConsumerGroups/<cg>/Partitions/<n>` with the
// `apache.org:selector-filter:string` start position. Consumer groups share the log: as on Event Hubs, each reader
// keeps its own position (checkpoints are the client's business).

export interface EventHubsEndpointOptions {
  events: BuiltInEndpoint;
  hubName: string;
  hostName: string;
  address: string;
  port: number;
  policy: { keyName: string; primaryKey: string };
  tls: { cert: string; key: string };
  log: (line: string) => void;
}

interface PartitionReader {
  sender: Sender;
  partition: number;
  /** Partition sequence number of the next event to send. */
  next: number;
}

interface ConnectionState {
  /** Set by a valid put-token: links other than $cbs are refused until then (Event Hubs' rule). */
  authorized: boolean;
}

const CBS_NODE = '$cbs';
const MANAGEMENT_NODE = '$management';
const SELECTOR_FILTER = 'apache.org:selector-filter:string';
const createdAt = new Date('2026-01-01T00:00:00Z');

export class EventHubsEndpoint {
  readonly #options: EventHubsEndpointOptions;
  readonly #container = rhea.create_container({ id: 'hub-emulator-eventhubs' });
  readonly #readers = new Set<PartitionReader>();
  readonly #connections = new Map<Connection, ConnectionState>();
  /** Last partition sequence number per partition (-1 when empty), kept in memory for management answers. */
  readonly #last: number[] = [];
  readonly #lastTime: string[] = [];
  #server: TlsServer | undefined;

  constructor(options: EventHubsEndpointOptions) {
    this.#options = options;
    for (let p = 0; p < partitionCount; p += 1) {
      let last = -1;
      let lastTime = createdAt.toISOString();
      for (let batch = options.events.readPartition(p, 0, 1000); batch.length > 0; batch = options.events.readPartition(p, last + 1, 1000)) {
        const tail = batch[batch.length - 1]!;
        last = tail.partitionSequence;
        lastTime = tail.enqueuedTime;
      }
      this.#last.push(last);
      this.#lastTime.push(lastTime);
    }
  }

  get connectionString(): string {
    const { hostName, port, policy, hubName } = this.#options;
    const endpoint = port === 5671 ? `sb://${hostName}/` : `sb://${hostName}:${port}/`;
    return `Endpoint=${endpoint};SharedAccessKeyName=${policy.keyName};SharedAccessKey=${policy.primaryKey};EntityPath=${hubName}`;
  }

  async start(): Promise<void> {
    const container = this.#container;
    // The client authenticates with CBS after an ANONYMOUS SASL exchange; PLAIN with the policy is accepted too.
    const mechanisms = container.sasl_server_mechanisms as { enable_anonymous(): void; enable_plain(check: (user: string, password: string) => boolean): void };
    mechanisms.enable_anonymous();
    mechanisms.enable_plain((user: string, password: string) =>
      user === this.#options.policy.keyName && password === this.#options.policy.primaryKey);
    container.on('connection_open', (context: EventContext) => {
      this.#connections.set(context.connection, { authorized: false });
    });
    container.on('connection_close', (context: EventContext) => this.#forget(context.connection));
    container.on('disconnected', (context: EventContext) => this.#forget(context.connection));
    container.on('error', (context: EventContext) => this.#options.log(`eventhubs: ${String(context.error)}`));
    container.on('receiver_open', (context: EventContext) => this.#receiverOpened(context));
    container.on('sender_open', (context: EventContext) => this.#senderOpened(context));
    container.on('sender_close', (context: EventContext) => {
      if (context.sender) this.#dropReader(context.sender);
    });
    container.on('sendable', (context: EventContext) => {
      for (const reader of this.#readers) if (reader.sender === context.sender) this.#pump(reader);
    });
    container.on('message', (context: EventContext) => this.#request(context));
    this.#options.events.on('event', this.#onEvent);

    const server = container.listen({
      transport: 'tls',
      host: this.#options.address,
      port: this.#options.port,
      cert: this.#options.tls.cert,
      key: this.#options.tls.key,
    });
    server.on('tlsClientError', () => undefined);
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    this.#options.events.off('event', this.#onEvent);
    for (const connection of this.#connections.keys()) {
      try {
        connection.close();
      } catch {
        // already gone
      }
    }
    const server = this.#server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // A client that does not answer the close frame must not hold the emulator's shutdown.
      for (const connection of this.#connections.keys()) (connection as unknown as { socket?: { destroy(): void } }).socket?.destroy();
    });
    this.#connections.clear();
  }

  readonly #onEvent = (event: CloudEvent): void => {
    this.#last[event.partition] = event.partitionSequence;
    this.#lastTime[event.partition] = event.enqueuedTime;
    // One read per partition per turn of the event loop, however many events arrived in it.
    this.#dirty.add(event.partition);
    if (this.#dirty.size === 1) {
      setImmediate(() => {
        const partitions = new Set(this.#dirty);
        this.#dirty.clear();
        for (const reader of this.#readers) if (partitions.has(reader.partition)) this.#pump(reader);
      });
    }
  };
  readonly #dirty = new Set<number>();

  #forget(connection: Connection): void {
    this.#connections.delete(connection);
    for (const reader of this.#readers) if (reader.sender.connection === connection) this.#readers.delete(reader);
  }

  #dropReader(sender: Sender): void {
    for (const reader of this.#readers) if (reader.sender === sender) this.#readers.delete(reader);
  }

  #receiverOpened(context: EventContext): void {
    // The client sends requests to $cbs and $management; both answer on the link named by reply_to.
    const receiver = context.receiver as Receiver;
    const address = receiver.target?.address ?? (receiver as unknown as { remote: { attach?: { target?: { address?: string } } } }).remote.attach?.target?.address;
    if (address !== CBS_NODE && address !== MANAGEMENT_NODE) {
      receiver.close({ condition: 'amqp:not-implemented', description: `the emulator's Event Hubs endpoint takes no messages at ${address ?? '(none)'}` });
      return;
    }
    receiver.set_target({ address });
    receiver.add_credit(100);
  }

  #senderOpened(context: EventContext): void {
    const sender = context.sender as Sender;
    const remote = (sender as unknown as { remote: { attach?: { source?: { address?: string; filter?: Record<string, unknown> }; target?: { address?: string } } } }).remote.attach;
    const address = remote?.source?.address ?? '';
    sender.set_source({ address, ...(remote?.source?.filter ? { filter: remote.source.filter } : {}) });
    if (remote?.target?.address) sender.set_target({ address: remote.target.address });
    if (address === CBS_NODE || address === MANAGEMENT_NODE) return;
    const state = this.#connections.get(sender.connection);
    const match = /^(?:.*\/)?([^/]+)\/ConsumerGroups\/([^/]+)\/Partitions\/(\d+)$/i.exec(address);
    if (!match || match[1] !== this.#options.hubName) {
      sender.close({ condition: 'amqp:not-found', description: `The messaging entity '${address}' could not be found.` });
      return;
    }
    if (!state?.authorized) {
      sender.close({ condition: 'amqp:unauthorized-access', description: 'put a token on $cbs first' });
      return;
    }
    const partition = Number(match[3]);
    if (partition >= partitionCount) {
      sender.close({ condition: 'com.microsoft:argument-out-of-range', description: `partition ${partition} does not exist (0..${partitionCount - 1})` });
      return;
    }
    let next: number;
    try {
      next = this.#startPosition(partition, remote?.source?.filter);
    } catch (error) {
      sender.close({ condition: 'amqp:invalid-field', description: (error as Error).message });
      return;
    }
    const reader: PartitionReader = { sender, partition, next };
    this.#readers.add(reader);
    this.#options.log(`eventhubs: reader on ${address} from ${next}`);
    this.#pump(reader);
  }

  /** Maps the selector filter the client sends (offset, sequence number or enqueued time) to a partition sequence number. */
  #startPosition(partition: number, filter: Record<string, unknown> | undefined): number {
    const raw = filter?.[SELECTOR_FILTER];
    const described = (raw as { value?: unknown } | undefined)?.value;
    const expression = typeof raw === 'string' ? raw : typeof described === 'string' ? described : '';
    if (!expression) return 0;
    const match = /amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>)\s*'?([^']*)'?/.exec(expression);
    if (!match) throw new Error(`unsupported selector filter: ${expression}`);
    const [, field, operator, value] = match as unknown as [string, string, string, string];
    const inclusive = operator === '>=';
    if (field === 'x-opt-enqueued-time') {
      const after = Number(value);
      let position = 0;
      for (let batch = this.#options.events.readPartition(partition, 0, 1000); batch.length > 0; batch = this.#options.events.readPartition(partition, position, 1000)) {
        for (const event of batch) {
          if (Date.parse(event.enqueuedTime) > after) return event.partitionSequence;
          position = event.partitionSequence + 1;
        }
      }
      return position;
    }
    if (value === '@latest') return (this.#last[partition] ?? -1) + 1;
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`selector filter value ${value} is not a number`);
    if (n < 0) return 0;
    return inclusive ? n : n + 1;
  }

  #pump(reader: PartitionReader): void {
    const { sender } = reader;
    while (sender.sendable() && this.#readers.has(reader)) {
      const batch = this.#options.events.readPartition(reader.partition, reader.next, Math.max(1, Math.min((sender as unknown as { credit: number }).credit, 200)));
      if (batch.length === 0) return;
      for (const event of batch) {
        if (!sender.sendable()) return;
        sender.send(toAmqpMessage(event));
        reader.next = event.partitionSequence + 1;
      }
    }
  }

  #request(context: EventContext): void {
    const receiver = context.receiver as Receiver;
    const message = context.message as Message;
    const node = receiver.target?.address;
    const props = (message.application_properties ?? {}) as Record<string, unknown>;
    let status = 200;
    let description = 'OK';
    let body: unknown;
    try {
      if (node === CBS_NODE) {
        if (props.operation !== 'put-token') throw Object.assign(new Error(`unsupported $cbs operation ${String(props.operation)}`), { status: 400 });
        this.#checkToken(String(message.body));
        const state = this.#connections.get(receiver.connection);
        if (state) state.authorized = true;
      } else {
        this.#checkToken(typeof props.security_token === 'string' ? props.security_token : '');
        body = this.#management(props);
      }
    } catch (error) {
      status = (error as { status?: number }).status ?? 401;
      description = (error as Error).message;
    }
    const replyTo = message.reply_to;
    // The reply goes to the client's link whose target address (management) or name (CBS) is reply_to.
    const sender = receiver.connection.find_sender((s: Sender) => s.name === replyTo
      || (s as unknown as { remote: { attach?: { target?: { address?: string } } } }).remote.attach?.target?.address === replyTo);
    if (!sender) return;
    sender.send({
      correlation_id: message.message_id,
      application_properties: { 'status-code': status, 'status-description': description },
      body: body ?? null,
    });
  }

  #checkToken(token: string): void {
    let parsed;
    try {
      parsed = parseSasToken(token);
    } catch (error) {
      throw Object.assign(new Error((error as Error).message), { status: 401 });
    }
    if (parsed.keyName && parsed.keyName !== this.#options.policy.keyName) {
      throw Object.assign(new Error(`unknown policy ${parsed.keyName}`), { status: 401 });
    }
    const resource = parsed.resource.replace(/^(sb|amqps|amqp|https?):\/\//i, '');
    if (parsed.expiry <= Math.floor(Date.now() / 1000)) throw Object.assign(new Error('SAS token expired'), { status: 401 });
    // Event Hubs clients sign with the key's text as the HMAC key (Service Bus' rule); IoT Hub's own tools
    // sign with the decoded key. Either is the policy's key.
    const toSign = `${encodeURIComponent(parsed.resource)}\n${parsed.expiry}`;
    const presented = Buffer.from(parsed.signature, 'base64');
    const key = this.#options.policy.primaryKey;
    const valid = [Buffer.from(key, 'utf8'), Buffer.from(key, 'base64')].some((secret) => {
      const expected = createHmac('sha256', secret).update(toSign).digest();
      return expected.length === presented.length && timingSafeEqual(expected, presented);
    });
    if (!valid) throw Object.assign(new Error('SAS token signature does not match the policy key'), { status: 401 });
    if (!resource.toLowerCase().startsWith(this.#options.hostName.toLowerCase())) {
      throw Object.assign(new Error(`token for ${parsed.resource} does not grant ${this.#options.hostName}`), { status: 401 });
    }
  }

  #management(props: Record<string, unknown>): unknown {
    if (props.operation !== 'READ') throw Object.assign(new Error(`unsupported operation ${String(props.operation)}`), { status: 400 });
    if (props.name !== this.#options.hubName) throw Object.assign(new Error(`no event hub ${String(props.name)}`), { status: 404 });
    const ids = Array.from({ length: partitionCount }, (_, i) => String(i));
    if (props.type === 'com.microsoft:eventhub') {
      return { name: this.#options.hubName, type: 'com.microsoft:eventhub', created_at: createdAt, partition_count: partitionCount, partition_ids: ids };
    }
    if (props.type === 'com.microsoft:partition') {
      const partition = Number(props.partition);
      if (!ids.includes(String(props.partition))) throw Object.assign(new Error(`no partition ${String(props.partition)}`), { status: 404 });
      const last = this.#last[partition] ?? -1;
      return {
        name: this.#options.hubName,
        type: 'com.microsoft:partition',
        partition: String(partition),
        begin_sequence_number: rhea.types.wrap_long(0),
        last_enqueued_sequence_number: rhea.types.wrap_long(last),
        last_enqueued_offset: String(last),
        last_enqueued_time_utc: new Date(this.#lastTime[partition] ?? createdAt.toISOString()),
        is_partition_empty: last < 0,
      };
    }
    throw Object.assign(new Error(`unsupported type ${String(props.type)}`), { status: 400 });
  }
}

const MESSAGE_PROPERTY_KEYS: Record<string, keyof Message> = {
  'message-id': 'message_id',
  'correlation-id': 'correlation_id',
  'content-type': 'content_type',
  'content-encoding': 'content_encoding',
};

/** An event as IoT Hub hands it to Event Hubs readers: body as a data section, iothub-* system properties as annotations. */
function toAmqpMessage(event: CloudEvent): Message {
  const annotations: Record<string, unknown> = {
    'x-opt-sequence-number': rhea.types.wrap_long(event.partitionSequence),
    'x-opt-offset': String(event.partitionSequence),
    'x-opt-enqueued-time': new Date(event.enqueuedTime),
  };
  const message: Message = { body: rhea.message.data_section(event.body) as unknown, application_properties: { ...event.properties } };
  for (const [key, value] of Object.entries(event.systemProperties)) {
    const property = MESSAGE_PROPERTY_KEYS[key];
    if (property) (message as unknown as Record<string, unknown>)[property] = value;
    else if (key === 'user-id') message.user_id = value;
    else if (key === 'iothub-enqueuedtime') annotations[key] = new Date(value);
    else annotations[key] = value;
  }
  message.message_annotations = annotations;
  return message;
}
