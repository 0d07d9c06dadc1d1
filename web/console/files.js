// The Files tab: services/files (ls, cd, mkdir, rm, mv, quota, put with credit and resume, get
// with SHA-256 check). Login required. Paths are absolute inside the user's home ("/").
import { el, formatBytes, formatDate } from './util.js';
import { Sha256, sha256OfBlob } from './sha256.js';

const CHUNK = 256 * 1024;          // upload data frame body
const MAX_BUFFERED = 2 * CHUNK;    // bytes queued in the browser before we wait

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function setupFiles(app) {
  const { conn } = app;
  const $ = (id) => document.getElementById(id);
  let cwd = '/';

  const join = (dir, name) => (dir.endsWith('/') ? dir : `${dir}/`) + name;

  function renderCrumbs() {
    const parts = cwd.split('/').filter(Boolean);
    const nodes = [el('button', { type: 'button', title: 'Your home folder', onclick: () => cd('/') }, 'home')];
    let path = '';
    for (const part of parts) {
      path += `/${part}`;
      const target = path;
      nodes.push(el('span', { class: 'sep', text: '/' }), el('button', { type: 'button', onclick: () => cd(target) }, part));
    }
    $('files-crumbs').replaceChildren(...nodes);
  }

  async function refreshQuota() {
    try {
      const q = await conn.request('files', 'quota').reply;
      $('files-quota').textContent = q.limit
        ? `${formatBytes(q.used)} of ${formatBytes(q.limit)} used`
        : `${formatBytes(q.used)} used`;
    } catch { $('files-quota').textContent = ''; }
  }

  async function refresh() {
    renderCrumbs();
    const body = $('files-list');
    try {
      const reply = await conn.request('files', 'ls', { path: cwd }).reply;
      const entries = [...(reply.entries || [])].sort((a, b) =>
        (a.type === 'dir' ? 0 : 1) - (b.type === 'dir' ? 0 : 1) || a.name.localeCompare(b.name));
      const rows = entries.map(entryRow);
      if (cwd !== '/') {
        const up = cwd.replace(/\/[^/]+\/?$/, '') || '/';
        rows.unshift(el('tr', {}, el('td', { class: 'name' }, el('button', { type: 'button', class: 'dir', onclick: () => cd(up) }, '..')), el('td'), el('td'), el('td')));
      }
      if (!entries.length) rows.push(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'This folder is empty.' })));
      body.replaceChildren(...rows);
    } catch (e) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'error', text: app.errorText(e) })));
    }
    refreshQuota();
  }

  function entryRow(entry) {
    const path = join(cwd, entry.name);
    const isDir = entry.type === 'dir';
    const name = isDir
      ? el('button', { type: 'button', class: 'dir', onclick: () => cd(path) }, entry.name)
      : el('button', { type: 'button', class: 'file', title: 'Download', onclick: () => download(path, entry.size) }, entry.name);
    return el('tr', { 'data-name': entry.name },
      el('td', { class: 'name' }, name),
      el('td', { class: 'num', text: isDir ? '' : formatBytes(entry.size) }),
      el('td', { class: 'muted', text: formatDate(entry.mtime) }),
      el('td', { class: 'actions' },
        isDir ? null : el('button', { type: 'button', class: 'link', onclick: () => download(path, entry.size) }, 'Download'),
        el('button', { type: 'button', class: 'link', onclick: () => rename(path, entry.name) }, 'Rename'),
        el('button', { type: 'button', class: 'link danger', onclick: () => remove(path, entry.name, isDir) }, 'Delete')));
  }

  async function cd(path) {
    try {
      const reply = await conn.request('files', 'cd', { path }).reply;
      cwd = reply.cwd || path;
    } catch (e) {
      app.showError(app.errorText(e));
    }
    refresh();
  }

  async function rename(path, name) {
    const to = prompt(`Rename or move "${name}" to:`, name);
    if (!to || to === name) return;
    try {
      await conn.request('files', 'mv', { from: path, to: to.startsWith('/') ? to : join(cwd, to) }).reply;
    } catch (e) {
      app.showError(app.errorText(e));
    }
    refresh();
  }

  async function remove(path, name, isDir) {
    if (!confirm(`Delete "${name}"${isDir ? ' and everything in it' : ''}?`)) return;
    try {
      await conn.request('files', 'rm', { path, recursive: isDir }).reply;
    } catch (e) {
      app.showError(app.errorText(e));
    }
    refresh();
  }

  $('files-mkdir').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('files-dirname').value.trim();
    if (!name) return;
    try {
      await conn.request('files', 'mkdir', { path: name.startsWith('/') ? name : join(cwd, name) }).reply;
      $('files-dirname').value = '';
    } catch (err) {
      app.showError(app.errorText(err));
    }
    refresh();
  });
  $('files-refresh').addEventListener('click', refresh);

  // ---- transfers --------------------------------------------------------------------------

  function transferRow(label) {
    const bar = el('progress', { max: 1, value: 0 });
    const state = el('span', { class: 'state muted', text: 'starting…' });
    const actions = el('span');
    const row = el('div', { class: 'transfer' }, el('span', { text: label }), bar, state, actions);
    $('files-transfers').prepend(row);
    return {
      row,
      progress(done, total, what) {
        bar.max = Math.max(total, 1);
        bar.value = done;
        state.textContent = `${what} ${total ? Math.floor((done / total) * 100) : 100}% · ${formatBytes(done)}`;
      },
      finish(text, ok) {
        bar.value = bar.max;
        state.textContent = text;
        state.className = `state ${ok ? 'ok' : 'error'}`;
        actions.replaceChildren(el('button', { type: 'button', class: 'link', onclick: () => row.remove() }, 'dismiss'));
      },
      action(label, fn) {
        actions.replaceChildren(el('button', { type: 'button', class: 'link', onclick: fn }, label));
      },
    };
  }

  async function upload(file, dir, ui = transferRow(`⬆ ${file.name}`)) {
    const path = join(dir, file.name);
    try {
      ui.progress(0, file.size, 'hashing');
      const sha256 = await sha256OfBlob(file, (done, total) => ui.progress(done, total, 'hashing'));
      // After hashing, which can take long enough for the connection to drop and come back.
      await app.whenReady();
      const call = conn.request('files', 'put', { path, size: file.size, sha256, overwrite: true });
      let granted = 0;
      let first = true;
      let wake = null;
      call.onEvent = ({ head }) => {
        if (head.event !== 'credit') return;
        if (first) { granted = head.offset + head.bytes; first = false; call.startAt = head.offset; call.resumed = head.resumed; }
        else granted += head.bytes;
        wake?.();
      };
      const failed = call.reply.then(() => null, (e) => e);
      // Wait for the first credit: it says where to start (a resumed upload starts later).
      while (first && !call.done) await new Promise((r) => { wake = r; failed.then(r); });
      let offset = call.startAt ?? 0;
      while (offset < file.size && !call.done) {
        if (offset >= granted || conn.buffered > MAX_BUFFERED) {
          await Promise.race([new Promise((r) => { wake = r; }), sleep(20), failed]);
          continue;
        }
        const n = Math.min(CHUNK, granted - offset, file.size - offset);
        const bytes = new Uint8Array(await file.slice(offset, offset + n).arrayBuffer());
        call.send({ event: 'data' }, bytes);
        offset += n;
        ui.progress(offset, file.size, call.resumed ? 'resumed' : 'uploading');
      }
      if (!call.done) call.send({ event: 'end' });
      const reply = await call.reply;
      ui.finish(`uploaded ${formatBytes(reply.size)} · SHA-256 verified${reply.resumed_from ? ` · resumed at ${formatBytes(reply.resumed_from)}` : ''}`, true);
    } catch (e) {
      ui.finish(app.errorText(e), false);
      ui.action('Resume', () => upload(file, dir, ui));
    }
    if (dir === cwd) refresh();
  }

  async function download(path, size) {
    const name = path.split('/').pop();
    const ui = transferRow(`⬇ ${name}`);
    const chunks = [];
    const hash = new Sha256();
    let received = 0;
    try {
      const call = conn.request('files', 'get', { path, offset: 0 });
      call.onEvent = ({ head, body }) => {
        if (head.event !== 'data') return;
        const copy = body.slice();
        chunks.push(copy);
        hash.update(copy);
        received += copy.length;
        ui.progress(received, size || received, 'downloading');
      };
      const reply = await call.reply;
      const actual = hash.hex();
      if (actual !== reply.sha256) throw new Error(`SHA-256 mismatch: got ${actual}, server says ${reply.sha256}`);
      const url = URL.createObjectURL(new Blob(chunks));
      const link = el('a', { href: url, download: name, text: 'save again' });
      document.body.append(link);
      link.click();
      link.remove();
      ui.finish(`downloaded ${formatBytes(received)} · SHA-256 verified`, true);
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      ui.finish(app.errorText(e), false);
    }
  }

  $('files-upload').addEventListener('change', async (e) => {
    const dir = cwd;
    const files = [...e.target.files];
    e.target.value = '';
    for (const file of files) await upload(file, dir);
  });

  app.onLogin((user) => { if (user) { cwd = '/'; refresh(); } });
  app.onReconnect(() => { if (app.user) refresh(); });
  document.getElementById('tab-files').addEventListener('shown', () => { if (app.user) refresh(); });
  app.files = { refresh, upload, download, cd };
}
