// Types for the ESM entry (esm/index.mjs): every export of the CommonJS build's declarations,
// with the session factory itself as the default export (as index.mjs does at run time).
export * from '../dist/index.js';
export { session as default } from '../dist/index.js';
