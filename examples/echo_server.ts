/**
 * Echo server: text comes back prefixed with "Echo: ", binary comes back as is.
 *
 * Ports the seed's "示例1：基础 Echo 服务器" and the `websocket.listen(conf)`
 * example (read a message, reply "Echo: ...").
 *
 * Run: deno run --allow-net --allow-env examples/echo_server.ts
 * (PORT=0 picks a free port; stop with Ctrl+C.)
 */
import { listen, type Socket } from "../mod.ts";

async function handler(sock: Socket): Promise<void> {
  const { hostname, port } = sock.remoteAddr;
  console.log(`New WebSocket connection from ${hostname}:${port}`);

  for await (const msg of sock) {
    switch (msg.type) {
      case "text":
        console.log("Received:", msg.data);
        await sock.write(`Echo: ${msg.data}`, "text");
        break;
      case "binary":
        console.log("Binary data, length:", msg.data.length);
        await sock.write(msg.data, "binary");
        break;
      case "close":
        console.log("Close frame received:", msg.code);
        break;
    }
  }

  // Returning from the handler would close the socket too; this is explicit.
  await sock.close();
  console.log("Connection closed");
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
console.log(`Echo server listening on ws://127.0.0.1:${server.addr.port}`);
