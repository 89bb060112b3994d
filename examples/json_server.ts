/**
 * JSON server: answers `{"type":"request","action":...,"payload":...}` with
 * `{"type":"response","action":...,"status":"success","data":{timestamp,echo}}`.
 *
 * Ports the seed's "示例5：JSON 消息通信". Text that is not JSON is ignored.
 *
 * Run: deno run --allow-net --allow-env examples/json_server.ts
 */
import { listen, type Socket } from "../mod.ts";

interface Request {
  type: "request";
  action: string;
  payload?: unknown;
}

function isRequest(value: unknown): value is Request {
  return typeof value === "object" && value !== null &&
    (value as Request).type === "request";
}

async function handler(sock: Socket): Promise<void> {
  console.log("Client connected");

  for await (const msg of sock) {
    if (msg.type !== "text") continue;

    let message: unknown;
    try {
      message = JSON.parse(msg.data);
    } catch {
      console.log("Ignoring invalid JSON:", msg.data);
      continue;
    }
    if (!isRequest(message)) continue;

    console.log("Request:", message.action);
    const response = {
      type: "response",
      action: message.action,
      status: "success",
      data: {
        timestamp: Math.floor(Date.now() / 1000),
        echo: message.payload,
      },
    };
    await sock.write(JSON.stringify(response), "text");
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
  `JSON WebSocket server listening on ws://127.0.0.1:${server.addr.port}`,
);
