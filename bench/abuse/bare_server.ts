/**
 * Reference floor for the idle attack: a bare `Deno.Conn` server with no
 * WebSocket library. It reads the upgrade request, answers a fixed 101, then
 * keeps one read pending per connection into a buffer of `SIZE` bytes
 * (`BARE_READ`, default 16; 0 keeps no read pending). What it costs per idle
 * connection is what the runtime costs before any library. Prints
 * `READY <port>`; has the abuse suite's control channel (`gc`, `stats`).
 *
 * @module
 */

import { serveControl } from "./_control.ts";

const size = Number(Deno.env.get("BARE_READ") ?? "16");
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
// The accept key of any request: the client here does not check it.
const response = new TextEncoder().encode(
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
);
const held: Deno.Conn[] = [];
let open = 0;

async function serve(conn: Deno.Conn): Promise<void> {
  open++;
  try {
    // The head (the abuse suite's requests come in one read).
    if (await conn.read(new Uint8Array(4096)) === null) return;
    await conn.write(response);
    if (size === 0) {
      held.push(conn);
      return;
    }
    const buffer = new Uint8Array(size);
    while (await conn.read(buffer) !== null) { /* drop */ }
  } catch {
    // Reset.
  }
  open--;
}

(async () => {
  for await (const conn of listener) serve(conn);
})();
console.log(`READY ${listener.addr.port}`);
await serveControl(() => ({ connections: open }));
