import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Router from '@koa/router';
import Koa from 'koa';
import type { Context, Middleware, Next } from 'koa';
import { session } from '../src';
import type { Store } from '../src';
import { csrfProtection, csrfToken, isSafeMethod, rotateCsrfToken } from './csrf';
import { readForm } from './form';
import type { CartLine, Html, WizardData } from './pages';
import { PLANS, cartPage, concurrencyPage, errorPage, homePage, layout, loginPage, profilePage, wizardPage } from './pages';
import type { User } from './users';
import { DEMO_USERS, checkPassword } from './users';

export interface AppOptions {
  /** app.keys: the session cookie is signed with the first key and verified with all. */
  keys: string[];
  /** Where sessions live. Default: the library's MemoryStore. */
  store?: Store;
}

export function createApp({ keys, store }: AppOptions): Koa {
  const app = new Koa();
  app.keys = keys;
  app.use(errorPages);
  app.use(assets()); // ahead of the session: a stylesheet needs no session and no lock
  app.use(formFirst); // ahead of the session too: a slow upload must not hold the session's lock
  app.use(session({ store })); // HttpOnly, SameSite=Lax, signed with app.keys: the defaults
  app.use(csrfProtection); // after the session, which holds the token
  const router = routes();
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/**
 * Reads a form body in full (readForm keeps it for the handlers and the
 * CSRF check) before the session's lock is taken: of every request that
 * may carry one, which csrfProtection reads, not of POSTs alone.
 */
async function formFirst(ctx: Context, next: Next): Promise<void> {
  if (!isSafeMethod(ctx.method)) await readForm(ctx);
  await next();
}

// ---------------------------------------------------------------- routes

const CATALOGUE = [
  { id: 'tea', name: 'Tea' },
  { id: 'scone', name: 'Scone' },
  { id: 'jam', name: 'Jam' },
];

type Cart = Record<string, number>; // catalogue id → quantity

interface Wizard extends WizardData {
  step: number; // 1-3: the form steps, 4: the summary
}

const FIELD_OF_STEP: Record<number, keyof WizardData> = { 1: 'team', 2: 'plan', 3: 'invite' };

function routes(): Router {
  const router = new Router();

  router.get('/', (ctx) => {
    ctx.body = page(ctx, 'Welcome', homePage(currentUser(ctx)));
  });

  // ---- signing in and out

  router.get('/login', (ctx) => {
    if (currentUser(ctx)) return ctx.redirect('/profile');
    ctx.body = page(ctx, 'Sign in', loginPage(csrfToken(ctx), DEMO_USERS));
  });

  router.post('/login', async (ctx) => {
    const { username = '', password = '' } = await readForm(ctx);
    const user = checkPassword(username.trim(), password);
    if (!user) {
      ctx.status = 401;
      ctx.body = page(ctx, 'Sign in', loginPage(csrfToken(ctx), DEMO_USERS, 'Wrong username or password.', username));
      return;
    }
    // A new session ID (and CSRF token) at every privilege change: an ID that
    // someone planted in this browser before sign-in is worthless after it.
    await ctx.session.regenerate();
    rotateCsrfToken(ctx);
    ctx.session.set('user', user);
    ctx.session.set('signedInAt', new Date().toISOString());
    flash(ctx, `Welcome, ${user.name}.`);
    ctx.redirect('/profile');
  });

  router.post('/logout', async (ctx) => {
    await ctx.session.destroy(); // gone from the store; the cookie is expired
    ctx.redirect('/');
  });

  router.get('/profile', (ctx) => {
    const user = currentUser(ctx);
    if (!user) return ctx.redirect('/login');
    const signedInAt = new Date(ctx.session.get<string>('signedInAt') ?? 0).toUTCString();
    ctx.body = page(ctx, 'Profile', profilePage(user, signedInAt, fingerprint(ctx.session.id)));
  });

  // ---- the cart: anonymous visitors have one too

  router.get('/cart', (ctx) => {
    const cart = ctx.session.get<Cart>('cart') ?? {};
    const lines: CartLine[] = CATALOGUE.filter((item) => cart[item.id] > 0).map((item) => ({ ...item, quantity: cart[item.id] }));
    ctx.body = page(ctx, 'Cart', cartPage(csrfToken(ctx), lines, CATALOGUE));
  });

  router.post('/cart/add', (ctx) => changeCart(ctx, +1));
  router.post('/cart/remove', (ctx) => changeCart(ctx, -1));

  // ---- a three-step wizard

  router.get('/wizard', (ctx) => {
    const wizard = ctx.session.get<Wizard>('wizard') ?? newWizard();
    ctx.body = page(ctx, 'New team', wizardPage(csrfToken(ctx), wizard.step, wizard));
  });

  router.post('/wizard', async (ctx) => {
    const form = await readForm(ctx);
    const wizard = ctx.session.get<Wizard>('wizard') ?? newWizard();
    // Keep what was typed on this step, whichever way the user goes.
    const field = FIELD_OF_STEP[wizard.step];
    if (field && form[field] !== undefined) wizard[field] = form[field].trim().slice(0, 200);

    if (form.action === 'back') {
      wizard.step = Math.max(1, wizard.step - 1);
    } else if (form.action === 'next') {
      const error = field && invalidWizardField(field, wizard[field]);
      if (error) {
        ctx.session.set('wizard', wizard);
        ctx.status = 422;
        ctx.body = page(ctx, 'New team', wizardPage(csrfToken(ctx), wizard.step, wizard, error));
        return;
      }
      wizard.step = Math.min(4, wizard.step + 1);
    } else if (form.action === 'finish' && wizard.step === 4) {
      ctx.session.delete('wizard'); // done: the next visit starts afresh
      flash(ctx, `Team “${wizard.team}” created on the ${wizard.plan} plan; an invitation went to ${wizard.invite}.`);
      return ctx.redirect('/wizard');
    } else {
      ctx.throw(400, 'That is not a step of this wizard.');
    }
    ctx.session.set('wizard', wizard);
    ctx.redirect('/wizard');
  });

  // ---- concurrency: five requests at once, none lost

  router.get('/concurrency', (ctx) => {
    ctx.body = page(ctx, 'Concurrency', concurrencyPage(csrfToken(ctx), ctx.session.get<number>('counter') ?? 0));
  });

  router.get('/concurrency/counter', (ctx) => {
    ctx.body = { counter: ctx.session.get<number>('counter') ?? 0 };
  });

  router.post('/concurrency/increment', async (ctx) => {
    // A read-modify-write with a pause in the middle. Without the session's
    // write lock, requests arriving together would all read the same value.
    const counter = ctx.session.get<number>('counter') ?? 0;
    await new Promise((resolve) => setTimeout(resolve, 50));
    ctx.session.set('counter', counter + 1);
    ctx.body = { counter: counter + 1 };
  });

  return router;
}

// ---------------------------------------------------------------- helpers

function currentUser(ctx: Context): User | undefined {
  return ctx.session.get<User>('user');
}

/** A one-time message for the next page shown. */
function flash(ctx: Context, message: string): void {
  ctx.session.set('flash', message);
}

/** Wraps a page's body in the layout: navigation, the signed-in user, a pending flash message. */
function page(ctx: Context, title: string, body: Html): string {
  const user = currentUser(ctx);
  const message = ctx.session.get<string>('flash');
  if (message !== undefined) ctx.session.delete('flash');
  ctx.type = 'html';
  return layout(title, { user, csrf: user ? csrfToken(ctx) : undefined, flash: message }, body);
}

/** A short hash of the session ID, safe to show; the ID itself is a secret. */
function fingerprint(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 12);
}

