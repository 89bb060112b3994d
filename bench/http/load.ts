/**
 * A keep-alive HTTP/1.1 load generator on raw TCP, for machines without
 * `wrk`: `--conns` connections each send `GET <path>` and wait for the
 * response (read by its `Content-Length` or chunked framing) before the
 * next. Prints `RESULT <requests per second>`.
 *
 * Run: deno run -A bench/http/load.ts --port 8080 --conns 32 --duration 5
 */
import { num, parseFlags } from "../_common.ts";

const flags = parseFlags(Deno.args);
const port = num(flags, "port", 8080);
const conns = num(flags, "conns", 32);
const duration = num(flags, "duration", 5) * 1000;
const path = flags.path ?? "/";
const request = new TextEncoder().encode(
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`,
);

let count = 0;
let errors = 0;
let stop = false;

/** Index of the end of a response in `b[0..n)`, or -1. */
function responseEnd(b: Uint8Array, n: number): number {
  for (let i = 0; i + 3 < n; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) {
      const head = new TextDecoder().decode(b.subarray(0, i)).toLowerCase();
      const length = /\r\ncontent-length: *(\d+)/.exec(head);
      if (length !== null) {
        const end = i + 4 + Number(length[1]);
        return end <= n ? end : -1;
      }
      // Chunked: the last chunk ends the body.
      for (let j = i + 4; j + 4 < n; j++) {
        if (
          b[j] === 48 && b[j - 1] === 10 && b[j + 1] === 13 &&
          b[j + 2] === 10 && b[j + 3] === 13 && b[j + 4] === 10
        ) return j + 5;
      }
      return -1;
    }
  }
  return -1;
}

async function worker(): Promise<void> {
  while (!stop) {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch {
      errors++;
      continue;
    }
    const buffer = new Uint8Array(64 * 1024);
    try {
      let n = 0;
      while (!stop) {
        await conn.write(request);
        for (;;) {
          const end = responseEnd(buffer, n);
          if (end !== -1) {
            buffer.copyWithin(0, end, n);
            n -= end;
            break;
          }
          const read = await conn.read(buffer.subarray(n));
          if (read === null) throw new Error("closed");
          n += read;
        }
        count++;
      }
    } catch {
      // The server closed (a request cap): reconnect.
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }
}

const workers = Array.from({ length: conns }, worker);
await new Promise((r) => setTimeout(r, 500));
const start = performance.now();
const before = count;
await new Promise((r) => setTimeout(r, duration));
const rate = (count - before) / ((performance.now() - start) / 1000);
stop = true;
await Promise.race([
  Promise.all(workers),
  new Promise((r) => setTimeout(r, 1000)),
]);
console.log(`RESULT ${Math.round(rate)} errors=${errors}`);
Deno.exit(0);
