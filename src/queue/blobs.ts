/**
 * Content-addressed blobs for the job queue: models and calibration data travel by their
 * SHA-256, never by a path. The coordinator puts each blob in Redis (small ones) or in a
 * shared folder it was given; a worker looks a hash up only in the folders it was started
 * with and in Redis, and checks the bytes it got against the hash.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Redis } from 'ioredis';
import { MpqError } from '../errors';
import { Tensor } from '../model';
import { Batches } from '../quant/calibrate';

/** Blobs up to this size may go to Redis (a Redis string holds 512 MB at most). */
export const REDIS_BLOB_MAX = 256 * 2 ** 20;

export const sha256 = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

const HASH = /^[0-9a-f]{64}$/;
const redisKey = (prefix: string, hash: string) => `${prefix}:blob:${hash}`;

/** Where a coordinator puts its blobs: Redis, or files `DIR/<sha256>` in a folder the workers share. */
export async function putBlob(redis: Redis, prefix: string, bytes: Uint8Array, dir?: string): Promise<string> {
  const hash = sha256(bytes);
  if (dir) {
    const file = path.join(dir, hash);
    if (!fs.existsSync(file)) {
      fs.mkdirSync(dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, bytes);
      fs.renameSync(tmp, file);
    }
    return hash;
  }
  if (bytes.byteLength > REDIS_BLOB_MAX)
    throw new MpqError('MPQ_TOO_LARGE', `a ${(bytes.byteLength / 2 ** 20).toFixed(0)} MiB blob is over the ${REDIS_BLOB_MAX / 2 ** 20} MiB that go through Redis: give the coordinator a folder the workers share (--blobs DIR)`);
  // blobs expire a week after their last upload: a coordinator puts them again on every run
  await redis.set(redisKey(prefix, hash), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'EX', 7 * 86400);
  return hash;
}

/** A blob by hash, from the worker's own folders, then Redis; its content is checked against the hash. */
export async function getBlob(redis: Redis, prefix: string, hash: string, dirs: string[]): Promise<Buffer> {
  if (!HASH.test(hash)) throw new MpqError('MPQ_BAD_INPUT', `'${String(hash).slice(0, 80)}' is not a blob hash (64 hex digits)`);
  let bytes: Buffer | null = null;
  for (const d of dirs) {
    const file = path.join(d, hash);
    if (fs.existsSync(file)) {
      bytes = fs.readFileSync(file);
      break;
    }
  }
  bytes ??= await redis.getBuffer(redisKey(prefix, hash));
  if (!bytes) throw new MpqError('MPQ_BAD_INPUT', `blob ${hash} is neither in Redis nor in this worker's folders (${dirs.length ? dirs.join(', ') : 'none: start the worker with --blobs DIR'})`);
  if (sha256(bytes) !== hash) throw new MpqError('MPQ_BAD_INPUT', `blob ${hash} does not hash to its name: refusing it`);
  return bytes;
}

/**
 * Calibration batches as one blob: a little-endian u32 header length, a JSON header
 * (per batch, per input: name and shape) and the float32 data in that order. The batch
 * boundaries are kept: phase-1 sums run per batch, and a worker must sum as a local run does.
 */
export async function packBatches(batches: Batches): Promise<Uint8Array> {
  const header: [string, number[]][][] = [];
  const parts: Uint8Array[] = [];
  for await (const b of batches()) {
    header.push(Object.entries(b).map(([k, t]) => [k, t.shape]));
    for (const t of Object.values(b)) parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length);
  return Buffer.concat([len, h, ...parts]);
}

/** The batches of a {@link packBatches} blob (each tensor a copy, aligned). */
export function unpackBatches(bytes: Uint8Array): Record<string, Tensor>[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = () => new MpqError('MPQ_BAD_INPUT', 'the calibration blob is malformed');
  if (buf.length < 4) throw bad();
  const hl = buf.readUInt32LE(0);
  if (4 + hl > buf.length) throw bad();
  let header: [string, number[]][][];
  try {
    header = JSON.parse(buf.subarray(4, 4 + hl).toString('utf8'));
  } catch {
    throw bad();
  }
  let off = 4 + hl;
  const out: Record<string, Tensor>[] = [];
  for (const b of header) {
    const batch: Record<string, Tensor> = {};
    for (const [name, shape] of b) {
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad();
      const n = shape.reduce((a, d) => a * d, 1);
      if (off + 4 * n > buf.length) throw bad();
      const data = new Float32Array(n);
      new Uint8Array(data.buffer).set(buf.subarray(off, off + 4 * n));
      off += 4 * n;
      batch[name] = { shape, data };
    }
    out.push(batch);
  }
  if (off !== buf.length) throw bad();
  return out;
}
