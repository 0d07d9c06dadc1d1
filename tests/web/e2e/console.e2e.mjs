// End-to-end test of the browser console: starts the real coserve server, opens the console in
// a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) and clicks
// through Echo, Chat (with a second client on the framed TCP listener), Command and Files,
// asserting what the page shows. Screenshots of every step go to --artifacts; on failure the
// last screenshot and the server log are kept there.
//
//   node console.e2e.mjs --server build/bin/coserve [--artifacts DIR]
// Exit codes: 0 passed, 1 failed, 77 skipped (no chromium or no node_modules: run
// `apt-get install -y chromium` and `npm ci` in this folder).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) => {
  if (a.startsWith('--')) pairs.push([a.slice(2), all[i + 1]]);
  return pairs;
}, []));
const serverBin = path.resolve(args.server || path.join(here, '../../../build/bin/coserve'));
const artifacts = path.resolve(args.artifacts || path.join(os.tmpdir(), 'coserve-e2e'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function skip(why) {
  console.log(`SKIPPED: ${why}`);
  process.exit(77);
}
if (!fs.existsSync(chromiumPath)) skip(`${chromiumPath} not found (apt-get install -y chromium)`);
if (!fs.existsSync(path.join(here, 'node_modules', 'playwright-core'))) {
  skip(`playwright-core not installed (cd ${here} && npm ci)`);
}
if (!fs.existsSync(serverBin)) skip(`server binary ${serverBin} not found (build it first)`);
const { chromium } = await import('playwright-core');

fs.mkdirSync(artifacts, { recursive: true });
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coserve-e2e-'));
const USER = 'alice';
const PASSWORD = 'e2e-password-7';
const results = [];
let server;
let browser;
let page;
let shot = 0;

function log(...m) { console.log(`[e2e ${new Date().toISOString().slice(11, 23)}]`, ...m); }

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    log(`ok   ${name} (${Date.now() - started} ms)`);
    if (page) await page.screenshot({ path: path.join(artifacts, `${String(++shot).padStart(2, '0')}-${name.replace(/\W+/g, '-')}.png`) });
  } catch (e) {
    results.push({ name, ok: false, error: e });
    log(`FAIL ${name}: ${e.message}`);
    if (page) {
      const file = path.join(artifacts, `FAILED-${name.replace(/\W+/g, '-')}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      log(`screenshot: ${file}`);
    }
    throw e;
  }
}

// ---- the server -------------------------------------------------------------------------------

function startServer() {
  const add = spawnSync(serverBin, ['user', 'add', USER, '--password-stdin', '--data-dir', dataDir],
    { input: `${PASSWORD}\n`, encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`coserve user add failed: ${add.stderr}`);
  const ready = path.join(dataDir, 'ready.json');
  const logFile = fs.openSync(path.join(dataDir, 'server.log'), 'w');
  server = spawn(serverBin, [
    '--data-dir', dataDir, '--ready-file', ready,
    '--set', 'server.workers=2',
    '--set', 'listeners.framed=127.0.0.1:0', '--set', 'listeners.http=127.0.0.1:0',
    '--set', 'listeners.echo_tcp=', '--set', 'listeners.echo_udp=', '--set', 'listeners.echo_unix=',
    '--set', 'listeners.echo_unix_dgram=', '--set', 'listeners.chat_line=127.0.0.1:0',
  ], { stdio: ['ignore', logFile, logFile] });
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 20000;
    const poll = () => {
      if (server.exitCode !== null) return reject(new Error(`server exited early:\n${serverLog()}`));
      if (fs.existsSync(ready)) return resolve(JSON.parse(fs.readFileSync(ready, 'utf8')));
      if (Date.now() > deadline) return reject(new Error('server not ready in 20 s'));
      setTimeout(poll, 50);
    };
    poll();
  });
}

function serverLog() {
  try { return fs.readFileSync(path.join(dataDir, 'server.log'), 'utf8'); } catch { return ''; }
}

// ---- a second client on the framed TCP listener (the protocol in 30 lines) ---------------------

class TcpClient {
  constructor(address) {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), address.slice(address.lastIndexOf(':') + 1)];
    this.socket = net.connect(Number(port), host);
    this.buffer = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.nextId = 1;
    this.socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 8) {
        const jsonLen = this.buffer.readUInt32BE(0);
        const bodyLen = this.buffer.readUInt32BE(4);
        if (this.buffer.length < 8 + jsonLen + bodyLen) break;
        const head = JSON.parse(this.buffer.subarray(8, 8 + jsonLen).toString('utf8'));
        this.buffer = this.buffer.subarray(8 + jsonLen + bodyLen);
        this.frames.push(head);
        for (const w of this.waiters.splice(0)) w();
      }
    });
  }
  ready() { return new Promise((resolve, reject) => { this.socket.once('connect', resolve); this.socket.once('error', reject); }); }
  send(head) {
    const json = Buffer.from(JSON.stringify(head));
    const header = Buffer.alloc(8);
    header.writeUInt32BE(json.length, 0);
    header.writeUInt32BE(0, 4);
    this.socket.write(Buffer.concat([header, json]));
  }
  async waitFor(pred, what, timeout = 10000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`TCP client: no ${what} within ${timeout} ms`);
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, 100); });
    }
  }
  async call(service, op, fields = {}) {
    const id = this.nextId++;
    this.send({ id, service, op, ...fields });
    const reply = await this.waitFor((f) => f.id === id && 'ok' in f, `reply to ${service}.${op}`);
    if (!reply.ok) throw new Error(`${service}.${op}: ${JSON.stringify(reply.error)}`);
    return reply;
  }
  close() { this.socket.destroy(); }
}

// ---- helpers ----------------------------------------------------------------------------------

async function expectText(locator, text, timeout = 10000) {
  await locator.filter({ hasText: text }).first().waitFor({ timeout });
}

// ---- the test ---------------------------------------------------------------------------------

let exitCode = 0;
let tcp;
try {
  const bound = await startServer();
  const base = `http://${bound.http}`;
  log(`server ready: http ${bound.http}, framed ${bound.framed}`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });

  await step('page loads and connects', async () => {
    await page.goto(`${base}/`);
    await page.locator('#conn-status.pill-online').waitFor({ timeout: 10000 });
    if ((await page.title()) !== 'coserve console') throw new Error(`title is ${await page.title()}`);
    await expectText(page.locator('#footer'), 'coserve');
  });

  await step('echo', async () => {
    await page.fill('#echo-text', 'hello e2e');
    await page.press('#echo-text', 'Enter');
    const row = page.locator('#echo-results tr').first();
    await expectText(row.locator('td.ok'), 'hello e2e');
    await expectText(row.locator('td.num'), 'ms');
    await page.check('#echo-binary');
    await page.fill('#echo-text', 'with a body');
    await page.click('#echo-form button[type=submit]');
    await expectText(page.locator('#echo-results tr').first().locator('td:nth-child(3)'), '11 B');
  });

  await step('chat with a TCP client', async () => {
    await page.click('#tab-chat');
    await page.fill('#chat-nick', 'browser');
    await page.fill('#chat-room', 'e2e');
    await page.click('#chat-join button[type=submit]');
    await expectText(page.locator('#chat-log li'), 'you joined e2e as browser');

    tcp = new TcpClient(bound.framed);
    await tcp.ready();
    await tcp.call('chat', 'join', { room: 'e2e', nick: 'tcpbot' });
    await expectText(page.locator('#chat-log li.system'), 'tcpbot joined');
    await expectText(page.locator('#chat-who li'), 'tcpbot');

    await tcp.call('chat', 'say', { room: 'e2e', text: 'hello from tcp' });
    await expectText(page.locator('#chat-log li'), 'hello from tcp');

    await page.fill('#chat-text', 'hi from the browser');
    await page.press('#chat-text', 'Enter');
    const heard = await tcp.waitFor((f) => f.event === 'message' && f.from === 'browser', 'chat message from the browser');
    if (heard.text !== 'hi from the browser') throw new Error(`TCP client heard ${heard.text}`);
    await expectText(page.locator('#chat-log li.mine'), 'hi from the browser');

    // A private message, by clicking the member in the list.
    await page.locator('#chat-who button', { hasText: 'tcpbot' }).click();
    await page.keyboard.type('psst');
    await page.press('#chat-text', 'Enter');
    const pm = await tcp.waitFor((f) => f.event === 'message' && f.pm, 'private message');
    if (pm.text !== 'psst') throw new Error(`pm text ${pm.text}`);
    await expectText(page.locator('#chat-rooms li'), 'e2e');
  });

  await step('command: login, run, cancel', async () => {
    await page.click('#tab-command');
    const form = page.locator('#panel-command form.login');
    await form.locator('input[name=user]').fill(USER);
    await form.locator('input[name=password]').fill(PASSWORD);
    await form.locator('button[type=submit]').click();
    await page.locator('#cmd-line').waitFor({ state: 'visible', timeout: 10000 });
    await expectText(page.locator('#user-status'), `logged in as ${USER}`);

    await page.fill('#cmd-line', 'echo hello-from-e2e');
    await page.press('#cmd-line', 'Enter');
    await expectText(page.locator('#cmd-output'), 'hello-from-e2e');
    await expectText(page.locator('#cmd-exit'), 'exit code 0');

    await page.fill('#cmd-line', 'ls /no-such-dir-e2e');
    await page.press('#cmd-line', 'Enter');
    await expectText(page.locator('#cmd-output .stderr'), 'no-such-dir-e2e');
    await expectText(page.locator('#cmd-exit.error'), 'exit code');

    await page.fill('#cmd-line', 'sleep 30');
    await page.press('#cmd-line', 'Enter');
    await expectText(page.locator('#cmd-exit'), 'running');
    await page.click('#cmd-cancel');
    await page.locator('#cmd-run:not([disabled])').waitFor({ timeout: 10000 });
    const exit = await page.locator('#cmd-exit').textContent();
    if (!/cancel|signal/i.test(exit)) throw new Error(`after cancel the status says: ${exit}`);
  });

  const uploadBytes = Buffer.alloc(600 * 1024 + 77);
  for (let i = 0; i < uploadBytes.length; i++) uploadBytes[i] = (i * 131 + (i >> 9)) & 255;
  const uploadSha = createHash('sha256').update(uploadBytes).digest('hex');

  await step('files: mkdir, upload, download', async () => {
    await page.click('#tab-files');
    await page.locator('#files-list').waitFor({ timeout: 10000 });
    await page.fill('#files-dirname', 'docs');
    await page.press('#files-dirname', 'Enter');
    await expectText(page.locator('#files-list td.name'), 'docs');

    await page.setInputFiles('#files-upload', { name: 'e2e.bin', mimeType: 'application/octet-stream', buffer: uploadBytes });
    await expectText(page.locator('#files-transfers .state.ok'), 'SHA-256 verified', 20000);
    await expectText(page.locator('#files-list td.name'), 'e2e.bin');
    const onDisk = fs.readFileSync(path.join(dataDir, 'homes', USER, 'e2e.bin'));
    if (createHash('sha256').update(onDisk).digest('hex') !== uploadSha) throw new Error('uploaded file differs on disk');

    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 20000 }),
      page.locator('#files-list tr[data-name="e2e.bin"] button', { hasText: 'Download' }).click(),
    ]);
    const saved = fs.readFileSync(await download.path());
    if (createHash('sha256').update(saved).digest('hex') !== uploadSha) throw new Error('downloaded bytes differ');
    await expectText(page.locator('#files-transfers .state.ok'), 'downloaded');

    await page.locator('#files-list td.name button', { hasText: 'docs' }).click();
    await expectText(page.locator('#files-crumbs'), 'docs');
    await expectText(page.locator('#files-list td'), 'This folder is empty.');
    await page.locator('#files-crumbs button', { hasText: 'home' }).click();
    await expectText(page.locator('#files-list td.name'), 'e2e.bin');
  });

  await step('files: an interrupted upload resumes after the reconnect', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 5);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 12)) & 255;
    const bigSha = createHash('sha256').update(big).digest('hex');
    // Drop the WebSocket after the third data chunk has been handed to it.
    await page.evaluate(() => {
      const conn = window.coserve.conn;
      const send = conn._sendFrame.bind(conn);
      let chunks = 0;
      conn._sendFrame = (head, body) => {
        send(head, body);
        if (head.event === 'data' && ++chunks === 3) {
          conn._sendFrame = send;
          conn.ws.close(4000, 'e2e: cut the line');
        }
      };
    });
    await page.setInputFiles('#files-upload', { name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
    const row = page.locator('#files-transfers .transfer', { hasText: 'big.bin' }).first();
    await expectText(row.locator('.state.error'), 'Not connected', 20000);
    // The console reconnects by itself and logs in again.
    await page.locator('#conn-status.pill-online').waitFor({ timeout: 15000 });
    await expectText(page.locator('#user-status'), `logged in as ${USER}`);
    await row.locator('button', { hasText: 'Resume' }).click();
    await expectText(row.locator('.state.ok'), 'resumed at', 20000);
    const onDisk = fs.readFileSync(path.join(dataDir, 'homes', USER, 'big.bin'));
    if (createHash('sha256').update(onDisk).digest('hex') !== bigSha) throw new Error('resumed upload differs on disk');
  });

  await step('no errors in the page', async () => {
    const real = pageErrors.filter((e) => !/favicon/.test(e));
    if (real.length) throw new Error(`page errors:\n${real.join('\n')}`);
  });
} catch (e) {
  exitCode = 1;
  if (!results.some((r) => !r.ok)) log(`FAIL setup: ${e.stack || e}`);
} finally {
  tcp?.close();
  await browser?.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => { server.once('exit', r); setTimeout(r, 10000); });
  }
  if (exitCode) {
    fs.writeFileSync(path.join(artifacts, 'server.log'), serverLog());
    log(`server log saved to ${path.join(artifacts, 'server.log')}`);
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
}
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(exitCode);
