/**
 * Reference floor for the idle attack: a bare `Deno.Conn` server with no
 * WebSocket library. It reads the upgrade request, answers a fixed 101, then
 * keeps one read pending per connection into a buffer of `SIZE` bytes
 * (`BARE_READ`, default 16; 0 keeps no read pending). What it costs per idle
 * connection is what the runtime costs before any library. It answers the
 * first bytes after the 101 with a pong (the storm and half-frame rounds
 * send a ping first); with `BARE_KEEP=1` it reads into 16 KiB and keeps a
 * copy of every read until the connection ends, as a server assembling a
 * frame must. Prints
 * `READY <port>`; has the abuse suite's control channel (`gc`, `stats`).
 *
 * With `BARE_TLS_CLOSE_MS=N` it is instead the floor for the TLS-never-
 * started attack: `Deno.listenTls` with the test certificate, and each
 * accepted connection is handed to `handshake()` and closed after N ms,
 * the least any server built on `Deno.listenTls` can do with a peer that
 * never starts TLS.
 *
 * @module
 */

import { serveControl } from "./_control.ts";

const size = Number(Deno.env.get("BARE_READ") ?? "16");
const keep = Deno.env.get("BARE_KEEP") === "1";
const PONG = new Uint8Array([0x8a, 0x00]);
const tlsCloseMs = Number(Deno.env.get("BARE_TLS_CLOSE_MS") ?? "0");
const fixtures = new URL("../../tests/fixtures/", import.meta.url);
const listener = tlsCloseMs > 0
  ? Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(new URL("localhost.crt", fixtures)),
    key: Deno.readTextFileSync(new URL("localhost.key", fixtures)),
  })
  : Deno.listen({ hostname: "127.0.0.1", port: 0 });
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
    const kept: Uint8Array[] = [];
    const buffer = new Uint8Array(keep ? 16 * 1024 : size);
    let first = true;
    let n: number | null;
    while ((n = await conn.read(buffer)) !== null) {
      // The storm and half-frame rounds open with a ping: a pong (the
      // first bytes after the 101 are taken for it).
      if (first) await conn.write(PONG);
      first = false;
      // BARE_KEEP: hold what came, as any server must hold a frame it is
      // assembling: the floor for the half-frame rounds.
      if (keep) kept.push(buffer.slice(0, n));
    }
  } catch {
    // Reset.
  }
  open--;
}

/** TLS floor: start the handshake, close after `tlsCloseMs` whatever came. */
function closeLater(conn: Deno.TlsConn): void {
  open++;
  conn.handshake().catch(() => {});
  setTimeout(() => {
    open--;
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }, tlsCloseMs);
}

(async () => {
  for await (const conn of listener) {
    if (tlsCloseMs > 0) closeLater(conn as Deno.TlsConn);
    else serve(conn);
  }
})();
console.log(`READY ${listener.addr.port}`);
await serveControl(() => ({ connections: open }));
