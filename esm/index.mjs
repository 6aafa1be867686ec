// ESM entry: named exports, and the middleware factory as the default export.
import cjs from '../dist/index.js';

export const {
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
} = cjs;

export default cjs.session;
