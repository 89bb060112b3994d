/**
 * Checks of numeric option values, shared by every module that takes
 * options: one wording for every error.
 *
 * @module
 */

/**
 * `value`, or `fallback` when it is `undefined`.
 *
 * @throws {TypeError} `value` is not a positive number (`zero`: not a
 *   non-negative one); the message names the option
 */
export function numberOption(
  name: string,
  value: number | undefined,
  fallback: number,
  zero = false,
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" || Number.isNaN(value) || value < 0 ||
    (value === 0 && !zero)
  ) {
    throw new TypeError(
      `Invalid option ${name}: expected a ${
        zero ? "non-negative" : "positive"
      } number, received ${value}`,
    );
  }
  return value;
}
