/**
 * The HTML of every page. Everything interpolated into `html` is escaped
 * unless it is itself `html`, so no page can be tricked into running
 * someone's markup: an item or team called `<script>` shows as text.
 */

import { STATUS_CODES } from 'node:http';
import type { User } from './users';

/** Markup that is already safe to send. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ENTITIES[char]);
}

function render(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === undefined || value === null || value === false) return '';
  return escapeHtml(String(value));
}

/** Tagged template: `html`<p>${name}</p>`` escapes `name`. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0];
  values.forEach((value, i) => (out += render(value) + strings[i + 1]));
  return new Html(out);
}

const csrfField = (csrf: string): Html => html`<input type="hidden" name="_csrf" value="${csrf}">`;

// ---------------------------------------------------------------- layout

export interface Chrome {
  user: User | undefined;
  /** Needed for the sign-out button whenever someone is signed in. */
  csrf: string | undefined;
  flash: string | undefined;
}

export function layout(title: string, chrome: Chrome, body: Html): string {
  const account = chrome.user
    ? html`<form method="post" action="/logout" class="signout">
        ${csrfField(chrome.csrf ?? '')}
        <span>Signed in as <strong>${chrome.user.name}</strong></span>
        <button type="submit" class="link">Sign out</button>
      </form>`
    : html`<a href="/login">Sign in</a>`;
  return html`<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${title} · koa-locked-session example</title>
  <link rel="stylesheet" href="/assets/style.css">
</head>
<body>
  <header>
    <nav>
      <a href="/" class="brand">koa-locked-session</a>
      <a href="/profile">Profile</a>
      <a href="/cart">Cart</a>
      <a href="/wizard">Wizard</a>
      <a href="/concurrency">Concurrency</a>
    </nav>
    <div class="account">${account}</div>
  </header>
  <main>
    ${chrome.flash ? html`<p class="flash" role="status">${chrome.flash}</p>` : ''}
    <h1>${title}</h1>
    ${body}
  </main>
</body>
</html>
`.text;
}

// ---------------------------------------------------------------- pages

export function homePage(user: User | undefined): Html {
  return html`
    <p>A small Koa app whose state lives in a server-side session. Each card is one thing to try.</p>
    <ul class="cards">
      <li><a href="${user ? '/profile' : '/login'}">Sign in</a> as a demo user; the session gets a fresh ID.</li>
      <li><a href="/cart">Cart</a>: add and remove items; they are still there after a reload.</li>
      <li><a href="/wizard">Wizard</a>: three steps, back and forth, kept in the session until you finish.</li>
      <li><a href="/concurrency">Concurrency</a>: five requests at once, each adds 1 to a counter; none is lost.</li>
    </ul>`;
}

export function loginPage(csrf: string, demoUsers: { username: string; password: string }[], error?: string, username = ''): Html {
  return html`
    ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
    <form method="post" action="/login" class="stack">
      ${csrfField(csrf)}
      <label>Username <input name="username" value="${username}" autocomplete="username" required autofocus></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
      <button type="submit">Sign in</button>
    </form>
    <p class="hint">Demo users: ${demoUsers.map((u, i) => html`${i ? ', ' : ''}<code>${u.username}</code> / <code>${u.password}</code>`)}</p>`;
}

export function profilePage(user: User, signedInAt: string, fingerprint: string): Html {
  return html`
    <dl class="facts">
      <dt>Name</dt><dd id="name">${user.name}</dd>
      <dt>Username</dt><dd id="username">${user.username}</dd>
      <dt>Signed in at</dt><dd>${signedInAt}</dd>
      <dt>Session fingerprint</dt><dd><code>${fingerprint}</code></dd>
    </dl>
    <p class="hint">The fingerprint is a hash of the session ID (never show the ID itself).
      It changed when you signed in: an ID someone planted before sign-in is worthless after it.</p>`;
}

export interface CartLine {
  id: string;
  name: string;
  quantity: number;
}

