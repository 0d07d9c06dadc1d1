// The Command tab: services/command (run {line} streaming stdout/stderr events, cancel via
// core.cancel, cd/pwd). Login required.
import { el, scrollToEnd } from './util.js';

const MAX_OUTPUT = 1 << 20;  // characters kept in the terminal view

export function setupCommand(app) {
  const { conn } = app;
  const $ = (id) => document.getElementById(id);
  const output = $('cmd-output');
  const history = [];
  let historyPos = 0;
  let running = null;
  let shown = 0;

  function append(text, cls) {
    const follow = scrollToEnd(output);
    const last = output.lastChild;
    if (last && last.nodeType === 1 && last.className === cls) last.textContent += text;
    else output.append(el('span', { class: cls }, text));
    shown += text.length;
    while (shown > MAX_OUTPUT && output.firstChild) {
      shown -= output.firstChild.textContent.length;
      output.firstChild.remove();
    }
    follow();
  }

  async function pwd() {
    try {
      const reply = await conn.request('command', 'pwd').reply;
      $('cmd-cwd').textContent = `${reply.cwd} $`;
    } catch { /* shown on run */ }
  }

  function setRunning(call) {
    running = call;
    $('cmd-run').disabled = !!call;
    $('cmd-cancel').disabled = !call;
  }

  $('cmd-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (running) return;
    const line = $('cmd-line').value.trim();
    if (!line) return;
    history.push(line);
    historyPos = history.length;
    $('cmd-line').value = '';
    append(`${$('cmd-cwd').textContent} ${line}\n`, 'cmd');
    $('cmd-exit').textContent = 'running…';
    const cd = line.match(/^cd(?:\s+(.*))?$/);
    if (cd) {
      try {
        const reply = await conn.request('command', 'cd', { path: cd[1]?.trim() || '/' }).reply;
        $('cmd-cwd').textContent = `${reply.cwd} $`;
        $('cmd-exit').textContent = '';
      } catch (err) {
        append(`cd: ${app.errorText(err)}\n`, 'stderr');
        $('cmd-exit').textContent = '';
      }
      return;
    }
    const call = conn.request('command', 'run', { line });
    setRunning(call);
    const decoder = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    call.onEvent = ({ head, body }) => {
      if (head.event === 'stdout' || head.event === 'stderr') {
        append(decoder[head.event].decode(body, { stream: true }), head.event);
      } else if (head.event === 'started') {
        $('cmd-exit').textContent = `running (pid ${head.pid})…`;
      }
    };
    try {
      const reply = await call.reply;
      const how = reply.signal !== undefined && reply.signal !== null
        ? `killed by signal ${reply.signal_name || reply.signal}` : `exit code ${reply.exit_code}`;
      $('cmd-exit').textContent = `${how} · ${reply.duration_ms} ms${reply.truncated ? ' · output truncated' : ''}`;
      $('cmd-exit').className = `exit ${reply.exit_code === 0 ? 'ok' : 'error'}`;
    } catch (err) {
      const cancelled = err.code === 'cancelled';
      $('cmd-exit').textContent = cancelled ? `cancelled — ${err.reply?.error?.message || 'stopped'}` : app.errorText(err);
      $('cmd-exit').className = `exit ${cancelled ? 'muted' : 'error'}`;
    } finally {
      setRunning(null);
      $('cmd-line').focus();
    }
  });

  $('cmd-cancel').addEventListener('click', () => running?.cancel());
  $('cmd-clear').addEventListener('click', () => { output.replaceChildren(); shown = 0; $('cmd-exit').textContent = ''; });
  $('cmd-line').addEventListener('keydown', (e) => {
    if (e.key === 'ArrowUp' && historyPos > 0) {
      $('cmd-line').value = history[--historyPos];
      e.preventDefault();
    } else if (e.key === 'ArrowDown' && historyPos < history.length) {
      $('cmd-line').value = history[++historyPos] || '';
      e.preventDefault();
    } else if (e.key === 'c' && e.ctrlKey && running) {
      running.cancel();
      e.preventDefault();
    }
  });

  app.onLogin((user) => { if (user) pwd(); });
  document.getElementById('tab-command').addEventListener('shown', () => {
    if (app.user) $('cmd-line').focus();
  });
}
