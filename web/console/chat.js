// The Chat tab: services/chat (join, leave, say, pm, who, rooms, history; pushes message,
// joined, left, dropped). Rooms are shared with coserve-cli and line-mode (nc) users.
import { el, formatClock, scrollToEnd } from './util.js';

const MAX_LINES = 500;

export function setupChat(app) {
  const { conn } = app;
  const $ = (id) => document.getElementById(id);
  const rooms = new Map();  // room → { lines: [{...}], unread: bool }
  let current = null;
  let nick = localStorage.getItem('coserve.nick') || '';
  $('chat-nick').value = nick;

  function roomState(room) {
    if (!rooms.has(room)) rooms.set(room, { lines: [], unread: false });
    return rooms.get(room);
  }

  function lineNode(line) {
    const ts = el('span', { class: 'ts', text: formatClock(line.ts) });
    if (line.kind === 'system') return el('li', { class: 'system' }, ts, line.text);
    const cls = [line.pm ? 'pm' : '', line.from === nick ? 'mine' : ''].join(' ').trim();
    const from = line.pm ? (line.to ? `${line.from} → ${line.to}` : `${line.from} (private)`) : line.from;
    return el('li', { class: cls || undefined }, ts, el('span', { class: 'from', text: from }), line.text);
  }

  function addLine(room, line) {
    const state = roomState(room);
    state.lines.push(line);
    if (state.lines.length > MAX_LINES) state.lines.shift();
    if (room === current) {
      const log = $('chat-log');
      const follow = scrollToEnd(log);
      log.append(lineNode(line));
      while (log.children.length > MAX_LINES) log.firstElementChild.remove();
      follow();
    } else {
      state.unread = true;
      renderJoined();
    }
  }

  function renderJoined() {
    const bar = $('chat-joined');
    bar.replaceChildren(...[...rooms.keys()].map((room) => el('button', {
      type: 'button', role: 'tab', 'aria-selected': String(room === current),
      class: rooms.get(room).unread ? 'unread' : undefined,
      onclick: () => show(room),
    }, room)));
    const joined = current !== null;
    $('chat-text').disabled = !joined;
    $('chat-send').disabled = !joined;
    $('chat-leave').disabled = !joined || current.startsWith('@');
  }

  function show(room) {
    current = room;
    const state = roomState(room);
    state.unread = false;
    const log = $('chat-log');
    log.replaceChildren(...state.lines.map(lineNode));
    log.scrollTop = log.scrollHeight;
    renderJoined();
    refreshWho();
    $('chat-text').focus();
  }

  async function refreshWho() {
    const list = $('chat-who');
    $('chat-here-room').textContent = current && !current.startsWith('@') ? current : '';
    if (!current || current.startsWith('@')) { list.replaceChildren(); return; }
    try {
      const reply = await conn.request('chat', 'who', { room: current }).reply;
      renderWho(reply.members || []);
    } catch (e) {
      list.replaceChildren(el('li', { class: 'error', text: app.errorText(e) }));
    }
  }

  function renderWho(members) {
    $('chat-who').replaceChildren(...members.map((m) => el('li', {},
      m === nick ? el('span', { text: `${m} (you)` })
        : el('button', { type: 'button', title: 'Send a private message', onclick: () => {
          $('chat-text').value = `/msg ${m} `;
          $('chat-text').focus();
        } }, m))));
  }

  async function refreshRooms() {
    try {
      const reply = await conn.request('chat', 'rooms').reply;
      $('chat-rooms').replaceChildren(...(reply.rooms || []).map((r) => el('li', {},
        el('button', { type: 'button', onclick: () => join(r.room) }, r.room),
        el('span', { class: 'muted', text: String(r.members) }))));
    } catch (e) {
      $('chat-rooms').replaceChildren(el('li', { class: 'error', text: app.errorText(e) }));
    }
  }

  async function join(room, quiet = false) {
    nick = $('chat-nick').value.trim();
    if (!nick) { $('chat-nick').focus(); return; }
    localStorage.setItem('coserve.nick', nick);
    try {
      const reply = await conn.request('chat', 'join', { room, nick }).reply;
      nick = reply.nick || nick;
      const state = roomState(room);
      if (!reply.already && !quiet) {
        // Catch up on what was said before we came in.
        try {
          const history = await conn.request('chat', 'history', { room, limit: 50 }).reply;
          const seen = new Set(state.lines.map((l) => l.seq).filter((s) => s !== undefined));
          for (const m of history.messages || []) {
            if (!seen.has(m.seq)) state.lines.push({ kind: 'message', from: m.from, text: m.text, ts: m.ts, seq: m.seq });
          }
        } catch { /* history is a nicety */ }
        state.lines.push({ kind: 'system', text: `you joined ${room} as ${nick}`, ts: Date.now() });
      }
      show(room);
      renderWho(reply.members || []);
      refreshRooms();
    } catch (e) {
      app.showError(`Could not join ${room}: ${app.errorText(e)}`);
    }
  }

  $('chat-join').addEventListener('submit', (e) => {
    e.preventDefault();
    join($('chat-room').value.trim());
  });
  $('chat-refresh').addEventListener('click', refreshRooms);

  $('chat-leave').addEventListener('click', async () => {
    if (!current) return;
    const room = current;
    try {
      await conn.request('chat', 'leave', { room }).reply;
    } catch (e) {
      app.showError(app.errorText(e));
    }
    rooms.delete(room);
    const next = rooms.keys().next();
    current = null;
    if (!next.done) show(next.value);
    else { $('chat-log').replaceChildren(); renderJoined(); refreshWho(); }
    refreshRooms();
  });

  $('chat-say').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('chat-text');
    const text = input.value;
    if (!text.trim() || !current) return;
    const pm = text.match(/^\/msg\s+(\S+)\s+([\s\S]+)$/);
    input.value = '';
    try {
      if (pm) {
        const reply = await conn.request('chat', 'pm', { to: pm[1], text: pm[2] }).reply;
        addLine(current, { kind: 'message', pm: true, from: nick, to: pm[1], text: pm[2], ts: reply.ts });
      } else if (!current.startsWith('@')) {
        await conn.request('chat', 'say', { room: current, text }).reply;
      }
    } catch (err) {
      input.value = text;
      app.showError(app.errorText(err));
    }
  });

  conn.addEventListener('push', (e) => {
    const head = e.detail.head;
    if (head.service !== 'chat') return;
    if (head.event === 'message') {
      if (head.pm) {
        const room = current || '@private';
        addLine(room, { kind: 'message', pm: true, from: head.from, text: head.text, ts: head.ts });
        if (!current) show(room);
      } else {
        addLine(head.room, { kind: 'message', from: head.from, text: head.text, ts: head.ts, seq: head.seq });
      }
    } else if (head.event === 'joined' || head.event === 'left') {
      const verb = head.event === 'joined' ? 'joined' : 'left';
      addLine(head.room, { kind: 'system', text: `${head.nick} ${verb}${head.reason ? ` (${head.reason})` : ''}`, ts: Date.now() });
      if (head.room === current) refreshWho();
      refreshRooms();
    } else if (head.event === 'dropped') {
      app.showError(`Chat dropped this connection: ${head.reason || 'too slow'}`);
    }
  });

  // After a reconnect the server has forgotten us: join the same rooms again.
  app.onReconnect(() => {
    refreshRooms();
    for (const room of rooms.keys()) if (!room.startsWith('@')) join(room, true);
  });
  document.getElementById('tab-chat').addEventListener('shown', () => {
    refreshRooms();
    if (!nick) $('chat-nick').focus();
  });
  renderJoined();
}
