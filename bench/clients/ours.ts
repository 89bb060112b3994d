/**
 * Client contestant (C1/C3): this library's `connect`. Opens `--conns`
 * connections to the echo server on `--port`, keeps `--window` binary
 * messages of `--size` bytes in flight on each, awaiting every write as the
 * README does (`NOWAIT=1`: without awaiting), counts echoes.
 *
 * Prints `MARK start`, `MARK end`, `RESULT <json>` like load.ts.
 *
 * Run: deno run --allow-net bench/clients/ours.ts --port 8080 --conns 64 --size 32 --window 32
 */
import { connect, type Socket } from "../../mod.ts";
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

// The README's idiom: await every write. NOWAIT=1 is the second
// contestant, the same loop without `await`.
const nowait = Deno.env.get("NOWAIT") === "1";

async function run(sock: Socket): Promise<void> {
  try {
    for (let i = 0; i < windowSize; i++) await sock.write(payload);
    for await (const m of sock) {
      if (m.type === "binary") {
        count++;
        bytes += m.data.length;
        if (stopped) continue;
        if (nowait) sock.write(payload);
        else await sock.write(payload);
      }
    }
  } catch {
    // Counted below.
  }
  if (!stopped) errors++;
}

const socks = await Promise.all(
  Array.from({ length: conns }, () => connect(`ws://127.0.0.1:${port}/`)),
);
for (const sock of socks) run(sock);
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
