// One socket.io client (the real `socket.io-client` from npm, as the original tutorial's
// frontend uses it) for tests/api/socketio.rs, which starts the server and runs one of these
// per client:
//
//   node tests/browser/socketio.mjs <url> [<options as JSON>]
//
// It connects with `io(url, options)` (no options: the client's defaults, polling first
// then the upgrade to WebSocket) and reports everything it sees as one JSON object per line
// on stdout, in the order it happened:
//
//   {"type":"connect","id":…,"transport":"polling"|"websocket"}
//   {"type":"upgrade","transport":"websocket"}
//   {"type":"event","event":<name>,"args":[…]}
//   {"type":"ack","ref":<ref>,"args":[…]}       (the server called the ack callback)
//   {"type":"ack_error","ref":<ref>,"message":…} (no ack in time, or the socket went)
//   {"type":"connect_error","message":…,"data":…}
//   {"type":"disconnect","reason":…,"description":…}
//
// Commands come one JSON object per line on stdin:
//
//   {"op":"emit","event":<name>,"args":[…],"ref":<ref>}  (with "ref": an ack callback)
//
// A value {"$binary":"<base64>"} in args is sent as a binary attachment (a Buffer), and
// Buffers received are printed the same way. The end of stdin disconnects and exits 0.
// Every wait has a deadline: acks time out after ACK_MS, the whole run after LIMIT_MS.

import { createInterface } from 'node:readline';

import { io } from 'socket.io-client';

const ACK_MS = 10000;
const LIMIT_MS = 90000;

const [url, optionsJson] = process.argv.slice(2);
if (!url) {
  console.error('usage: node socketio.mjs <url> [<options as JSON>]');
  process.exit(2);
}
const options = optionsJson ? JSON.parse(optionsJson) : undefined;

const toWire = (value) => {
  if (Array.isArray(value)) return value.map(toWire);
  if (value && typeof value === 'object') {
    if (typeof value.$binary === 'string') return Buffer.from(value.$binary, 'base64');
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, toWire(inner)]));
  }
  return value;
};

const fromWire = (value) => {
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer) {
    return { $binary: Buffer.from(value).toString('base64') };
  }
  if (Array.isArray(value)) return value.map(fromWire);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, fromWire(inner)]));
  }
  return value;
};

// Pipes are written synchronously on Linux, so lines keep the order things happened in.
const report = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

setTimeout(() => {
  console.error(`[socketio] still running after ${LIMIT_MS} ms: giving up`);
  process.exit(3);
}, LIMIT_MS).unref();

const socket = options === undefined ? io(url) : io(url, options);

socket.io.on('open', () => {
  socket.io.engine.on('upgrade', (transport) => report({ type: 'upgrade', transport: transport.name }));
});
socket.on('connect', () => {
  report({ type: 'connect', id: socket.id, transport: socket.io.engine.transport.name });
});
socket.on('connect_error', (error) => {
  report({ type: 'connect_error', message: error.message, data: fromWire(error.data ?? null) });
});
socket.on('disconnect', (reason, details) => {
  const description = details?.description?.message ?? details?.description ?? null;
  report({ type: 'disconnect', reason, description: description === null ? null : String(description) });
});
socket.onAny((event, ...args) => report({ type: 'event', event, args: fromWire(args) }));

const commands = createInterface({ input: process.stdin });
commands.on('line', (line) => {
  const command = JSON.parse(line);
  switch (command.op) {
    case 'emit': {
      const args = toWire(command.args ?? []);
      if (command.ref === undefined) {
        socket.emit(command.event, ...args);
      } else {
        socket.timeout(ACK_MS).emit(command.event, ...args, (error, ...replies) => {
          if (error) report({ type: 'ack_error', ref: command.ref, message: error.message });
          else report({ type: 'ack', ref: command.ref, args: fromWire(replies) });
        });
      }
      break;
    }
    default:
      console.error(`[socketio] unknown command: ${line}`);
      process.exit(2);
  }
});
commands.on('close', () => {
  socket.disconnect();
  process.exit(0);
});
