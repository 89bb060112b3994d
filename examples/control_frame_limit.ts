/**
 * Control frames (ping, pong, close) carry at most 125 bytes: a 200-byte
 * ping is refused with a RangeError and the connection stays usable.
 *
 * Ports the seed's "注意事项 2. 控制帧大小限制".
 *
 * Run: deno run --allow-net --allow-env examples/control_frame_limit.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

const sock = await connect(url);

// Fine: 4 bytes.
await sock.write("ping", "ping");
console.log("Sent a 4-byte ping");

// RFC 6455 5.5: too big for a control frame, rejected before anything is sent.
try {
  await sock.write("A".repeat(200), "ping");
} catch (err) {
  if (!(err instanceof RangeError)) throw err;
  console.log("Error:", err.message);
}

await sock.close();
console.log("Connection closed");
