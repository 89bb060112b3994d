/**
 * Packs two u32s and an f32 (big-endian) into 12 bytes, sends them as a
 * binary message and unpacks the echo.
 *
 * Ports the seed's "性能建议 2. 使用二进制帧"; DataView replaces
 * `string.pack(">I4I4f", ...)` and `string.unpack`.
 *
 * Run: deno run --allow-net --allow-env examples/binary_pack_client.ts [ws://127.0.0.1:8080]
 * (against examples/echo_server.ts).
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";

function pack(a: number, b: number, c: number): Uint8Array {
  const bytes = new Uint8Array(12);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, a);
  view.setUint32(4, b);
  view.setFloat32(8, c);
  return bytes;
}

function unpack(bytes: Uint8Array): [number, number, number] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return [view.getUint32(0), view.getUint32(4), view.getFloat32(8)];
}

const sock = await connect(url);
await sock.write(pack(12345, 67890, 3.14159), "binary");

const msg = await sock.read();
if (msg?.type === "binary") {
  const [a, b, c] = unpack(msg.data);
  // An f32 holds 3.14159 as 3.141590118408203; print it at f32 precision.
  console.log("Received:", a, b, c.toFixed(5));
}

await sock.close();
