import { fileURLToPath } from 'node:url';

/** The project's shared/ folder sits beside the repository (locally and in CI): `<repo>/../shared/schemas`. */
export const sharedSchemasDir = fileURLToPath(new URL('../../../../shared/schemas/', import.meta.url));
