import { OtaError } from '../errors.ts';
import type { CompatibilityInfo, UpdateManifest } from '../manifest/types.ts';
import { isDetachedManifestPointer } from '../manifest/types.ts';
import { dateTimeMillis } from '../manifest/rules.ts';
import { matchCompatibility } from './compatibility.ts';
import type { ReplayGuard } from './replayGuard.ts';
import { compareVersions } from './version.ts';

export interface TargetState {
  /** Device properties the compatibility entries are matched against (deviceManufacturer, deviceModel, ...). */
  properties: Readonly<Record<string, string>>;
  /** Version of this update's provider/name the target runs now, if any. */
  installedVersion?: string;
}

export interface PolicyOptions {
  now?: Date;
  /** Without a guard, replay is not checked (a verifier that does not install, such as `ota bundle verify`). */
  replayGuard?: ReplayGuard;
  /** Manifests without edgeOta id and expiry (for example from the ADU service) are refused unless allowed. */
  allowManifestsWithoutLifetime?: boolean;
  /** Tolerated clock difference for createdDateTime in the future. Default 5 minutes. */
  clockSkewMs?: number;
}

export interface PolicyDecision {
  compatibility: CompatibilityInfo | undefined;
  isRollback: boolean;
}

/**
 * Decides whether a verified manifest may run on this target: lifetime (expiry, not from the future), replay,
 * compatibility, minimum version and anti-rollback. Call `acceptManifest` once the job is committed so the id
 * counts as used.
 */
export function checkUpdatePolicy(manifest: UpdateManifest, target: TargetState, options: PolicyOptions = {}): PolicyDecision {
  const now = options.now ?? new Date();
  const extension = manifest.edgeOta;
  if (!extension) {
    if (!options.allowManifestsWithoutLifetime) {
      throw new OtaError('MANIFEST_LIFETIME_MISSING', '/edgeOta: manifest has no id and expiry, so its replay cannot be ruled out', { field: '/edgeOta' });
    }
  } else {
    const expires = dateTimeMillis(extension.expiresDateTime);
    if (expires <= now.getTime()) {
      throw new OtaError('MANIFEST_EXPIRED', `/edgeOta/expiresDateTime: ${extension.expiresDateTime} has passed (now ${now.toISOString()})`, {
        field: '/edgeOta/expiresDateTime',
      });
    }
    if (options.replayGuard?.hasSeen(extension.manifestId)) {
      throw new OtaError('MANIFEST_REPLAYED', `/edgeOta/manifestId: ${extension.manifestId} was already accepted once`, { field: '/edgeOta/manifestId' });
    }
  }
  let compatibility: CompatibilityInfo | undefined;
  if (!isDetachedManifestPointer(manifest)) {
    const created = dateTimeMillis(manifest.createdDateTime);
    if (created > now.getTime() + (options.clockSkewMs ?? 5 * 60_000)) {
      throw new OtaError('MANIFEST_NOT_YET_VALID', `/createdDateTime: ${manifest.createdDateTime} is in the future`, { field: '/createdDateTime' });
    }
    compatibility = matchCompatibility(manifest.compatibility, target.properties);
  }
  const installed = target.installedVersion;
  const offered = manifest.updateId.version;
  const isRollback = installed !== undefined && compareVersions(offered, installed) < 0;
  if (installed !== undefined && extension?.minimumVersion !== undefined && compareVersions(installed, extension.minimumVersion) < 0) {
    throw new OtaError('MINIMUM_VERSION_NOT_MET', `/edgeOta/minimumVersion: target runs ${installed}, the update needs at least ${extension.minimumVersion}`, {
      field: '/edgeOta/minimumVersion',
    });
  }
  if (isRollback && extension?.rollback !== true) {
    throw new OtaError('DOWNGRADE_REFUSED', `/updateId/version: ${offered} is lower than the installed ${installed} and the manifest is not a signed rollback`, {
      field: '/updateId/version',
    });
  }
  return { compatibility, isRollback };
}

/** Records the manifest id as used; call after the job that installs it is durably recorded. */
export function acceptManifest(manifest: UpdateManifest, replayGuard: ReplayGuard): void {
  const extension = manifest.edgeOta;
  if (extension) replayGuard.remember(extension.manifestId, new Date(dateTimeMillis(extension.expiresDateTime)));
}
