/**
 * Auto-reconnecting client: says hello every SEND_INTERVAL ms and reconnects
 * with exponential backoff (1 s, 2 s, 4 s ... capped at 30 s) when the
 * connection fails or is lost.
 *
 * Ports the seed's "示例8：自动重连客户端". Unlike the seed, it also waits the
 * (reset) delay after a lost connection, so a server that accepts and then
 * drops clients is not hammered. Optional env: MAX_ATTEMPTS (stop after that
 * many connection attempts), RECONNECT_DELAY (first delay in ms, default
 * 1000), SEND_INTERVAL (default 5000).
 *
 * Run: deno run --allow-net --allow-env examples/reconnect_client.ts [ws://127.0.0.1:8080]
 */
import { connect, type Socket } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";
const maxAttempts = Number(Deno.env.get("MAX_ATTEMPTS") ?? Infinity);
const initialDelay = Number(Deno.env.get("RECONNECT_DELAY") ?? "1000");
const sendInterval = Number(Deno.env.get("SEND_INTERVAL") ?? "5000");
const MAX_DELAY = 30_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Talks to the server until the connection ends. */
async function session(sock: Socket): Promise<void> {
  while (true) {
    try {
      await sock.write("Hello from auto-reconnect client", "text");
    } catch {
      console.log("Send failed, reconnecting...");
      return;
    }

    const msg = await sock.read();
    if (msg === null) {
      console.log("Read failed, reconnecting...");
      return;
    }
    if (msg.type === "close") {
      console.log("Server closed connection");
      return;
    }
    console.log("Received:", msg.type === "text" ? msg.data : msg.type);
    await sleep(sendInterval);
  }
}

let delay = initialDelay;
for (let attempt = 1; attempt <= maxAttempts; attempt++) {
  let sock: Socket | undefined;
  try {
    sock = await connect(url);
  } catch (err) {
    console.log("Connect failed:", err instanceof Error ? err.message : err);
  }

  let wait = delay;
  if (sock) {
    console.log("Connected to server");
    await session(sock);
    await sock.close();
    delay = wait = initialDelay; // a good connection resets the backoff
  } else {
    delay = Math.min(delay * 2, MAX_DELAY);
  }

  if (attempt === maxAttempts) break;
  console.log(`Reconnecting in ${wait / 1000} seconds...`);
  await sleep(wait);
}
console.log(`Giving up after ${maxAttempts} attempts`);
