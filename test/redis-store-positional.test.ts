/**
 * `new RedisStore(client)`, the client passed where the options object goes,
 * is an easy slip (connect-redis and koa-redis take `{ client }` too). The
 * TypeError names the option it found, and an ioredis client's own property
 * is `options`, so the message reads "unknown RedisStore option options",
 * which says nothing about the mistake. It should say to pass `{ client }`.
 * No Redis server is needed: the client is made with `lazyConnect`.
 */
import { Redis } from 'ioredis';
import { RedisStore } from '../src';
import { expect } from './support/app';

describe('RedisStore given the client itself instead of { client }', () => {
  it('throws a TypeError that tells to pass { client }', () => {
    const client = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true });
    try {
      let caught: unknown;
      try {
        new RedisStore(client as unknown as ConstructorParameters<typeof RedisStore>[0]);
      } catch (error) {
        caught = error;
      }
      expect(caught).to.be.instanceOf(TypeError);
      expect((caught as Error).message).to.match(/\{ ?client ?\}/);
    } finally {
      client.disconnect();
    }
  });
});
