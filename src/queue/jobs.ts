/** What travels on the queue between a coordinator (`mpq search --redis`) and `mpq worker`. */
import IORedis, { Redis } from 'ioredis';
import { MpqError } from '../errors';
import { Profile } from '../profiles/profile';
import type { Session } from '../search/session';

/** The BullMQ queue of phase-1 chunks (default name) and the prefix of every key, blobs included. */
export const QUEUE = 'mpq-phase1';
export const PREFIX = 'mpq';

/** One chunk of phase-1 entries of one quantization session. */
export interface Phase1JobData {
  kind: 'phase1';
  /** The session key (hash of model, profile, data, options) the worker must arrive at. */
  key: string;
  /** SHA-256 of the ONNX bytes (a blob). */
  model: string;
  /** SHA-256 of the packed calibration batches (a blob). */
  data: string;
  fingerprint: string;
  count: number;
  profile: Profile;
  options: Session['options'];
  /** [group id, candidate key] per entry. */
  entries: [number, string][];
}

export interface Phase1JobResult {
  /** Who computed the chunk (`--name`, default host:pid). */
  worker: string;
  results: { group: number; candidate: string; powers: Record<string, [number, number]> }[];
}

/** A Redis connection as BullMQ wants it (commands wait for a reconnect instead of failing). */
export function connect(url: string): Redis {
  if (!/^rediss?:\/\//.test(url)) throw new MpqError('MPQ_BAD_INPUT', `--redis must be a redis:// or rediss:// URL, got '${url}'`);
  const c = new IORedis(url, { maxRetriesPerRequest: null });
  // a lost connection is retried; commands wait for it (BullMQ reports what fails)
  c.on('error', () => {});
  return c;
}
