import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { packageSchemasDir } from '../schemaDirectory.ts';

// The ADU schemas ship inside the package (../shared is not shipped); they are compiled once, on first use.
const schemaDir = packageSchemasDir(import.meta.url);
const schemaFiles = [
  'azure-deviceupdate-manifest-definitions-5.0.json',
  'azure-deviceupdate-import-manifest-5.0.json',
  'azure-deviceupdate-update-manifest-5.json',
] as const;

export type SchemaName = 'importManifest' | 'updateManifest';
const schemaIds: Record<SchemaName, string> = {
  importManifest: 'https://json.schemastore.org/azure-deviceupdate-import-manifest-5.0.json',
  updateManifest: 'https://json.schemastore.org/azure-deviceupdate-update-manifest-5.json',
};

let compiled: Map<string, ValidateFunction> | undefined;

function validators(): Map<string, ValidateFunction> {
  if (compiled) return compiled;
  // strict: false because SchemaStore's schemas use "examples"/"title" freely and one nests propertyNames oddly.
  const ajv = new Ajv({ allErrors: true, strict: false });
  for (const file of schemaFiles) {
    ajv.addSchema(JSON.parse(readFileSync(new URL(file, schemaDir), 'utf8')) as object);
  }
  // Step schemas separately, so a step can be checked against the branch its "type" selects.
  const keys = (Object.keys(schemaIds) as SchemaName[]).flatMap((name) => [
    [name, schemaIds[name]],
    [`${name}#inlineStep`, `${schemaIds[name]}#/definitions/inlineStep`],
    [`${name}#referenceStep`, `${schemaIds[name]}#/definitions/referenceStep`],
  ]);
  compiled = new Map(
    keys.map(([key, id]) => {
      const validate = ajv.getSchema(id!);
      if (!validate) throw new Error(`schema ${id} did not compile`);
      return [key!, validate];
    }),
  );
  return compiled;
}

/**
 * Steps are an anyOf of inline and reference; reporting against the branch the step's own "type" picks
 * gives "missing updateId" instead of "missing handler" for a broken reference step.
 */
function findStepViolation(schema: SchemaName, value: unknown): ErrorObject | undefined {
  const steps = (value as { instructions?: { steps?: unknown } }).instructions?.steps;
  if (!Array.isArray(steps)) return undefined;
  for (const [i, step] of steps.entries()) {
    if (typeof step !== 'object' || step === null) continue;
    const branch = (step as { type?: unknown }).type === 'reference' ? 'referenceStep' : 'inlineStep';
    const validate = validators().get(`${schema}#${branch}`)!;
    if (!validate(step)) {
      const best = pickMostSpecific(validate.errors ?? []);
      if (best) return { ...best, instancePath: `/instructions/steps/${i}${best.instancePath}` };
    }
  }
  return undefined;
}

export interface SchemaViolation {
  field: string;
  rule: string;
  message: string;
}

/** Returns undefined when valid, else the most specific violation (deepest path, umbrella anyOf/oneOf last). */
export function findSchemaViolation(schema: SchemaName, value: unknown): SchemaViolation | undefined {
  const validate = validators().get(schema);
  if (!validate) throw new Error(`unknown schema ${schema}`);
  if (validate(value)) return undefined;
  const best = findStepViolation(schema, value) ?? pickMostSpecific(validate.errors ?? []);
  if (!best) return { field: '/', rule: 'schema', message: 'does not match the schema' };
  const field = best.instancePath === '' ? '/' : best.instancePath;
  return { field, rule: best.keyword, message: describe(best) };
}

function pickMostSpecific(errors: readonly ErrorObject[]): ErrorObject | undefined {
  const umbrella = new Set(['anyOf', 'oneOf', 'if']);
  const depth = (e: ErrorObject): number => e.instancePath.split('/').length;
  return [...errors].sort((a, b) => {
    const ua = umbrella.has(a.keyword) ? 1 : 0;
    const ub = umbrella.has(b.keyword) ? 1 : 0;
    // const/type failures on a discriminator ("type": "reference") say little; prefer required/pattern/limits.
    const weak = (e: ErrorObject): number => (e.keyword === 'const' || e.keyword === 'additionalProperties' ? 1 : 0);
    return ua - ub || weak(a) - weak(b) || depth(b) - depth(a);
  })[0];
}

function describe(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      return `missing required property "${String(params.missingProperty)}"`;
    case 'additionalProperties':
      return `property "${String(params.additionalProperty)}" is not allowed`;
    case 'const':
      return `must equal ${JSON.stringify(params.allowedValue)}`;
    default:
      return error.message ?? error.keyword;
  }
}
