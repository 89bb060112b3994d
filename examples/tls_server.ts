/**
 * Secure (wss://) server: greets each client, then echoes text as
 * "Secure echo: ...".
 *
 * Ports the seed's "示例6：安全 WebSocket（WSS）". The certificate is read from
 * files instead of being inlined: CERT and KEY (PEM paths) default to the
 * self-signed localhost pair in tests/fixtures/. Clients must trust it, e.g.
 * `connect("wss://localhost:8443", { caCerts: [certPem] })`.
 *
 * Run: deno run --allow-net --allow-read --allow-env examples/tls_server.ts
 */
import { listen, type Socket } from "../mod.ts";

const fixtures = new URL("../tests/fixtures/", import.meta.url);
const cert = await Deno.readTextFile(
  Deno.env.get("CERT") ?? new URL("localhost.crt", fixtures),
);
const key = await Deno.readTextFile(
  Deno.env.get("KEY") ?? new URL("localhost.key", fixtures),
);

async function handler(sock: Socket): Promise<void> {
  await sock.write("Secure connection established", "text");
  for await (const msg of sock) {
    if (msg.type === "text") {
      await sock.write(`Secure echo: ${msg.data}`, "text");
    }
  }
}

const port = Number(Deno.env.get("PORT") ?? "8443");
const server = listen({
  addr: `127.0.0.1:${port}`,
  tls: true,
  certs: [{ cert, key }],
  handler,
});

// Close cleanly on Ctrl+C or kill. Registered before the "listening" line
// below, so a signal sent right after it is not missed.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.close();
    Deno.exit(0);
  });
}
console.log(
  `Secure WebSocket (WSS) server listening on wss://127.0.0.1:${server.addr.port}`,
);
