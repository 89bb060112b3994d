/**
 * Client contestant (C1/C3): Deno's built-in `WebSocket`. Opens `--conns`
 * connections to the echo server on `--port`, keeps `--window` binary
 * messages of `--size` bytes in flight on each, counts echoes.
 *
 * Prints `MARK start`, `MARK end`, `RESULT <json>` like load.ts.
 *
 * Run: deno run --allow-net bench/clients/builtin.ts --port 8080 --conns 64 --size 32 --window 32
 */
import { binaryPayload, measure, num, parseFlags, report } from "../_common.ts";

const flags = parseFlags(Deno.args);
const port = num(flags, "port", 0);
const conns = num(flags, "conns", 64);
const size = num(flags, "size", 32);
const windowSize = num(flags, "window", 32);
const payload = binaryPayload(size);

let count = 0;
let bytes = 0;
let errors = 0;
let stopped = false;

function open(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("WebSocket error"));
  });
}

const sockets = await Promise.all(Array.from({ length: conns }, open));
for (const ws of sockets) {
  ws.onerror = () => {};
  ws.onclose = () => {
    if (!stopped) errors++;
  };
  ws.onmessage = (e: MessageEvent<ArrayBuffer>) => {
    count++;
    bytes += e.data.byteLength;
    if (!stopped) ws.send(payload);
  };
  for (let i = 0; i < windowSize; i++) ws.send(payload);
}
const m = await measure(
  num(flags, "warmup", 1),
  num(flags, "duration", 3),
  () => ({ count, bytes }),
);
stopped = true;
await report({
  ...m,
  rate: m.count / m.seconds,
  mbps: m.bytes / m.seconds / 1e6,
  errors,
  connections: conns,
});
