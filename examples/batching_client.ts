/**
 * Sends 100 small messages one by one, then the same 100 lines as one
 * message: fewer frames, fewer writes.
 *
 * Ports the seed's "性能建议 1. 消息批量发送".
 *
 * Run: deno run --allow-net --allow-env examples/batching_client.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";
const messages = Array.from({ length: 100 }, (_, i) => `Message ${i + 1}`);

const sock = await connect(url);

// Slower: one frame per message.
for (const message of messages) {
  await sock.write(message, "text");
}
console.log("Sent", messages.length, "separate messages");

// Faster: one frame holding all of them.
const batch = messages.join("\n");
await sock.write(batch, "text");
console.log("Sent 1 batched message of", batch.length, "bytes");

await sock.close();
