/**
 * The `Sec-WebSocket-Extensions` header grammar (RFC 6455 9.1): a list of
 * extensions, each a token with `;`-separated parameters, parsed and
 * formatted. Knows no extension; `deflate.ts` reads permessage-deflate's
 * parameters out of what this returns.
 *
 * Pure: no I/O, no timers, no promises.
 *
 * @module
 */

/** One extension of a `Sec-WebSocket-Extensions` header, with its parameters in order. */
export interface Extension {
  /** The extension token, lower-cased. */
  name: string;
  /** `[name, value]` pairs; names lower-cased, `null` for a parameter without a value. */
  params: [string, string | null][];
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `Sec-WebSocket-Extensions` value (RFC 6455 9.1):
 * `name; param; param=value, name2; param="quoted"`.
 *
 * @returns the extensions in order, or `null` when the value is malformed
 */
export function parseExtensions(value: string): Extension[] | null {
  const extensions: Extension[] = [];
  let pos = 0;
  const skipSpace = () => {
    while (value[pos] === " " || value[pos] === "\t") pos++;
  };
  const token = (): string => {
    const start = pos;
    while (pos < value.length && TOKEN_CHAR.test(value[pos])) pos++;
    return value.slice(start, pos);
  };
  for (;;) {
    skipSpace();
    // RFC 9110 5.6.1: empty list elements are ignored.
    if (value[pos] === ",") {
      pos++;
      continue;
    }
    if (pos >= value.length) break;
    const name = token().toLowerCase();
    if (name === "") return null;
    const params: [string, string | null][] = [];
    skipSpace();
    while (value[pos] === ";") {
      pos++;
      skipSpace();
      const param = token().toLowerCase();
      if (param === "") return null;
      skipSpace();
      let paramValue: string | null = null;
      if (value[pos] === "=") {
        pos++;
        skipSpace();
        if (value[pos] === '"') {
          pos++;
          paramValue = "";
          for (;;) {
            if (pos >= value.length) return null;
            const char = value[pos++];
            if (char === '"') break;
            paramValue += char === "\\" ? value[pos++] ?? "" : char;
          }
          // RFC 6455 9.1: a quoted value must be a token once unquoted.
          if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(paramValue)) return null;
        } else {
          paramValue = token();
          if (paramValue === "") return null;
        }
        skipSpace();
      }
      params.push([param, paramValue]);
    }
    extensions.push({ name, params });
    if (pos >= value.length) break;
    if (value[pos] !== ",") return null;
  }
  return extensions;
}

/** Formats one extension for a `Sec-WebSocket-Extensions` header. */
export function formatExtension(extension: Extension): string {
  let text = extension.name;
  for (const [name, value] of extension.params) {
    text += value === null ? `; ${name}` : `; ${name}=${value}`;
  }
  return text;
}
