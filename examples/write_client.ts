/**
 * Writes every kind of message: text (including non-ASCII UTF-8), binary,
 * a ping and a 1 MiB binary message that is sent as 64 KiB fragments.
 *
 * Ports the seed's `sock:write(data [, type])` example and "注意事项 4.
 * 文本 vs 二进制".
 *
 * Run: deno run --allow-net --allow-env examples/write_client.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

const sock = await connect(url);
try {
  // Text frames must be valid UTF-8; JavaScript strings are encoded for you.
  await sock.write("Hello, World!", "text");
  await sock.write("Hello, 世界!", "text");

  // Binary frames carry any bytes; "binary" is the default type.
  await sock.write(new Uint8Array([0x01, 0x02, 0x03, 0x04]), "binary");
  await sock.write(new Uint8Array([0x00, 0xff, 0xfe, 0xfd]));

  await sock.write("ping", "ping");

  // Larger than the 64 KiB fragment size, so it goes out as 16 frames.
  const large = new Uint8Array(1024 * 1024).fill(0x41); // "A"
  await sock.write(large, "binary");
  console.log("Sent 6 messages, the last one", large.length, "bytes");
} catch (err) {
  console.log("Send failed:", err instanceof Error ? err.message : err);
} finally {
  await sock.close();
}
console.log("Connection closed");
