/**
 * Echo server for the benchmark: the floor, not a contestant to beat. Bare
 * `Deno.Conn` code with no API and no checks: a minimal upgrade, then every
 * frame of a read is unmasked in place and echoed frame by frame (fragments
 * are not reassembled, text is not validated, control frames are echoed as
 * they came; a close frame is echoed, then the connection closed). A
 * payload that spans reads is read straight into a buffer of its own.
 * Replies to one read go out in one write.
 *
 * What separates this library from it is the price of the API (whole
 * messages, a read queue, promises) and of the checks (RFC 6455 rules, UTF-8
 * validation, limits).
 *
 * Two variants, each a floor for one question:
 * - `BARE=text`: a text frame is decoded to a string (Deno's `TextDecoder`,
 *   with the same U+FFFD check this library makes) and encoded back
 *   (`encodeInto`), as any API that hands out strings must. The floor for
 *   S2.
 * - `BARE=reuse`: a payload that spans reads goes into one buffer per
 *   connection, reused, instead of a new one per message: the floor for
 *   S3's memory when no message outlives its echo, which an API that hands
 *   the message to the caller cannot assume.
 *
 * Path `/fanout` is not served. Prints `READY <port>` when listening.
 *
 * Run: PORT=0 deno run --allow-net --allow-env bench/servers/bare.ts
 */
import { acceptKey } from "../../src/handshake.ts";
import { mask } from "../../src/mask.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const variant = Deno.env.get("BARE") ?? "";
const TEXT = variant === "text";
const REUSE = variant === "reuse";
const textOut = new Uint8Array(256 * 1024 * 3);
const listener = Deno.listen({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? "0"),
});
console.log(`READY ${(listener.addr as Deno.NetAddr).port}`);

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
}

// Read and write buffers, reused from connection to connection: a new
// pair is 512 KiB to zero-fill, which would make this floor the slowest
// server of the connection-churn scenario (S5).
const spareBuffers: Uint8Array[][] = [];

function serve(conn: Deno.TcpConn): Promise<void> {
  const buffers = spareBuffers.pop() ??
    [new Uint8Array(256 * 1024), new Uint8Array(256 * 1024 + 16)];
  return echo(conn, buffers[0], buffers[1]).finally(() =>
    spareBuffers.push(buffers)
  );
}

async function echo(
  conn: Deno.TcpConn,
  buf: Uint8Array,
  out: Uint8Array,
): Promise<void> {
  conn.setNoDelay(true);
  let len = 0;
  // The upgrade: read to the blank line, answer 101.
  let headEnd = -1;
  while (headEnd < 0) {
    const n = await conn.read(buf.subarray(len));
    if (n === null) return conn.close();
    len += n;
    headEnd = new TextDecoder().decode(buf.subarray(0, len)).indexOf(
      "\r\n\r\n",
    );
  }
  const head = new TextDecoder().decode(buf.subarray(0, headEnd));
  const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "";
  await writeAll(
    conn,
    encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
        `Connection: Upgrade\r\nSec-WebSocket-Accept: ${
          acceptKey(key)
        }\r\n\r\n`,
    ),
  );
  buf.copyWithin(0, headEnd + 4, len);
  len -= headEnd + 4;
  let spare = new Uint8Array(0);
  for (;;) {
    // Every whole frame in buf[0, len).
    let pos = 0;
    let outLen = 0;
    for (;;) {
      if (len - pos < 2) break;
      const b0 = buf[pos], b1 = buf[pos + 1];
      let size = b1 & 0x7f;
      let hdr = 2;
      if (size === 126) {
        if (len - pos < 4) break;
        size = (buf[pos + 2] << 8) | buf[pos + 3];
        hdr = 4;
      } else if (size === 127) {
        if (len - pos < 10) break;
        size = buf[pos + 6] * 2 ** 24 + ((buf[pos + 7] << 16) |
          (buf[pos + 8] << 8) | buf[pos + 9]);
        hdr = 10;
      }
      const key = buf.subarray(pos + hdr, pos + hdr + 4);
      const start = pos + hdr + 4;
      if (len - start < size) {
        if (size <= buf.length - start) break; // The rest fits: read more.
        // A big payload: read the rest straight into a buffer of its own.
        const header = buf.slice(pos, pos + hdr);
        header[1] &= 0x7f;
        await writeAll(conn, out.subarray(0, outLen));
        outLen = 0;
        if (REUSE && spare.length < size) spare = new Uint8Array(size);
        const payload = REUSE ? spare.subarray(0, size) : new Uint8Array(size);
        let got = len - start;
        payload.set(buf.subarray(start, len));
        while (got < size) {
          const n = await conn.read(payload.subarray(got));
          if (n === null) return conn.close();
          got += n;
        }
        mask(payload, key.slice());
        await writeAll(conn, header);
        await writeAll(conn, payload);
        pos = len = 0;
        break;
      }
      let payload = buf.subarray(start, start + size);
      mask(payload, key);
      if ((b0 & 0x0f) === 0x8) {
        // Close: what came before it, then the close frame echoed (its
        // code and reason unmasked), then the end of the connection.
        out[outLen] = 0x88;
        out[outLen + 1] = size;
        out.set(payload, outLen + 2);
        await writeAll(conn, out.subarray(0, outLen + 2 + size));
        return conn.close();
      }
      if (TEXT && (b0 & 0x0f) === 0x1) {
        const text = decoder.decode(payload);
        if (text.indexOf("\uFFFD") !== -1) return conn.close();
        payload = textOut.subarray(
          0,
          encoder.encodeInto(text, textOut).written,
        );
        if (payload.length !== size) return conn.close();
      }
      if (outLen + hdr + size > out.length) {
        await writeAll(conn, out.subarray(0, outLen));
        outLen = 0;
      }
      // The reply's header: the same, without the mask bit.
      for (let i = 0; i < hdr; i++) out[outLen + i] = buf[pos + i];
      out[outLen + 1] = b1 & 0x7f;
      if (hdr + size <= out.length) {
        out.set(payload, outLen + hdr);
        outLen += hdr + size;
      } else {
        await writeAll(conn, out.subarray(0, hdr));
        await writeAll(conn, payload);
        outLen = 0;
      }
      pos = start + size;
    }
    if (outLen > 0) await writeAll(conn, out.subarray(0, outLen));
    buf.copyWithin(0, pos, len);
    len -= pos;
    const n = await conn.read(buf.subarray(len));
    if (n === null) return conn.close();
    len += n;
  }
}

for await (const conn of listener) serve(conn).catch(() => conn.close());
