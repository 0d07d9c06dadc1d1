// Node.js baseline of the ws-echo benchmark: the npm package `ws`, every message echoed back
// with the same type. `node ws_echo_server.js [PORT]` prints the bound port (0: kernel picks).
// bench/run.sh installs `ws` under build/ and points NODE_PATH at it.
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2] || 0), perMessageDeflate: false });
wss.on('listening', () => console.log(wss.address().port));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});
process.on('SIGTERM', () => process.exit(0));
