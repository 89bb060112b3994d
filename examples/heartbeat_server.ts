/**
 * Heartbeat server: pings every client every PING_INTERVAL ms and prints the
 * pongs; text messages are answered with "Received: ...".
 *
 * Ports the seed's "示例3：心跳保活". A timer replaces the forked coroutine.
 *
 * Run: PING_INTERVAL=1000 deno run --allow-net --allow-env examples/heartbeat_server.ts
 */
import { listen, type Socket } from "../mod.ts";

const pingInterval = Number(Deno.env.get("PING_INTERVAL") ?? "5000");
const decoder = new TextDecoder();

async function handler(sock: Socket): Promise<void> {
  console.log("Client connected");

  const timer = setInterval(async () => {
    try {
      await sock.write("heartbeat", "ping");
      console.log("Sent ping");
    } catch (err) {
      console.log("Ping failed, connection lost:", (err as Error).message);
      clearInterval(timer);
    }
  }, pingInterval);

  try {
    for await (const msg of sock) {
      if (msg.type === "pong") {
        console.log("Received pong:", decoder.decode(msg.data));
      } else if (msg.type === "text") {
        await sock.write(`Received: ${msg.data}`, "text");
      }
    }
  } finally {
    clearInterval(timer);
  }
  console.log("Client disconnected");
}

const port = Number(Deno.env.get("PORT") ?? "8080");
const server = listen({ addr: `127.0.0.1:${port}`, handler });

// Close cleanly on Ctrl+C or kill. Registered before the "listening" line
// below, so a signal sent right after it is not missed.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.close();
    Deno.exit(0);
  });
}
console.log(
  `Server with heartbeat listening on ws://127.0.0.1:${server.addr.port}`,
);
