/**
 * The lost-update check: 200 concurrent POST /rmw on one session, each
 * reading n, waiting 5 ms, then writing n + 1. Without a per-session lock
 * they all read the same n, and nearly every update is lost.
 */
import http from 'node:http';
import type { Child } from './child';
import { Jar, createSessions, request } from './http';

export interface LostUpdates {
  sent: number;
  /** Increments answered 200 that did not survive (see lostOf). */
  lost: number;
  /** Answers other than 200 (a lock timeout would show here). */
  failed: number;
  ms: number;
}

/**
 * Of `sent` increments, `failed` answered other than 200 (a lock timeout: no
 * change, and counted apart); the rest must all be in the final count `n`,
 * and what is missing of them is lost. (A failed one whose change was saved
 * all the same raises `n` and may hide a lost one; `failed` shows it.)
 */
export function lostOf(sent: number, failed: number, n: number): number {
  if (!Number.isFinite(n)) return sent - failed;
  return Math.max(0, sent - failed - n);
}

export async function lostUpdates(child: Child, concurrency = 200): Promise<LostUpdates> {
  const { port } = await child.call<{ port: number }>('prepare');
  const [cookie] = await createSessions(port, 1);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    const jar = new Jar(cookie);
    const started = Date.now();
    let failed = 0;
    // Every request carries the cookie the session started with; the jar
    // takes Set-Cookie answers in the order they arrive, as a browser would.
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        const reply = await request(agent, port, 'POST', '/rmw', cookie);
        if (reply.status !== 200) failed++;
        jar.take(reply.setCookies);
      }),
    );
    const ms = Date.now() - started;
    const final = await request(agent, port, 'GET', '/count', jar.header());
    const n = Number(final.body);
    return { sent: concurrency, lost: lostOf(concurrency, failed, n), failed, ms };
  } finally {
    agent.destroy();
  }
}
