import { applyLayer, expandTemplate, finaliseManifest, manifestFileName, readTemplate, toLayered, unreplacedPlaceholders } from './manifest.ts';
import type { JsonObject, ManifestOptions } from './manifest.ts';
import { createDeploymentValidator, formatProblems } from './schemas.ts';
import type { DeploymentValidator, SchemaProblem } from './schemas.ts';

// A manifest is generated and checked in one step, so that no caller (the CLI, the local runner, the tests) can
// hold a manifest that has not passed the schemas `az iot edge` and VS Code check against.

export interface GeneratedManifest {
  fileName: string;
  manifest: JsonObject;
}

/** Schema checks for one generated manifest; a layered one is checked on its own and as applied to the base. */
export function checkManifest(validator: DeploymentValidator, manifest: JsonObject, options: ManifestOptions): SchemaProblem[] {
  const placeholders = unreplacedPlaceholders(manifest).map((text) => ({ schema: 'placeholders', path: '', message: `${text} was not replaced` }));
  const content = manifest.modulesContent as JsonObject;
  if (!options.layered) {
    return [
      ...placeholders,
      ...validator.check('deployment', manifest),
      ...validator.check('edgeAgent', { $edgeAgent: content.$edgeAgent }),
      ...validator.check('edgeHub', { $edgeHub: content.$edgeHub }),
    ];
  }
  // A layered deployment has no schema of its own: IoT Hub merges it into the base, and the merge must be valid.
  const base = finaliseManifest(expandTemplate(readTemplate(false), { ...options, layered: false, debug: false }));
  const merged = applyLayer(base, manifest);
  const mergedContent = merged.modulesContent as JsonObject;
  return [
    ...placeholders,
    ...validator.check('deployment', merged),
    ...validator.check('edgeAgent', { $edgeAgent: mergedContent.$edgeAgent }),
    ...validator.check('edgeHub', { $edgeHub: mergedContent.$edgeHub }),
  ];
}

export function generateManifest(options: ManifestOptions, validator: DeploymentValidator = createDeploymentValidator()): GeneratedManifest {
  if (options.layered && options.apiProxy) throw new Error('--layered with --api-proxy: the proxy takes port 443 from edgeHub, which only a base deployment can change');
  const full = finaliseManifest(expandTemplate(readTemplate(options.debug ?? false), options));
  const manifest = options.layered ? toLayered(full) : full;
  const problems = checkManifest(validator, manifest, options);
  if (problems.length > 0) throw new Error(`the generated manifest is not valid:\n${formatProblems(problems)}`);
  return { fileName: manifestFileName(options), manifest };
}
