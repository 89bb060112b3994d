/**
 * Broadcast server: every text message a client sends goes to all clients.
 *
 * Ports the seed's "示例4：广播服务器". The seed funnels messages through a
 * channel to a broadcast coroutine; here the sender awaits the broadcast
 * directly, and a client whose write fails is dropped from the set.
 *
 * Run: deno run --allow-net --allow-env examples/broadcast_server.ts
 */
import { listen, type Socket } from "../mod.ts";

const clients = new Set<Socket>();

async function broadcast(message: string): Promise<void> {
  const targets = [...clients];
  const results = await Promise.allSettled(
    targets.map((client) => client.write(message, "text")),
  );
  results.forEach((result, i) => {
    if (result.status === "rejected") clients.delete(targets[i]);
  });
  console.log("Broadcasted to", clients.size, "clients");
}

async function handler(sock: Socket): Promise<void> {
  clients.add(sock);
  console.log("Client connected, total:", clients.size);

  try {
    await sock.write("Welcome to broadcast server!", "text");
    for await (const msg of sock) {
      if (msg.type === "text") await broadcast(msg.data);
    }
  } finally {
    clients.delete(sock);
  }
  console.log("Client disconnected, remaining:", clients.size);
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
console.log(`Broadcast server listening on ws://127.0.0.1:${server.addr.port}`);
