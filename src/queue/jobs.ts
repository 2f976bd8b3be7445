/** What travels on the queue between a coordinator (`mpq search --redis`) and `mpq worker`. */
import IORedis, { Redis } from 'ioredis';
import { MpqError } from '../errors';
import { Profile } from '../profiles/profile';
import type { Session } from '../search/session';
import type { SearchOptions, SearchTarget } from '../search/search';

/** The BullMQ queue of phase-1 chunks (default name) and the prefix of every key, blobs included. */
export const QUEUE = 'mpq-phase1';
/** The BullMQ queue of whole searches (default name). */
export const SEARCH_QUEUE = 'mpq-search';
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

/** The search options that travel with a whole-search job (everything else is data or a blob). */
export type RemoteSearchOptions = Pick<SearchOptions, 'weightRange' | 'actRange' | 'rounding' | 'roundingOptions' | 'order' | 'task' | 'targetSearch' | 'record'>;

/** One whole search: phases 1 to 3, the export and the report, on one worker. */
export interface SearchJobData {
  kind: 'search';
  /** SHA-256 of the ONNX bytes (a blob). */
  model: string;
  /** SHA-256 of the packed calibration batches (a blob). */
  data: string;
  fingerprint: string;
  count: number;
  profile: Profile;
  target: SearchTarget;
  options: RemoteSearchOptions;
}

/** The name under which a search job's sensitivity cache comes back (in `files`). */
export const CACHE_FILE = 'cache/sensitivity.jsonl';

export interface SearchJobResult {
  worker: string;
  /** Each output file (by name) as a blob in Redis. */
  files: Record<string, string>;
}

/** A Redis connection as BullMQ wants it (commands wait for a reconnect instead of failing). */
export function connect(url: string): Redis {
  if (!/^rediss?:\/\//.test(url)) throw new MpqError('MPQ_BAD_INPUT', `--redis must be a redis:// or rediss:// URL, got '${url}'`);
  const c = new IORedis(url, { maxRetriesPerRequest: null });
  // a lost connection is retried; commands wait for it (BullMQ reports what fails)
  c.on('error', () => {});
  return c;
}
