/**
 * Echo client: sends five text messages and prints each reply.
 *
 * Ports the seed's "示例2：WebSocket 客户端", the `websocket.connect(url)`
 * example and "注意事项 7. 错误处理" (connect and write reject with an error
 * instead of returning `nil, err`). There is no `silly.fork` here: top-level
 * await plays the role of the coroutine ("注意事项 1").
 *
 * Run: deno run --allow-net --allow-env examples/echo_client.ts [ws://127.0.0.1:8080]
 * (start examples/echo_server.ts first).
 */
import { connect, type Socket } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

let sock: Socket;
try {
  sock = await connect(url);
} catch (err) {
  console.log("Connect failed:", err instanceof Error ? err.message : err);
  Deno.exit(1);
}
console.log("Connected to server");

try {
  for (let i = 1; i <= 5; i++) {
    const message = `Message ${i}`;
    await sock.write(message, "text");
    console.log("Sent:", message);

    const reply = await sock.read();
    if (reply === null || reply.type === "close") {
      console.log("Server closed the connection");
      break;
    }
    if (reply.type === "text") console.log("Received:", reply.data);
  }
} catch (err) {
  console.log("Write failed:", err instanceof Error ? err.message : err);
} finally {
  await sock.close();
}
console.log("Client disconnected");
