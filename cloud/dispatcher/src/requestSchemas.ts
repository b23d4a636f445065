import { DispatcherError } from './errors.ts';

// Request bodies as JSON-schema subsets, the same shapes openapi.yaml documents (a test keeps the two in step).
// The checker covers what these schemas use: object/string/integer/boolean/array, required, additionalProperties
// false, pattern, length and size bounds, string maps and arrays of one item schema.

export interface FieldSchema {
  type: 'object' | 'string' | 'integer' | 'boolean' | 'array';
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  properties?: Record<string, FieldSchema>;
  required?: readonly string[];
  additionalProperties?: false | FieldSchema;
  maxProperties?: number;
  items?: FieldSchema;
  maxItems?: number;
}

const id = { type: 'string', pattern: '^[A-Za-z0-9\\-:.+%_#*?!(),=@;$\']{1,128}$' } as const;
const group = { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' } as const;
const updateId = { type: 'string', minLength: 5, maxLength: 200 } as const;
const updateImport = {
  type: 'object',
  required: ['importManifest', 'files'],
  additionalProperties: false,
  properties: {
    importManifest: { type: 'object' },
    files: { type: 'object', maxProperties: 64, additionalProperties: { type: 'string', maxLength: 96 * 1024 * 1024 } },
  },
} as const;

export const requestSchemas = {
  CreateDevice: {
    type: 'object',
    required: ['deviceId'],
    additionalProperties: false,
    properties: {
      deviceId: id,
      parentId: id,
      isGateway: { type: 'boolean' },
      group,
      tags: { type: 'object', maxProperties: 32, additionalProperties: { type: 'string', maxLength: 256 } },
      updateId,
    },
  },
  Assignment: {
    type: 'object',
    required: ['updateId'],
    additionalProperties: false,
    properties: { updateId },
  },
  GroupRule: {
    type: 'object',
    required: ['updateId'],
    additionalProperties: false,
    properties: { updateId },
  },
  ImportUpdate: {
    type: 'object',
    required: ['importManifest', 'files'],
    additionalProperties: false,
    properties: {
      ...updateImport.properties,
      // The child updates its reference steps name that are not in the catalog yet (ADU imports them in one request too).
      children: { type: 'array', maxItems: 10, items: updateImport },
    },
  },
} satisfies Record<string, FieldSchema>;

/** Throws REQUEST_INVALID naming the first field that breaks the schema (JSON pointer). */
export function checkRequest(schema: FieldSchema, value: unknown, at = ''): void {
  const fail = (rule: string): never => {
    throw new DispatcherError('REQUEST_INVALID', `${at || '/'}: ${rule}`, { field: at || '/' });
  };
  switch (schema.type) {
    case 'string':
      if (typeof value !== 'string') fail('must be a string');
      if (schema.minLength !== undefined && (value as string).length < schema.minLength) fail(`must be at least ${schema.minLength} characters`);
      if (schema.maxLength !== undefined && (value as string).length > schema.maxLength) fail(`must be at most ${schema.maxLength} characters`);
      if (schema.pattern && !new RegExp(schema.pattern).test(value as string)) fail(`must match ${schema.pattern}`);
      return;
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) fail('must be an integer');
      if (schema.minimum !== undefined && (value as number) < schema.minimum) fail(`must be >= ${schema.minimum}`);
      if (schema.maximum !== undefined && (value as number) > schema.maximum) fail(`must be <= ${schema.maximum}`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') fail('must be a boolean');
      return;
    case 'array':
      if (!Array.isArray(value)) fail('must be an array');
      if (schema.maxItems !== undefined && (value as unknown[]).length > schema.maxItems) fail(`must have at most ${schema.maxItems} items`);
      if (schema.items) (value as unknown[]).forEach((item, i) => checkRequest(schema.items!, item, `${at}/${i}`));
      return;
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('must be an object');
      const object = value as Record<string, unknown>;
      const keys = Object.keys(object);
      if (schema.maxProperties !== undefined && keys.length > schema.maxProperties) fail(`must have at most ${schema.maxProperties} properties`);
      for (const name of schema.required ?? []) if (!(name in object)) fail(`missing required property ${name}`);
      for (const key of keys) {
        const child = schema.properties?.[key];
        const path = `${at}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
        if (child) checkRequest(child, object[key], path);
        else if (schema.additionalProperties === false) throw new DispatcherError('REQUEST_INVALID', `${path}: unknown property`, { field: path });
        else if (schema.additionalProperties) checkRequest(schema.additionalProperties, object[key], path);
      }
    }
  }
}
