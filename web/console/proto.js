// The coserve protocol over a WebSocket (docs/protocol.md): text messages carry JSON-only
// frames, binary messages carry one whole frame (u32 json_len, u32 body_len big-endian, JSON,
// body). Requests are multiplexed by id; events and the final reply of a request go to its Call,
// frames without a known id are pushes.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeFrame(head, body) {
  const json = encoder.encode(JSON.stringify(head));
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(8 + json.length + bytes.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, json.length);
  view.setUint32(4, bytes.length);
  out.set(json, 8);
  out.set(bytes, 8 + json.length);
  return out;
}

export function decodeFrame(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 8) throw new Error('binary message shorter than a frame header');
  const jsonLen = view.getUint32(0);
  const bodyLen = view.getUint32(4);
  if (8 + jsonLen + bodyLen !== buffer.byteLength) throw new Error('frame lengths do not match');
  const head = JSON.parse(decoder.decode(new Uint8Array(buffer, 8, jsonLen)));
  return { head, body: new Uint8Array(buffer, 8 + jsonLen, bodyLen) };
}

// Human words for the closed list of error codes (docs/protocol.md).
const ERROR_TEXT = {
  bad_frame: 'The server could not read that message',
  bad_request: 'Invalid request',
  unknown_service: 'This server has no such service',
  unknown_op: 'This service has no such operation',
  unauthenticated: 'Please log in first',
  forbidden: 'Not allowed',
  not_found: 'Not found',
  exists: 'Already exists',
  not_empty: 'Directory is not empty',
  quota_exceeded: 'Your storage quota is full',
  checksum_mismatch: 'Checksum mismatch: the data was corrupted in transit',
  too_large: 'Too large',
  timeout: 'Timed out',
  busy: 'Busy, try again in a moment',
  cancelled: 'Cancelled',
  shutting_down: 'The server is shutting down',
  internal: 'Internal server error',
  disconnected: 'Not connected to the server',
};

export class ServerError extends Error {
  constructor(code, message, reply) {
    const base = ERROR_TEXT[code] || code;
    super(message && message !== base ? `${base}: ${message}` : base);
    this.code = code;
    this.reply = reply;
  }
}

// One request in flight: `reply` settles with the final answer ({ok:true,...} or a
// ServerError); `onEvent` sees each stream event ({head, body}).
export class Call {
  constructor(conn, id) {
    this.conn = conn;
    this.id = id;
    this.onEvent = null;
    this.done = false;
    this.reply = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
  }
  // A frame for this request (upload chunks, acks): {id, ...fields} + body.
  send(fields, body) {
    this.conn._sendFrame({ id: this.id, ...fields }, body);
  }
  cancel() {
    if (!this.done) this.conn.request('core', 'cancel', { target: this.id }).reply.catch(() => {});
  }
  _settle(frame) {
    this.done = true;
    const head = frame.head;
    if (head.ok) this._resolve({ ...head, body: frame.body });
    else this._reject(new ServerError(head.error?.code || 'internal', head.error?.message, head));
  }
}

// A connection that reconnects with back-off. Listeners: 'status' (state, detail), 'open'
// (after every (re)connect, once hello answered, just after the state turned 'online'),
// 'push' ({head, body}).
export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.state = 'connecting';
    this.nextId = 1;
    this.calls = new Map();
    this.retryMs = 500;
    this.hello = null;
    this.closedByUser = false;
  }

  connect() {
    this.closedByUser = false;
    this._setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._scheduleReconnect(String(e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = async () => {
      this.retryMs = 500;
      try {
        this.hello = await this.request('core', 'hello', { client: 'coserve-console' }).reply;
      } catch {
        this.hello = null;
      }
      this._setState('online');
      this.dispatchEvent(new CustomEvent('open'));
    };
    ws.onmessage = (event) => this._onMessage(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const call of this.calls.values()) {
        call.done = true;
        call._reject(new ServerError('disconnected'));
      }
      this.calls.clear();
      const why = event.code === 1001 ? 'server going away'
        : event.code === 1008 ? `closed by the server: ${event.reason || 'policy violation'}`
        : event.code === 1006 ? 'connection lost' : `closed (${event.code})`;
      if (this.closedByUser) this._setState('offline', 'disconnected');
      else this._scheduleReconnect(why);
    };
  }

  close() {
    this.closedByUser = true;
    this.ws?.close(1000);
  }

  _scheduleReconnect(why) {
    const delay = Math.round(this.retryMs * (0.75 + Math.random() * 0.5));
    this.retryMs = Math.min(this.retryMs * 2, 15000);
    this._setState('offline', `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.connect(), delay);
  }

  // True while the socket is open and hello has been answered.
  get open() {
    return this.state === 'online' && this.ws?.readyState === WebSocket.OPEN;
  }

  // A send found the socket closing before its close event: stop saying "online" now, so
  // nobody waits on a connection that is already gone (the close event reconnects).
  _noticeClosing() {
    if (this.state === 'online' && this.ws?.readyState !== WebSocket.OPEN) {
      this._setState('offline', 'connection closing');
    }
  }

  retryNow() {
    clearTimeout(this._timer);
    if (!this.ws) this.connect();
  }

  _setState(state, detail = '') {
    this.state = state;
    this.dispatchEvent(new CustomEvent('status', { detail: { state, detail } }));
  }

  // Sends a request; returns its Call. A body (Uint8Array) makes it a binary frame.
  request(service, op, fields = {}, body) {
    const id = this.nextId++;
    const call = new Call(this, id);
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this._noticeClosing();
      call.done = true;
      call._reject(new ServerError('disconnected'));
      call.reply.catch(() => {});
      return call;
    }
    this.calls.set(id, call);
    this._sendFrame({ id, service, op, ...fields }, body);
    return call;
  }

  _sendFrame(head, body) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this._noticeClosing();
      throw new ServerError('disconnected');
    }
    if (body && body.byteLength > 0) this.ws.send(encodeFrame(head, body));
    else this.ws.send(JSON.stringify(head));
  }

  // Bytes queued in the browser and not yet sent (uploads pace themselves on it).
  get buffered() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  _onMessage(data) {
    let frame;
    try {
      frame = typeof data === 'string'
        ? { head: JSON.parse(data), body: new Uint8Array(0) }
        : decodeFrame(data);
    } catch (e) {
      console.warn('coserve: unreadable message from server', e);
      return;
    }
    const id = frame.head.id;
    const call = id !== undefined && id !== null ? this.calls.get(id) : undefined;
    if (call) {
      if ('ok' in frame.head) {
        this.calls.delete(id);
        call._settle(frame);
      } else if (call.onEvent) {
        call.onEvent(frame);
      }
      return;
    }
    this.dispatchEvent(new CustomEvent('push', { detail: frame }));
  }
}