export function cartPage(csrf: string, lines: CartLine[], catalogue: { id: string; name: string }[]): Html {
  const rows = lines.map(
    (line) => html`
      <li>
        <span>${line.name} × <strong>${line.quantity}</strong></span>
        <form method="post" action="/cart/remove">
          ${csrfField(csrf)}<input type="hidden" name="item" value="${line.id}">
          <button type="submit" class="secondary">Remove one</button>
        </form>
      </li>`,
  );
  return html`
    <ul class="cart" id="cart">${rows.length ? rows : html`<li class="empty">Your cart is empty.</li>`}</ul>
    <h2>Add an item</h2>
    <ul class="catalogue">
      ${catalogue.map(
        (item) => html`
          <li>
            <form method="post" action="/cart/add">
              ${csrfField(csrf)}<input type="hidden" name="item" value="${item.id}">
              <button type="submit">Add ${item.name}</button>
            </form>
          </li>`,
      )}
    </ul>
    <p class="hint">The cart is kept in the session: reload, come back later, or (with REDIS_URL) restart the server.</p>`;
}

export interface WizardData {
  team: string;
  plan: string;
  invite: string;
}

export const PLANS = ['Free', 'Team', 'Enterprise'];

export function wizardPage(csrf: string, step: number, data: WizardData, error?: string): Html {
  const back = html`<button type="submit" name="action" value="back" class="secondary" formnovalidate>Back</button>`;
  const steps: Record<number, Html> = {
    1: html`<label>Team name <input name="team" value="${data.team}" required autofocus></label>
      <div class="buttons"><button type="submit" name="action" value="next">Next</button></div>`,
    2: html`<fieldset><legend>Plan</legend>
        ${PLANS.map((plan) => html`<label class="inline"><input type="radio" name="plan" value="${plan}" required ${plan === data.plan ? html`checked` : ''}> ${plan}</label>`)}
      </fieldset>
      <div class="buttons">${back}<button type="submit" name="action" value="next">Next</button></div>`,
    3: html`<label>Invite a teammate (email) <input name="invite" type="email" value="${data.invite}" required autofocus></label>
      <div class="buttons">${back}<button type="submit" name="action" value="next">Next</button></div>`,
    4: html`<dl class="facts" id="summary">
        <dt>Team</dt><dd>${data.team}</dd>
        <dt>Plan</dt><dd>${data.plan}</dd>
        <dt>Invite</dt><dd>${data.invite}</dd>
      </dl>
      <div class="buttons">${back}<button type="submit" name="action" value="finish">Create team</button></div>`,
  };
  return html`
    <ol class="steps">
      ${['Team', 'Plan', 'Invite', 'Summary'].map((label, i) => html`<li class="${i + 1 === step ? 'current' : ''}">${label}</li>`)}
    </ol>
    ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
    <form method="post" action="/wizard" class="stack" id="wizard" data-step="${step}">
      ${csrfField(csrf)}
      ${steps[step]}
    </form>
    <p class="hint">Each step is saved in the session: reload, or open another tab, and you are where you left off.</p>`;
}

export function concurrencyPage(csrf: string, count: number): Html {
  return html`
    <p>The button sends five <code>POST /concurrency/increment</code> requests at the same time. Each handler
      reads the counter, waits a moment, and writes it back plus one. Without a lock they would all read the
      same value and four updates would be lost; with the session's write lock they run one after another.</p>
    <p class="counter">Counter: <output id="counter">${count}</output></p>
    <button type="button" id="fire" data-csrf="${csrf}">Send five requests at once</button>
    <p id="result" role="status" class="hint"></p>
    <script src="/assets/concurrency.js"></script>`;
}

export function errorPage(status: number, message: string): string {
  return layout(`${status} ${STATUS_CODES[status] ?? 'Error'}`, { user: undefined, csrf: undefined, flash: undefined }, html`
    <p class="error">${message}</p>
    <p><a href="/">Back to the start</a></p>`);
}
