/**
 * Read loop: prints every message the server sends, by type, until the server
 * closes the connection.
 *
 * Ports the seed's `sock:read()` example, "注意事项 5. 心跳处理" and the
 * "sock 属性" section (`sock.conn`, the Deno.Conn, replaces `sock.fd`;
 * `sock.request` and `sock.response` replace `sock.stream`).
 *
 * Run: deno run --allow-net --allow-env examples/read_loop_client.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";
const decoder = new TextDecoder();

const sock = await connect(url);
const { hostname, port } = sock.remoteAddr;
// The handshake response and the underlying Deno.Conn are on the socket.
console.log(
  `Connected to ${hostname}:${port} (HTTP ${sock.response?.status}, ` +
    `local port ${sock.localAddr.port})`,
);

for await (const msg of sock) {
  switch (msg.type) {
    case "text":
      console.log("Text message:", msg.data);
      break;
    case "binary":
      console.log("Binary message, length:", msg.data.length);
      break;
    case "ping":
      // The library has already answered with a pong carrying the same
      // data; answering by hand as the seed does would be harmless.
      console.log("Received ping:", decoder.decode(msg.data));
      break;
    case "pong":
      console.log("Received pong:", decoder.decode(msg.data));
      break;
    case "close":
      console.log("Close frame received:", msg.code, msg.reason);
      break;
  }
}

await sock.close();
console.log("Connection closed");
