// Types for the ESM entry (esm/index.mjs): the CommonJS build's declarations re-exported under the
// same names, with the session factory itself as the default export (as index.mjs does at run time).
// Keep the value list in step with index.mjs, and both lists in step with src/index.ts.
export {
  session,
  withStore,
  getSession,
  fromContext,
  Session,
  MemoryStore,
  createMemoryStore,
  RedisStore,
  SessionLockTimeoutError,
  SessionStoreError,
  SessionConfigError,
} from '../dist/index.js';
export type {
  MemoryStoreOptions,
  RedisStoreOptions,
  RedisClient,
  SessionOptions,
  SameSite,
  LockMode,
  Store,
  SessionData,
  AtomicStore,
  Change,
  SessionRecord,
  DistributedLock,
  SessionEvent,
  SessionEventName,
} from '../dist/index.js';
export { session as default } from '../dist/index.js';
