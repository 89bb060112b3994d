/**
 * Says goodbye, waits for the server's close frame, then finishes the close
 * handshake and reports how the connection ended.
 *
 * Ports the seed's `sock:close()` example and "注意事项 6. 优雅关闭". The
 * server is expected to close after "Goodbye"; `sock.close()` alone would
 * also do the whole handshake (send close, wait for the peer's, close TCP).
 *
 * Run: deno run --allow-net --allow-env examples/graceful_close_client.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

const sock = await connect(url);
await sock.write("Goodbye", "text");

// Standard practice: keep reading until the peer's close frame arrives.
for await (const msg of sock) {
  if (msg.type === "close") {
    console.log("Received close frame from server:", msg.code, msg.reason);
  } else if (msg.type === "text") {
    console.log("Received:", msg.data);
  }
}

await sock.close(); // idempotent: the handshake is already done
const { code, wasClean } = await sock.closed;
console.log(`Connection closed (code ${code}, clean: ${wasClean})`);
