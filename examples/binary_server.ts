/**
 * Binary server: acknowledges each binary message with 8 bytes, two
 * big-endian u32s: type (1 = ack) and the number of bytes received.
 *
 * Ports the seed's "示例7：二进制数据传输"; DataView replaces
 * `string.pack(">I4I4", ...)`.
 *
 * Run: deno run --allow-net --allow-env examples/binary_server.ts
 */
import { listen, type Socket } from "../mod.ts";

const ACK = 0x01;

function encodeAck(size: number): Uint8Array {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, ACK); // DataView is big-endian unless told otherwise
  view.setUint32(4, size);
  return bytes;
}

async function handler(sock: Socket): Promise<void> {
  console.log("Client connected");
  for await (const msg of sock) {
    if (msg.type !== "binary") continue;
    console.log("Received binary data, size:", msg.data.length);
    // Process the bytes here: save a file, decode an image...
    await sock.write(encodeAck(msg.data.length), "binary");
  }
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
console.log(
  `Binary WebSocket server listening on ws://127.0.0.1:${server.addr.port}`,
);
