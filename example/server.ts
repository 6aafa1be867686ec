/**
 * `npm start`: the example app on http://127.0.0.1:3000.
 *
 *   PORT, HOST     where to listen (default 3000 on 127.0.0.1)
 *   SESSION_KEYS   comma-separated keys that sign the session cookie
 *   REDIS_URL      keep sessions in Redis (redis://localhost:6379) instead of memory
 */
import type { AddressInfo } from 'node:net';
import { MemoryStore } from '../src';
import type { Store } from '../src';
import { createApp } from './app';

interface ChosenStore {
  store: Store;
  description: string;
  close(): Promise<unknown>;
}

async function chooseStore(): Promise<ChosenStore> {
  const url = process.env.REDIS_URL;
  if (!url) return { store: new MemoryStore(), description: 'memory (gone when the server stops)', close: async () => {} };
  // Loaded only when asked for, so the example runs where Redis is not installed.
  const [{ default: Redis }, { RedisStore }] = await Promise.all([import('ioredis'), import('../src')]);
  // The client settings README's "Scaling out" recommends.
  const client = new Redis(url, {
    maxRetriesPerRequest: 1,
    commandTimeout: 2000,
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
    enableAutoPipelining: true,
  });
  client.on('error', (error: Error) => console.error(`Redis: ${error.message}`));
  // lock: true makes a session's write lock hold across processes, should you start several.
  const store = new RedisStore({ client, prefix: 'example:sess:', lock: true });
  return { store, description: 'Redis (kept across restarts)', close: () => client.quit() };
}

function sessionKeys(): string[] {
  const keys = (process.env.SESSION_KEYS ?? '').split(',').map((key) => key.trim()).filter(Boolean);
  if (keys.length > 0) return keys;
  console.warn('SESSION_KEYS is not set: session cookies are signed with a fixed development key. Set SESSION_KEYS to long random strings anywhere but your own machine.');
  return ['koa-locked-session-example-development-key'];
}

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? 3000);
  const host = process.env.HOST ?? '127.0.0.1';
  const { store, description, close } = await chooseStore();
  const app = createApp({ keys: sessionKeys(), store });
  const server = app.listen(port, host, () => {
    const { address, port: bound } = server.address() as AddressInfo;
    const shown = address.includes(':') ? `[${address}]` : address;
    console.log(`koa-locked-session example listening on http://${shown}:${bound}/ — sessions in ${description}`);
  });
  const stop = (): void => {
    server.close();
    void close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
