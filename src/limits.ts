/**
 * Size limits, checked before anything is allocated: a model file or a constant a few bytes
 * long can ask for tensors of terabytes (an `Expand` to [2^20, 2^20], initializer dims of
 * 2^33), and the tool lives inside servers and apps that must not be taken down by one.
 *
 * - `maxTensorBytes`: the largest single tensor (as float32 in the engine), default 2 GiB;
 * - `maxPlanBytes`: the largest memory one compiled plan may hold at once (its peak of live
 *   values, weights included), default 8 GiB;
 * - `maxFoldElements`: the largest value computed in TypeScript while folding constants
 *   (numbers there take 8 bytes or more each), default 2^26.
 *
 * Environment variables `MPQ_MAX_TENSOR_BYTES`, `MPQ_MAX_PLAN_BYTES` and `MPQ_MAX_FOLD_ELEMENTS`
 * (a number, optionally with a K/M/G/T suffix of powers of 1024) override the defaults; API
 * users call {@link setLimits}. Both are read when a model is specialised or compiled.
 */
import { ErrorCode, MpqError } from './errors';

export interface Limits {
  maxTensorBytes: number;
  maxPlanBytes: number;
  maxFoldElements: number;
}

const GiB = 2 ** 30;
export const DEFAULT_LIMITS: Readonly<Limits> = { maxTensorBytes: 2 * GiB, maxPlanBytes: 8 * GiB, maxFoldElements: 2 ** 26 };

const ENV: Record<keyof Limits, string> = {
  maxTensorBytes: 'MPQ_MAX_TENSOR_BYTES',
  maxPlanBytes: 'MPQ_MAX_PLAN_BYTES',
  maxFoldElements: 'MPQ_MAX_FOLD_ELEMENTS',
};

let overrides: Partial<Limits> = {};

/** Parses "4G", "512M", "1e9", "1073741824": a positive integer count. */
export function parseSize(v: string, what: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kKmMgGtT]?)i?[bB]?\s*$/.exec(v);
  const mult = m ? { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase()]! : NaN;
  const n = m ? Math.floor(Number(m[1]) * mult) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new MpqError('MPQ_BAD_INPUT', `${what} must be a positive size such as 2G or 1073741824, got '${v}'`);
  return n;
}

/** Overrides limits for this process (undefined fields return to the environment or default). */
export function setLimits(l: Partial<Limits>): void {
  for (const [k, v] of Object.entries(l)) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) throw new MpqError('MPQ_BAD_INPUT', `limit ${k} must be a positive integer, got ${v}`);
  }
  overrides = { ...overrides, ...l };
  for (const k of Object.keys(l) as (keyof Limits)[]) if (l[k] === undefined) delete overrides[k];
}

/** The limits in force: {@link setLimits}, else the environment, else {@link DEFAULT_LIMITS}. */
export function limits(): Limits {
  const out = { ...DEFAULT_LIMITS };
  for (const k of Object.keys(ENV) as (keyof Limits)[]) {
    const o = overrides[k];
    const e = process.env[ENV[k]];
    if (o !== undefined) out[k] = o;
    else if (e !== undefined && e !== '') out[k] = parseSize(e, ENV[k]);
  }
  return out;
}

/** "17.2 GB (2^34 bytes)"-style text for messages. */
export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return `more than 2^1023 bytes`;
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} bytes` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/**
 * Element count of `shape`, or an error from `fail` when a dim is not a non-negative safe
 * integer or the count passes `maxElements` (checked as it multiplies, so that no product
 * ever leaves the exactly representable range).
 */
export function checkedNumel(shape: readonly number[], maxElements: number, fail: (msg: string) => never): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) fail(`invalid dimension ${d} in shape [${shape}]`);
    if (d === 0) return 0;
  }
  for (const d of shape) {
    n *= d;
    if (n > maxElements) return Infinity;
  }
  return n;
}

/**
 * Checks a tensor of `shape` against the per-tensor limit (`bytesPer` bytes per element, 4 in
 * the engine) and returns its element count. Errors start with `where` ("node 'x' (Expand)"):
 * MPQ_TOO_LARGE over the limit, `badCode` for a dimension that is not a count.
 */
export function checkTensorSize(shape: readonly number[], where: string, badCode: ErrorCode = 'MPQ_BAD_NODE', bytesPer = 4, lim: Limits = limits()): number {
  const maxEl = Math.floor(lim.maxTensorBytes / bytesPer);
  const n = checkedNumel(shape, maxEl, (m) => {
    throw new MpqError(badCode, `${where}: ${m}`);
  });
  if (n > maxEl) {
    const bytes = shape.reduce((a, d) => a * d, bytesPer);
    throw new MpqError(
      'MPQ_TOO_LARGE',
      `${where}: shape [${shape}] needs ${fmtBytes(bytes)}, over the limit of ${fmtBytes(lim.maxTensorBytes)} per tensor ` +
        `(raise MPQ_MAX_TENSOR_BYTES if the model really needs it)`,
    );
  }
  return n;
}
