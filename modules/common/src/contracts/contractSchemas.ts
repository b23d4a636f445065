import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { packageSchemasDir } from '../schemaDirectory.ts';

// The message contracts between edge-ota's components are JSON Schemas in modules/common/schemas, so the wire
// format is documented in one place and checked the same way by every side.

const schemaDir = packageSchemasDir(import.meta.url);
const contracts = {
  feedback: ['edge-ota-feedback-1.json', ''],
  updateDelivery: ['edge-ota-update-delivery-1.json', ''],
  mcuFlashRequest: ['edge-ota-mcu-flash-1.json', '#/definitions/request'],
  mcuFlashProgress: ['edge-ota-mcu-flash-1.json', '#/definitions/progress'],
} as const;
export type ContractName = keyof typeof contracts;

let compiled: Map<ContractName, ValidateFunction> | undefined;

function validator(name: ContractName): ValidateFunction {
  if (!compiled) {
    // Formats (date-time) are checked in code where they matter; ajv-formats would be one more dependency.
    const ajv = new Ajv({ allErrors: false, strict: true, validateFormats: false });
    const ids = new Map<string, string>();
    for (const [file] of Object.values(contracts)) {
      if (ids.has(file)) continue;
      const schema = JSON.parse(readFileSync(new URL(file, schemaDir), 'utf8')) as { $id: string };
      ajv.addSchema(schema);
      ids.set(file, schema.$id);
    }
    compiled = new Map(
      (Object.entries(contracts) as Array<[ContractName, readonly [string, string]]>).map(([key, [file, pointer]]) => {
        const validate = ajv.getSchema(`${ids.get(file) ?? ''}${pointer}`);
        if (!validate) throw new Error(`contract schema ${file}${pointer} did not compile`);
        return [key, validate];
      }),
    );
  }
  const validate = compiled.get(name);
  if (!validate) throw new Error(`no contract ${name}`);
  return validate;
}

/** Returns undefined when the value fits the contract, else one sentence naming the field and the rule. */
export function contractViolation(name: ContractName, value: unknown): string | undefined {
  const validate = validator(name);
  if (validate(value)) return undefined;
  const error = validate.errors?.[0];
  return error ? describe(error) : 'does not match the contract';
}

function describe(error: ErrorObject): string {
  const where = error.instancePath || '(root)';
  if (error.keyword === 'additionalProperties') {
    return `${where}: unknown property ${String((error.params as { additionalProperty: string }).additionalProperty)}`;
  }
  if (error.keyword === 'required') return `${where}: missing ${String((error.params as { missingProperty: string }).missingProperty)}`;
  return `${where}: ${error.message ?? 'is invalid'}`;
}