async function changeCart(ctx: Context, by: number): Promise<void> {
  const { item = '' } = await readForm(ctx);
  if (!CATALOGUE.some((known) => known.id === item)) ctx.throw(400, 'There is no such item.');
  // get() hands out a copy: change it, then set() it back.
  const cart = ctx.session.get<Cart>('cart') ?? {};
  const quantity = (cart[item] ?? 0) + by;
  if (quantity > 0) cart[item] = quantity;
  else delete cart[item];
  ctx.session.set('cart', cart);
  ctx.redirect('/cart');
}

function newWizard(): Wizard {
  return { step: 1, team: '', plan: '', invite: '' };
}

function invalidWizardField(field: keyof WizardData, value: string): string | undefined {
  if (field === 'team' && value === '') return 'Give the team a name.';
  if (field === 'plan' && !PLANS.includes(value)) return 'Choose a plan.';
  if (field === 'invite' && !/^[^\s@]+@[^\s@]+$/.test(value)) return 'Enter an email address.';
  return undefined;
}

// ---------------------------------------------------------------- middleware

/** Every error becomes an HTML page; details of server errors stay in the log. */
async function errorPages(ctx: Context, next: Next): Promise<void> {
  ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Referrer-Policy', 'same-origin');
  try {
    await next();
    if (ctx.status === 404 && ctx.body == null) ctx.throw(404, 'There is no page here.');
  } catch (error) {
    const { status = 500, expose = false, message = '' } = error as { status?: number; expose?: boolean; message?: string };
    if (status >= 500) ctx.app.emit('error', error, ctx);
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = errorPage(status, expose ? message : 'Something went wrong on our side. Try again in a moment.');
  }
}

/** Serves the stylesheet and the concurrency page's script from example/public. */
function assets(): Middleware {
  const files = new Map<string, { type: string; body: string }>();
  for (const [name, type] of [['style.css', 'text/css'], ['concurrency.js', 'application/javascript']]) {
    files.set(`/assets/${name}`, { type, body: readFileSync(join(__dirname, 'public', name), 'utf8') });
  }
  return async (ctx, next) => {
    const file = files.get(ctx.path);
    if (file === undefined || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    ctx.type = file.type;
    ctx.set('Cache-Control', 'no-cache');
    ctx.body = file.body;
  };
}
