import type { FullUpdateManifest, InlineStep } from '../manifest/types.ts';
import { isReferenceStep } from '../manifest/types.ts';

/** ADU producers spell it "installedCriteria" and "InstalledCriteria"; the key is matched without case. */
export function stepInstalledCriteria(step: InlineStep): string | undefined {
  const properties = step.handlerProperties ?? {};
  const key = Object.keys(properties).find((k) => k.toLowerCase() === 'installedcriteria');
  const value = key === undefined ? undefined : properties[key];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Whether every inline step is already satisfied on the target, so download and install can be skipped (ADU's
 * isInstalled). A step without installedCriteria is never considered installed; reference steps are judged
 * by the caller against their own detached manifests, so they make this return false. (The orchestrator judges
 * a reference step installed when every step of its child is, or when the child is not for the target, as ADU's
 * steps handler does.)
 */
export function isUpdateInstalled(manifest: FullUpdateManifest, isStepInstalled: (handler: string, installedCriteria: string) => boolean): boolean {
  return manifest.instructions.steps.every((step) => {
    if (isReferenceStep(step)) return false;
    const criteria = stepInstalledCriteria(step);
    return criteria !== undefined && isStepInstalled(step.handler, criteria);
  });
}
