import { createRequire } from 'node:module';

/**
 * The release every bin reports with --version: the version of this package
 * as installed (dist/src/version.js reads ../../package.json), so a bundle
 * copied by `npm run install-system` reports what it was built from.
 */
export const DUNIX_VERSION: string = (
  createRequire(import.meta.url)('../../package.json') as { version: string }
).version;
