/** Small HTTP helpers for setting sessions up and checking them (loopback only). */
import http from 'node:http';
import { randomBytes } from 'node:crypto';

export interface Reply {
  status: number;
  body: string;
  setCookies: string[];
}

export function request(agent: http.Agent, port: number, method: string, path: string, cookie?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path, agent, headers: cookie ? { cookie } : {} },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          const raw = res.headers['set-cookie'];
          resolve({ status: res.statusCode ?? 0, body, setCookies: raw === undefined ? [] : raw });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A cookie jar for one client: Set-Cookie headers in, a Cookie header out. */
export class Jar {
  private readonly cookies = new Map<string, string>();

  constructor(header?: string) {
    if (header) {
      for (const pair of header.split('; ')) {
        const eq = pair.indexOf('=');
        this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
      }
    }
  }

  take(setCookies: readonly string[]): void {
    for (const line of setCookies) {
      const pair = line.split(';', 1)[0];
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = /expires=thu, 01 jan 1970/i.test(line) || value === '';
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }
}

/** Runs `task` over `items` with at most `width` at once. */
export async function pool<T, R>(items: readonly T[], width: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      out[i] = await task(items[i]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

/**
 * A cookie shaped like this library's signed session cookie (64 hex
 * characters and a 27-character signature), for contenders that set none:
 * the bare frameworks then parse requests of the same size as the session
 * contenders, and the ratio to them is the session library's cost alone.
 */
function standInCookie(): string {
  return `session_id=${randomBytes(32).toString('hex')}; session_id.sig=${randomBytes(20).toString('base64url')}`;
}

/**
 * Creates `count` sessions through GET /init and returns their Cookie
 * headers, after checking that each one reads back (GET /read); a stand-in
 * cookie where the contender set none.
 */
export async function createSessions(port: number, count: number): Promise<string[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  try {
    return await pool(Array.from({ length: count }, (_, i) => i), 16, async () => {
      const init = await request(agent, port, 'GET', '/init');
      if (init.status !== 200) throw new Error(`GET /init answered ${init.status}: ${init.body.slice(0, 200)}`);
      const jar = new Jar();
      jar.take(init.setCookies);
      const cookie = jar.header() || standInCookie();
      const check = await request(agent, port, 'GET', '/read', cookie);
      if (check.status !== 200 || check.body !== 'user-42') {
        throw new Error(`the new session does not read back (GET /read answered ${check.status} ${JSON.stringify(check.body.slice(0, 80))})`);
      }
      return cookie;
    });
  } finally {
    agent.destroy();
  }
}
