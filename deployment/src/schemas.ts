import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv from 'ajv';

// Checks deployment manifests against SchemaStore's IoT Edge schemas, the same ones `az iot edge` and VS Code use.
// The schemas are not copied into the repository: they sit in ../shared/schemas beside it (locally and in CI).
// SchemaStore's IoT Edge schemas are draft-04 ("id"); the only draft-04 construct they use is that top-level "id",
// so renaming it to "$id" lets either Ajv generation compile them unchanged otherwise.

export const defaultSchemaDir = fileURLToPath(new URL('../../../shared/schemas/', import.meta.url));

const schemaFiles = {
  template: 'azure-iot-edge-deployment-template-4.0.json',
  deployment: 'azure-iot-edge-deployment-2.0.json',
  edgeAgent: 'azure-iot-edgeagent-deployment-1.1.json',
  edgeHub: 'azure-iot-edgehub-deployment-1.2.json',
} as const;

export type SchemaName = keyof typeof schemaFiles;

export interface SchemaProblem {
  schema: string;
  path: string;
  message: string;
}

interface AjvError {
  instancePath?: string;
  dataPath?: string;
  message?: string;
  params?: unknown;
}

type Validate = ((data: unknown) => boolean) & { errors?: AjvError[] | null };

export interface DeploymentValidator {
  /** Problems of `document` against one schema; empty when valid. */
  check(schema: SchemaName, document: unknown): SchemaProblem[];
}

function normalise(schema: Record<string, unknown>): Record<string, unknown> {
  const { id, $schema: _draft, ...rest } = schema;
  return typeof id === 'string' ? { $id: id, ...rest } : rest;
}

export function createDeploymentValidator(schemaDir: string = process.env.EDGE_OTA_SHARED_SCHEMAS ?? defaultSchemaDir): DeploymentValidator {
  // strict: false because SchemaStore's schemas carry annotations ("examples", "contentMediaType") freely.
  const ajv = new Ajv({ allErrors: true, strict: false } as ConstructorParameters<typeof Ajv>[0]);
  // The template schema refers to the edgeAgent/edgeHub ones by relative id, so every file is added first.
  const files = [...new Set([...Object.values(schemaFiles), 'azure-iot-edgehub-deployment-1.1.json'])];
  const ids = new Map<string, string>();
  for (const file of files) {
    const schema = normalise(JSON.parse(readFileSync(path.join(schemaDir, file), 'utf8')) as Record<string, unknown>);
    ajv.addSchema(schema);
    ids.set(file, schema.$id as string);
  }
  const compiled = new Map<SchemaName, Validate>();
  for (const [name, file] of Object.entries(schemaFiles) as Array<[SchemaName, string]>) {
    const validate = ajv.getSchema(ids.get(file) ?? file) as Validate | undefined;
    if (!validate) throw new Error(`schema ${file} did not compile`);
    compiled.set(name, validate);
  }
  return {
    check(schema, document) {
      const validate = compiled.get(schema)!;
      if (validate(document)) return [];
      return (validate.errors ?? []).map((error) => ({
        schema: schemaFiles[schema],
        path: error.instancePath ?? error.dataPath ?? '',
        message: `${error.message ?? 'invalid'}${error.params ? ` ${JSON.stringify(error.params)}` : ''}`,
      }));
    },
  };
}

export function formatProblems(problems: readonly SchemaProblem[]): string {
  return problems.map((p) => `${p.schema}: ${p.path || '/'} ${p.message}`).join('\n');
}
