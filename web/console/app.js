// The console shell: connection status, tabs, login, and the Echo tab. Chat, Command and Files
// live in their own modules and get the shared `app` object.
import { Connection, ServerError } from './proto.js';
import { el, formatBytes } from './util.js';
import { setupChat } from './chat.js';
import { setupCommand } from './command.js';
import { setupFiles } from './files.js';

const $ = (id) => document.getElementById(id);
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const conn = new Connection(`${scheme}://${location.host}/ws`);

const app = {
  conn,
  user: null,
  // Kept in memory only (never stored), to log in again after a reconnect.
  credentials: null,
  loginListeners: [],
  reconnectListeners: [],
  onLogin(fn) { this.loginListeners.push(fn); },
  onReconnect(fn) { this.reconnectListeners.push(fn); },
  showError,
  errorText(e) { return e instanceof ServerError ? e.message : String(e?.message || e); },
  // True from a (re)connect until its re-login has answered: the label says so.
  relogging: false,
  // True once the connection is up and, after a reconnect, logged in again. A request sent
  // before that would be refused: the server sees a new session with no login yet.
  ready: false,
  whenReady() {
    if (this.ready && conn.open) return Promise.resolve();
    return new Promise((resolve) => readyWaiters.push(resolve));
  },
};
const readyWaiters = [];
window.coserve = app;  // for the browser console and the end-to-end test

// ---- status and errors ---------------------------------------------------------------------

let bannerTimer;
function showError(message) {
  const banner = $('banner');
  banner.textContent = message;
  banner.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => { banner.hidden = true; }, 8000);
}

function renderStatus(state, detail = '') {
  if (state !== 'online') app.ready = false;
  // "online" only once a reconnected session is logged in again.
  const shown = state === 'online' && !app.ready ? 'connecting' : state;
  const pill = $('conn-status');
  pill.className = `pill pill-${shown}`;
  pill.textContent = shown === 'online' ? 'online'
    : shown === 'connecting' ? (app.relogging ? 'logging in again…' : 'connecting…')
    : `offline — ${detail}`;
  pill.title = detail || '';
  if (app.user) {
    $('user-status').textContent = shown === 'online' ? `logged in as ${app.user}` : `${app.user} — reconnecting…`;
  }
  if (shown === 'online') for (const resolve of readyWaiters.splice(0)) resolve();
}
conn.addEventListener('status', (e) => renderStatus(e.detail.state, e.detail.detail));
$('conn-status').addEventListener('click', () => conn.retryNow());

conn.addEventListener('open', async () => {
  const hello = conn.hello;
  if (hello) $('footer').textContent = `${hello.server} ${hello.version} · protocol ${hello.protocol}`;
  const ws = conn.ws;
  if (app.credentials) {
    app.relogging = true;
    renderStatus(conn.state);
    try {
      await login(app.credentials.user, app.credentials.password, true);
    } catch (e) {
      // A connection lost again meanwhile keeps the credentials for the next attempt.
      if (e.code !== 'disconnected') {
        app.credentials = null;
        setUser(null);
        showError(`Could not log in again after reconnecting: ${app.errorText(e)}`);
      }
    } finally {
      app.relogging = false;
    }
  }
  if (conn.ws !== ws) return;  // a newer connection runs its own 'open'
  app.ready = conn.open;
  renderStatus(conn.state);
  for (const fn of app.reconnectListeners) fn();
});

conn.addEventListener('push', (e) => {
  const head = e.detail.head;
  if (head.service === 'core' && head.event === 'shutdown') {
    showError(`Server: ${head.reason || 'shutting down'}; reconnecting when it is back`);
  } else if (head.ok === false && head.error) {
    showError(app.errorText(new ServerError(head.error.code, head.error.message)));
  }
});

// ---- tabs ----------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')].filter((t) => t.closest('.tabs'));
function selectTab(tab, focus = false) {
  for (const t of tabs) {
    const selected = t === tab;
    t.setAttribute('aria-selected', String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !selected;
  }
  if (focus) tab.focus();
  const name = tab.id.replace('tab-', '');
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  tab.dispatchEvent(new CustomEvent('shown', { bubbles: true }));
}
for (const tab of tabs) {
  tab.addEventListener('click', () => selectTab(tab));
  tab.addEventListener('keydown', (e) => {
    const i = tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length], true);
  });
}
const initial = tabs.find((t) => `#${t.id.replace('tab-', '')}` === location.hash);
if (initial) selectTab(initial);

// ---- login ---------------------------------------------------------------------------------

function setUser(user) {
  app.user = user;
  $('user-status').textContent = user ? `logged in as ${user}` : 'anonymous';
  $('logout').hidden = !user;
  for (const panel of document.querySelectorAll('.panel')) {
    const gate = panel.querySelector('.needs-login');
    const content = panel.querySelector('.when-logged-in');
    if (!gate || !content) continue;
    gate.hidden = !!user;
    content.hidden = !user;
  }
  for (const fn of app.loginListeners) fn(user);
}

async function login(user, password, silent = false) {
  const reply = await conn.request('auth', 'login', { user, password }).reply;
  app.credentials = { user, password };
  setUser(reply.user || user);
  if (!silent) $('banner').hidden = true;
}

for (const gate of document.querySelectorAll('.needs-login')) {
  const form = $('login-template').content.firstElementChild.cloneNode(true);
  gate.append(form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = form.querySelector('.error');
    error.textContent = '';
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await login(form.user.value.trim(), form.password.value);
      form.password.value = '';
    } catch (err) {
      error.textContent = app.errorText(err);
    } finally {
      button.disabled = false;
    }
  });
}

$('logout').addEventListener('click', async () => {
  app.credentials = null;
  try {
    await conn.request('auth', 'logout').reply;
  } catch { /* the session may be gone already */ }
  setUser(null);
});

// ---- echo ----------------------------------------------------------------------------------

$('echo-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('echo-text');
  const text = input.value;
  const binary = $('echo-binary').checked;
  const body = binary ? new TextEncoder().encode(text) : undefined;
  const row = el('tr', {}, el('td', { text }), el('td', { class: 'muted', text: 'waiting…' }), el('td'), el('td', { class: 'num' }));
  $('echo-results').prepend(row);
  input.select();
  const started = performance.now();
  try {
    const reply = await conn.request('echo', 'echo', { text }, body).reply;
    const rtt = performance.now() - started;
    row.cells[1].className = 'ok';
    row.cells[1].textContent = reply.text;
    row.cells[2].textContent = reply.body.length ? formatBytes(reply.body.length) : '—';
    row.cells[3].textContent = `${rtt.toFixed(1)} ms`;
  } catch (err) {
    row.cells[1].className = 'error';
    row.cells[1].textContent = app.errorText(err);
  }
  while ($('echo-results').rows.length > 50) $('echo-results').deleteRow(-1);
});

// ---- start ---------------------------------------------------------------------------------

setUser(null);
setupChat(app);
setupCommand(app);
setupFiles(app);
conn.connect();
// A light heartbeat: keeps the session from idling out while the page is open.
setInterval(() => { if (conn.state === 'online') conn.request('core', 'ping').reply.catch(() => {}); }, 60000);
