/**
 * What the browser tests need: Debian's Chromium driven by playwright-core,
 * the example app on a loopback port, a guard that keeps pages on that
 * port, and screenshots in test-output/ for a person to look at.
 */
import { existsSync, mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { createApp } from '../../example/app';
import { MemoryStore } from '../../src';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const OUTPUT_DIR = join(__dirname, '..', '..', 'test-output');

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * Whether the browser tests can run. Without Chromium they are skipped with
 * a warning on a developer's machine, and fail under CI=true, where a
 * missing browser is a broken setup rather than a choice.
 */
export function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM_PATH)) return true;
  if (process.env.CI === 'true') {
    throw new Error(`${CHROMIUM_PATH} is missing; the browser tests need Debian's chromium (apt-get install -y chromium)`);
  }
  console.warn(`\n  WARNING: skipping the browser tests: ${CHROMIUM_PATH} not found. Install it with: apt-get install -y chromium\n`);
  return false;
}

/** Starts Chromium; on a loaded machine its first start can time out, so it gets a second try. */
export async function launchChromium(): Promise<Browser> {
  const launch = () => chromium.launch({ executablePath: CHROMIUM_PATH, args: ARGS, timeout: 60_000 });
  try {
    return await launch();
  } catch (error) {
    console.warn(`  Chromium did not start (${(error as Error).message.split('\n')[0]}); trying once more`);
    return launch();
  }
}

export interface RunningExample {
  /** http://127.0.0.1:<port>, no trailing slash. */
  origin: string;
  close(): Promise<void>;
}

/** The example app, with its own MemoryStore, on a free loopback port. */
export async function startExample(): Promise<RunningExample> {
  const store = new MemoryStore();
  const app = createApp({ keys: ['browser-test-key'], store });
  const server: Server = await new Promise((resolve, reject) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening)).once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      store.close();
    },
  };
}

/**
 * Aborts every request of `context` that does not go to `origin`, and
 * returns the list of those it aborted: the pages must load nothing from
 * anywhere else.
 */
export async function keepToOrigin(context: BrowserContext, origin: string): Promise<string[]> {
  const foreign: string[] = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    foreign.push(url);
    return route.abort('blockedbyclient');
  });
  return foreign;
}

/** Saves a full-page screenshot as test-output/browser-<name>.png. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUTPUT_DIR, `browser-${name}.png`), fullPage: true });
}
