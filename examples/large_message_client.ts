/**
 * Sends a 1 MiB message (fragmented on the wire) to an echo server and reads
 * it back whole.
 *
 * Ports the seed's "注意事项 3. 自动分片".
 *
 * Run: deno run --allow-net --allow-env examples/large_message_client.ts [ws://127.0.0.1:8080]
 * (against examples/echo_server.ts).
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

const sock = await connect(url);

// A string sent as "binary" goes out as its UTF-8 bytes.
await sock.write("X".repeat(1024 * 1024), "binary");

// The fragments are reassembled before read() returns.
const msg = await sock.read();
if (msg?.type === "binary") {
  console.log("Received complete message, size:", msg.data.length);
} else {
  console.log("Unexpected reply:", msg?.type ?? "connection closed");
}

await sock.close();
