/**
 * UTF-8 validation for text messages and close reasons.
 *
 * Pure: no I/O. Built on `TextDecoder`: the non-fatal one for speed, the
 * fatal one to confirm what the fast one flags. Text that arrives in pieces
 * is checked piece by piece, so a message fails at the piece that breaks it
 * (RFC 6455 8.1), not at the end of the message.
 *
 * @module
 */

// ignoreBOM: a leading U+FEFF is message content, not a byte order mark.
const OPTIONS = { fatal: true, ignoreBOM: true } as const;
const wholeDecoder = new TextDecoder("utf-8", OPTIONS);
// Deno's non-fatal UTF-8 decoder validates and converts in one fast pass;
// its fatal one takes a slower general path (2-3x at 256 B and at 64 KiB).
const looseDecoder = new TextDecoder("utf-8", { ignoreBOM: true });
// Past this, the runtime's non-fatal decoder is faster (32 B: 96 vs 134 ns).
const ASCII_FAST_MAX = 24;

/**
 * Decodes a complete UTF-8 text, or returns `undefined` if it is invalid.
 */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  // Very short ASCII text decodes faster in JS than through a call into
  // the runtime's decoder.
  const length = bytes.length;
  if (length <= ASCII_FAST_MAX) {
    let i = 0;
    while (i < length && bytes[i] < 0x80) i++;
    if (i === length) {
      return String.fromCharCode.apply(null, bytes as unknown as number[]);
    }
  }
  // Invalid input comes out with U+FFFD in place of what was invalid, so
  // text without one was valid; text with one is checked strictly, since
  // U+FFFD may have been sent as it is.
  const text = looseDecoder.decode(bytes);
  if (text.indexOf("\uFFFD") === -1) return text;
  try {
    return wholeDecoder.decode(bytes);
  } catch {
    return undefined;
  }
}

const encoder = new TextEncoder();
// A handshake key with the GUID is 60 characters, a close reason 123 bytes
// at most, a 101 response about 130 unless the upgrade hook adds headers.
const ASCII_ENCODE_MAX = 256;

/**
 * The UTF-8 bytes of `text`. Short ASCII text (handshake keys, close
 * reasons, the 101 response) is copied in JS: a call into the runtime's
 * encoder costs more (about 0.8 µs for a handshake key).
 */
export function encodeUtf8(text: string): Uint8Array {
  const length = text.length;
  if (length <= ASCII_ENCODE_MAX) {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      const c = text.charCodeAt(i);
      if (c > 0x7f) return encoder.encode(text);
      bytes[i] = c;
    }
    return bytes;
  }
  return encoder.encode(text);
}

/** Whether `bytes` is valid UTF-8. */
export function isValidUtf8(bytes: Uint8Array): boolean {
  return decodeUtf8(bytes) !== undefined;
}

/**
 * Decodes a text message that arrives in pieces (fragments, or the reads of
 * a frame still arriving), failing at the first piece that proves it
 * invalid (RFC 6455 8.1).
 *
 * Each piece goes through {@linkcode decodeUtf8}'s fast path, cut before a
 * character that it ends inside of. Those bytes (three at most) wait for
 * the next piece, and only when they can still begin a valid character:
 * a piece that ends in 0xFF or in 0xE0 0x80 fails with that piece.
 */
export class Utf8StreamDecoder {
  #text = "";
  // The start of a character that the last piece cut.
  #pending = new Uint8Array(4);
  #pendingLength = 0;

  /** Adds a piece; returns false if the text is now known to be invalid. */
  push(bytes: Uint8Array): boolean {
    const length = bytes.length;
    let start = 0;
    if (this.#pendingLength > 0) {
      const pending = this.#pending;
      const need = sequenceLength(pending[0]);
      while (this.#pendingLength < need && start < length) {
        pending[this.#pendingLength++] = bytes[start++];
      }
      if (this.#pendingLength < need) {
        return isSequenceStart(pending, 0, this.#pendingLength);
      }
      const char = decodeUtf8(pending.subarray(0, need));
      this.#pendingLength = 0;
      if (char === undefined) return false;
      this.#text += char;
    }
    const cut = cutBeforeIncomplete(bytes, start);
    if (cut > start) {
      const text = decodeUtf8(bytes.subarray(start, cut));
      if (text === undefined) return false;
      this.#text += text;
    }
    for (let i = cut; i < length; i++) {
      this.#pending[this.#pendingLength++] = bytes[i];
    }
    return true;
  }

  /**
   * Ends the text; returns it, or `undefined` if it stops inside a
   * multi-byte sequence.
   */
  end(): string | undefined {
    return this.#pendingLength > 0 ? undefined : this.#text;
  }
}

/** Bytes of the sequence that lead byte `byte` (0xC2 to 0xF4) starts. */
function sequenceLength(byte: number): number {
  return byte < 0xe0 ? 2 : byte < 0xf0 ? 3 : 4;
}

/**
 * Whether `bytes[from..to)`, shorter than its sequence, can still grow
 * into a valid character (RFC 3629 4: the second byte's range depends on
 * the lead byte, so neither overlong forms nor surrogates pass).
 */
function isSequenceStart(bytes: Uint8Array, from: number, to: number): boolean {
  const lead = bytes[from];
  if (lead < 0xc2 || lead > 0xf4) return false;
  if (to - from < 2) return true;
  const second = bytes[from + 1];
  const low = lead === 0xe0 ? 0xa0 : lead === 0xf0 ? 0x90 : 0x80;
  const high = lead === 0xed ? 0x9f : lead === 0xf4 ? 0x8f : 0xbf;
  if (second < low || second > high) return false;
  return to - from < 3 || (bytes[from + 2] & 0xc0) === 0x80;
}

/**
 * Where to cut `bytes` (from `start` on) so that the part before is whole
 * characters: before a sequence that the bytes end inside of and that can
 * still become valid, or at the end.
 */
function cutBeforeIncomplete(bytes: Uint8Array, start: number): number {
  const end = bytes.length;
  for (let i = end - 1; i >= start && i >= end - 3; i--) {
    const byte = bytes[i];
    if ((byte & 0xc0) === 0x80) continue;
    return end - i < sequenceLength(byte) && isSequenceStart(bytes, i, end)
      ? i
      : end;
  }
  return end;
}
