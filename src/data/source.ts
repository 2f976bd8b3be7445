/**
 * Calibration and evaluation data ("DATA" on the command line), streamed in batches.
 *
 * A spec is one of:
 * - a folder of JPEG/PNG images (sorted by file name), decoded with a preset or preprocess options;
 * - a folder of `.npy` files, each one sample or each a batch of samples (leading axis);
 * - one `.npy` file with a leading sample axis;
 * - for a model with several inputs, a record `{ NAME: PATH }` of the above (CLI form NAME=PATH).
 *
 * Memory stays at about two batches whatever the number of samples: `.npy` files are read with
 * positioned reads of the rows a batch needs, and images are decoded batch by batch (the next
 * batch is prepared while the current one is used).
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { MpqError } from '../errors';
import { fixedImageSize, ImagePreprocess, loadImages, probeImages, toNativeOptions, NativeImageOptions } from './images';
import { NpyHeader, readNpyAll, readNpyHeader, readNpyRows } from './npy-stream';
import { presetOptions } from './presets';

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** Concatenates batches of the same sample shapes along the batch axis. */
function concatBatches(parts: BatchInfo[], inputNames: string[]): BatchInfo {
  const inputs: Record<string, Tensor> = {};
  for (const n of inputNames) {
    const ts = parts.map((p) => p.inputs[n]);
    const tail = ts[0].shape.slice(1);
    const bad0 = ts.find((t) => !eqShape(t.shape.slice(1), tail));
    if (bad0) throw bad(`samples of input '${n}' differ in shape: ${fmt(tail)} and ${fmt(bad0.shape.slice(1))}`);
    const data = new Float32Array(ts.reduce((a, t) => a + t.data.length, 0));
    let at = 0;
    for (const t of ts) {
      data.set(t.data, at);
      at += t.data.length;
    }
    inputs[n] = { shape: [ts.reduce((a, t) => a + t.shape[0], 0), ...tail], data };
  }
  return { inputs, indices: parts.flatMap((p) => p.indices), names: parts.flatMap((p) => p.names) };
}

/** A folder or file path, or `{ inputName: path }` for models with several inputs. */
export type DataSpec = string | Record<string, string>;

export interface DataSourceOptions {
  /** Image preset name (see `PRESETS`); `preprocess` fields override it. */
  preset?: string;
  /** Image preprocessing (with or without a preset). */
  preprocess?: ImagePreprocess;
  /** Input name for a single-path spec (default `input`). */
  inputName?: string;
  /**
   * Rank of one sample (the model input's rank less the batch axis), to tell a folder of
   * per-sample `.npy` files from one of batched files. Without it: files whose shapes differ
   * only in the first axis, or that all start with an axis of 1, are batched.
   */
  sampleRank?: number;
  /** `[start, end)` over sample indices (before `select`). */
  range?: [number, number];
  /** Keep even or odd sample indices (ImageNet samples: calibrate on even, evaluate on odd). */
  select?: 'all' | 'even' | 'odd';
  /** Skip this many of the selected samples. */
  offset?: number;
  /** At most this many samples (after range, select and offset). */
  limit?: number;
  /** Default batch size of `batches()` (32). */
  batchSize?: number;
  /**
   * What the model expects of each input, to check the data against before and while it
   * streams: the declared dims of one sample (without the batch axis; strings or null are
   * free) and the element type.
   */
  expect?: Record<string, { sampleDims?: (number | string | null)[] | null; dtype?: 'float' | 'int' | 'bool' }>;
  /**
   * Skip samples that cannot be used (undecodable or truncated files, NaN or Inf, values out
   * of range) with a warning through `onWarning`, instead of failing on the first one.
   */
  skipBadSamples?: boolean;
  /** Receives warnings (skipped samples). Default: stderr. */
  onWarning?: (msg: string) => void;
}

/** Values of float data beyond this magnitude are refused: no real input is that large, and squares of them overflow float32. */
export const MAX_ABS_VALUE = 1e15;

export interface BatchInfo {
  inputs: Record<string, Tensor>;
  /** Sample indices in the source (file order). */
  indices: number[];
  /** Sample names: image or .npy file names, or `FILE.npy[i]` for rows of a batched file. */
  names: string[];
}

export interface DataSource {
  /** Number of selected samples. */
  readonly count: number;
  readonly inputNames: string[];
  /** Per input, the shape of one sample when it is known before decoding. */
  readonly sampleShapes: Record<string, number[] | undefined>;
  /** Selected sample indices, in order. */
  readonly indices: number[];
  /** Names of the selected samples (of the first input), in order. */
  readonly names: string[];
  /** Samples left out while streaming so far (`skipBadSamples`); not counted in `count`'s use. */
  skipped(): string[];
  /** A hash of the files (names, sizes, modification times), preprocessing and selection. */
  fingerprint(): string;
  /** The selected samples in batches of `batchSize` (the last one may be smaller). */
  batches(batchSize?: number): AsyncGenerator<Record<string, Tensor>>;
  /** As `batches`, with the indices and names of each batch's samples. */
  batchesWithInfo(batchSize?: number): AsyncGenerator<BatchInfo>;
}

const bad = (msg: string) => new MpqError('MPQ_BAD_INPUT', msg);
const SKIP_HINT = ' (pass --skip-bad-samples to skip such samples with a warning)';
/** A bad-sample error, with the hint that such samples can be skipped. */
const hint = (e: unknown) => (e instanceof MpqError && e.code === 'MPQ_BAD_INPUT' && !e.message.endsWith(SKIP_HINT) ? new MpqError(e.code, e.message + SKIP_HINT, { cause: e }) : e);
/** Warnings printed so far: a sample skipped in one pass is not announced again when the same data is re-opened (the end-of-run verification reads the calibration data again). */
const printed = new Set<string>();
const warn = (opts: DataSourceOptions, msg: string) => {
  if (opts.onWarning) return opts.onWarning(msg);
  if (printed.has(msg)) return;
  printed.add(msg);
  process.stderr.write(`mpq: warning: ${msg}\n`);
};

const IMAGE_EXT = /\.(jpe?g|png)$/i;
const NPY_EXT = /\.npy$/i;

/** One input's samples. */
interface InputReader {
  readonly path: string;
  readonly count: number;
  readonly sampleShape: number[] | undefined;
  name(i: number): string;
  /** Files whose identity goes into the fingerprint. */
  files(): string[];
  /** Extra fingerprint text (options). */
  describe(): string;
  /** Checks the selected samples before streaming (sizes, headers). */
  check(indices: number[]): Promise<void>;
  load(indices: number[]): Promise<Tensor>;
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const prod = (s: number[]) => s.reduce((a, c) => a * c, 1);
const eqShape = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
const fmt = (s: number[]) => `[${s.join(', ')}]`;

class ImageFolder implements InputReader {
  readonly count: number;
  readonly sampleShape: number[] | undefined;
  private nopts: NativeImageOptions;
  constructor(readonly path: string, private list: string[], private pre: ImagePreprocess) {
    this.count = list.length;
    this.nopts = toNativeOptions(pre);
    const fixed = fixedImageSize(pre);
    const nhwc = pre.layout === 'nhwc';
    this.sampleShape = fixed ? (nhwc ? [fixed[0], fixed[1], 3] : [3, fixed[0], fixed[1]]) : undefined;
  }
  name(i: number) {
    return this.list[i];
  }
  files() {
    return this.list.map((f) => path.join(this.path, f));
  }
  describe() {
    return JSON.stringify(this.nopts);
  }
  async check(indices: number[]) {
    const files = indices.map((i) => path.join(this.path, this.list[i]));
    files.forEach(checkImageEnd);
    const sizes = await probeImages(files);
    if (this.sampleShape || this.pre.resize !== undefined) return;
    const [h, w] = sizes[0] ?? [0, 0];
    const j = sizes.findIndex(([a, b]) => a !== h || b !== w);
    if (j >= 0) {
      throw bad(
        `images in '${this.path}' differ in size: ${this.list[indices[0]]} is ${h}x${w} (HxW) but ${this.list[indices[j]]} is ${sizes[j][0]}x${sizes[j][1]}; ` +
          'resize, crop or pad them to one size (a preset or preprocess options)',
      );
    }
  }
  async load(indices: number[]): Promise<Tensor> {
    const b = await loadImages(indices.map((i) => path.join(this.path, this.list[i])), this.nopts);
    return { shape: b.shape, data: b.data };
  }
}

/**
 * Refuses JPEG and PNG files cut short: decoders fill the missing part of a truncated JPEG
 * with grey instead of failing. A JPEG ends with the end-of-image marker (FF D9; inside the
 * compressed data an FF is always followed by 00 or a restart marker), a PNG with its IEND chunk.
 */
function checkImageEnd(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw bad(`cannot read image '${file}': ${(e as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(8);
    fs.readSync(fd, head, 0, 8, 0);
    const tail = Buffer.alloc(Math.min(size, 4096));
    fs.readSync(fd, tail, 0, tail.length, size - tail.length);
    const jpeg = head[0] === 0xff && head[1] === 0xd8;
    const png = head.toString('latin1', 1, 4) === 'PNG';
    if (jpeg && tail.lastIndexOf(Buffer.from([0xff, 0xd9])) < 0) throw bad(`image '${file}' is a truncated JPEG (no end-of-image marker)`);
    if (png && tail.lastIndexOf(Buffer.from('IEND', 'latin1')) < 0) throw bad(`image '${file}' is a truncated PNG (no IEND chunk)`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Samples from .npy files: each file one sample (`rows` 0) or a batch of samples along axis 0. */
class NpyFiles implements InputReader {
  readonly count: number;
  readonly sampleShape: number[];
  private starts: number[] = [];
  constructor(readonly path: string, private headers: NpyHeader[], private batched: boolean, private single: boolean) {
    let n = 0;
    for (const h of headers) {
      this.starts.push(n);
      n += batched ? h.shape[0] : 1;
    }
    this.count = n;
    this.sampleShape = batched ? headers[0].shape.slice(1) : headers[0].shape.slice();
  }
  private locate(i: number): [number, number] {
    let lo = 0, hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    return [lo, i - this.starts[lo]];
  }
  name(i: number) {
    const [f, r] = this.locate(i);
    const base = path.basename(this.headers[f].file);
    return this.batched && (this.single || this.headers[f].shape[0] !== 1) ? `${base}[${r}]` : base;
  }
  files() {
    return this.headers.map((h) => h.file);
  }
  describe() {
    return `npy batched=${this.batched}`;
  }
  async check() {}
  async load(indices: number[]): Promise<Tensor> {
    const len = prod(this.sampleShape);
    const out = new Float32Array(indices.length * len);
    let k = 0;
    while (k < indices.length) {
      const [f] = this.locate(indices[k]);
      // the run of this batch's indices in the same file
      let e = k + 1;
      while (e < indices.length && this.locate(indices[e])[0] === f) e++;
      const h = this.headers[f];
      if (this.batched) readNpyRows(h, indices.slice(k, e).map((i) => i - this.starts[f]), out, k * len);
      else for (let j = k; j < e; j++) readNpyAll(h, out, j * len);
      k = e;
    }
    return { shape: [indices.length, ...this.sampleShape], data: out };
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true }).filter((d) => d.isFile() || d.isSymbolicLink()).map((d) => d.name).sort(byName);
  } catch (e) {
    throw bad(`cannot read data folder '${dir}': ${(e as Error).message}`);
  }
}

function imageOptions(p: string, opts: DataSourceOptions): ImagePreprocess {
  if (opts.preset) return presetOptions(opts.preset, opts.preprocess);
  if (opts.preprocess) return opts.preprocess;
  throw bad(`'${p}' holds images: give a preset (imagenet-tf, imagenet-torch, paddleocr-rec, paddleocr-cls) or preprocess options`);
}

function npyFolder(dir: string, names: string[], opts: DataSourceOptions): NpyFiles {
  const headers: NpyHeader[] = [];
  for (const n of names) {
    try {
      headers.push(readNpyHeader(path.join(dir, n)));
    } catch (e) {
      if (!opts.skipBadSamples || !(e instanceof MpqError)) throw hint(e);
      warn(opts, `skipping ${e.message}`);
    }
  }
  if (headers.length === 0) throw bad(`data folder '${dir}' has no readable .npy file`);
  const shapes = headers.map((h) => h.shape);
  const sameTail = (a: number[], b: number[]) => a.length === b.length && a.length > 0 && eqShape(a.slice(1), b.slice(1));
  let batched: boolean;
  if (opts.sampleRank !== undefined) {
    const r = opts.sampleRank;
    const bad0 = headers.find((h) => h.shape.length !== r && h.shape.length !== r + 1);
    if (bad0) throw bad(`${bad0.file}: shape ${fmt(bad0.shape)} has rank ${bad0.shape.length}; one sample has rank ${r} (or ${r + 1} with a leading batch axis)`);
    batched = headers[0].shape.length === r + 1;
    const mixed = headers.find((h) => (h.shape.length === r + 1) !== batched);
    if (mixed) throw bad(`'${dir}' mixes batched and unbatched .npy files (${path.basename(headers[0].file)} ${fmt(headers[0].shape)}, ${path.basename(mixed.file)} ${fmt(mixed.shape)})`);
  } else {
    const allSame = shapes.every((s) => eqShape(s, shapes[0]));
    batched = allSame ? shapes[0].length > 0 && shapes[0][0] === 1 : shapes.every((s) => sameTail(s, shapes[0]));
  }
  for (const h of headers) {
    const ok = batched ? sameTail(h.shape, headers[0].shape) : eqShape(h.shape, headers[0].shape);
    if (!ok) {
      throw bad(
        `samples in '${dir}' differ in shape: ${path.basename(headers[0].file)} is ${fmt(headers[0].shape)} but ${path.basename(h.file)} is ${fmt(h.shape)}`,
      );
    }
  }
  return new NpyFiles(dir, headers, batched, false);
}

function openReader(p: string, opts: DataSourceOptions): InputReader {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw bad(`data path '${p}' does not exist`);
  }
  if (st.isDirectory()) {
    const names = listDir(p);
    const images = names.filter((n) => IMAGE_EXT.test(n));
    const npys = names.filter((n) => NPY_EXT.test(n));
    if (images.length && npys.length) throw bad(`data folder '${p}' holds both images and .npy files; keep one kind per folder`);
    if (images.length) return new ImageFolder(p, images, imageOptions(p, opts));
    if (npys.length) return npyFolder(p, npys, opts);
    throw bad(`data folder '${p}' is empty: no .jpg, .jpeg, .png or .npy files`);
  }
  if (NPY_EXT.test(p)) {
    const h = readNpyHeader(p);
    if (h.shape.length < 1) throw bad(`${p}: a single .npy needs a leading sample axis, shape is ${fmt(h.shape)}`);
    return new NpyFiles(p, [h], true, true);
  }
  if (IMAGE_EXT.test(p)) return new ImageFolder(path.dirname(p), [path.basename(p)], imageOptions(p, opts));
  throw bad(`data path '${p}' is neither a folder, a .npy file nor an image`);
}

/** The sample indices that `opts` selects from `count` samples. */
export function selectIndices(count: number, opts: Pick<DataSourceOptions, 'range' | 'select' | 'offset' | 'limit'>): number[] {
  let [start, end] = opts.range ?? [0, count];
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) {
    throw bad(`range must be [start, end) with 0 <= start <= end, got ${JSON.stringify(opts.range)}`);
  }
  end = Math.min(end, count);
  const sel = opts.select ?? 'all';
  if (!['all', 'even', 'odd'].includes(sel)) throw bad(`select must be all, even or odd, got '${sel}'`);
  const out: number[] = [];
  for (let i = start; i < end; i++) {
    if (sel === 'even' && i % 2 !== 0) continue;
    if (sel === 'odd' && i % 2 !== 1) continue;
    out.push(i);
  }
  const off = opts.offset ?? 0;
  const lim = opts.limit ?? Infinity;
  if (!Number.isInteger(off) || off < 0) throw bad(`offset must be a non-negative integer, got ${off}`);
  if (lim !== Infinity && (!Number.isInteger(lim) || lim < 0)) throw bad(`limit must be a non-negative integer, got ${lim}`);
  return out.slice(off, off + lim);
}

/**
 * Opens a data source. Reads folder listings and .npy headers, and image headers of the selected
 * images; decodes nothing yet. Throws MPQ_BAD_INPUT on a missing or empty folder, unreadable
 * files, or samples of different shapes.
 */
export async function openDataSource(spec: DataSpec, opts: DataSourceOptions = {}): Promise<DataSource> {
  const entries: [string, string][] = typeof spec === 'string' ? [[opts.inputName ?? 'input', spec]] : Object.entries(spec);
  if (entries.length === 0) throw bad('no data given');
  const readers = entries.map(([, p]) => openReader(p, opts));
  const count0 = readers[0].count;
  readers.forEach((r, i) => {
    if (r.count !== count0) {
      throw bad(`inputs have different numbers of samples: '${entries[0][0]}' has ${count0} (${entries[0][1]}), '${entries[i][0]}' has ${r.count} (${entries[i][1]})`);
    }
  });
  const inputNames = entries.map(([n]) => n);
  let indices = selectIndices(count0, opts);
  const skip = !!opts.skipBadSamples;
  /** Samples left out while streaming (each batch may be streamed several times: warned once). */
  const skipped = new Set<string>();
  for (const r of readers) {
    try {
      await r.check(indices);
    } catch (e) {
      if (!skip || !(e instanceof MpqError) || indices.length === 0) throw hint(e);
      // find the unreadable samples one by one and leave them out
      const ok: number[] = [];
      for (const i of indices) {
        try {
          await r.check([i]);
          ok.push(i);
        } catch (e1) {
          if (!(e1 instanceof MpqError)) throw e1;
          warn(opts, `skipping sample '${r.name(i)}': ${e1.message}`);
        }
      }
      if (ok.length === indices.length) throw hint(e); // not a per-sample problem
      indices = ok;
      await r.check(indices);
    }
  }
  inputNames.forEach((n, k) => {
    const sh = readers[k].sampleShape;
    if (sh) checkShape(n, sh, `'${entries[k][1]}'`);
  });
  const defaultBatch = opts.batchSize ?? 32;
  if (!Number.isInteger(defaultBatch) || defaultBatch < 1) throw bad(`batchSize must be a positive integer, got ${opts.batchSize}`);

  /** Checks one sample's shape against the model's declared dims. */
  function checkShape(input: string, sampleShape: number[], where: string): void {
    const want = opts.expect?.[input]?.sampleDims;
    if (!want) return;
    const ok = want.length === sampleShape.length && want.every((d, i) => typeof d !== 'number' || d === sampleShape[i]);
    if (!ok) {
      throw bad(
        `${where}: one sample of input '${input}' has shape ${fmt(sampleShape)}, the model expects [${want.map((d) => (typeof d === 'number' ? d : '?')).join(', ')}] ` +
          '(check the preprocessing, or the data folder)',
      );
    }
  }

  /** Why sample `j` of a batch cannot be used, or undefined. */
  function sampleProblem(inputs: Record<string, Tensor>, j: number): string | undefined {
    for (const n of inputNames) {
      const t = inputs[n];
      const len = t.shape.slice(1).reduce((a, c) => a * c, 1);
      const d = t.data.subarray(j * len, (j + 1) * len);
      const dtype = opts.expect?.[n]?.dtype ?? 'float';
      for (let k = 0; k < d.length; k++) {
        const v = d[k];
        if (v !== v || v === Infinity || v === -Infinity) return `input '${n}' has ${v} at element ${k}; calibration data must be finite`;
        if (dtype === 'float' ? Math.abs(v) > MAX_ABS_VALUE : !Number.isInteger(v)) {
          const shown = Number(v.toPrecision(7)); // float32 digits
          return dtype === 'float'
            ? `input '${n}' has ${shown} at element ${k}, beyond +-${MAX_ABS_VALUE} (corrupt data, or a missing normalisation?)`
            : `input '${n}' is ${dtype === 'bool' ? 'boolean' : 'an integer'} in the model, but the data has ${shown} at element ${k}`;
        }
      }
    }
    return undefined;
  }

  /** Keeps samples `keep` (positions in the batch) of every input. */
  function pick(b: BatchInfo, keep: number[]): BatchInfo {
    const inputs: Record<string, Tensor> = {};
    for (const n of inputNames) {
      const t = b.inputs[n];
      const len = t.shape.slice(1).reduce((a, c) => a * c, 1);
      const data = new Float32Array(keep.length * len);
      keep.forEach((j, k) => data.set(t.data.subarray(j * len, (j + 1) * len), k * len));
      inputs[n] = { shape: [keep.length, ...t.shape.slice(1)], data };
    }
    return { inputs, indices: keep.map((j) => b.indices[j]), names: keep.map((j) => b.names[j]) };
  }

  async function loadRaw(idx: number[]): Promise<BatchInfo> {
    const tensors = await Promise.all(readers.map((r) => r.load(idx)));
    const inputs: Record<string, Tensor> = {};
    inputNames.forEach((n, i) => {
      const t = tensors[i];
      if (!readers[i].sampleShape) checkShape(n, t.shape.slice(1), `sample '${readers[i].name(idx[0])}'`);
      inputs[n] = t;
    });
    return { inputs, indices: idx, names: idx.map((i) => readers[0].name(i)) };
  }

  /** Loads and checks a batch; with `skipBadSamples`, leaves out (and warns about) bad samples. */
  async function loadBatch(idx: number[]): Promise<BatchInfo> {
    let b: BatchInfo;
    try {
      b = await loadRaw(idx);
    } catch (e) {
      if (!skip || !(e instanceof MpqError) || e.code !== 'MPQ_BAD_INPUT') throw hint(e);
      // one sample at a time, to find the ones that do not load
      const parts: BatchInfo[] = [];
      for (const i of idx) {
        try {
          parts.push(await loadRaw([i]));
        } catch (e1) {
          if (!(e1 instanceof MpqError) || e1.code !== 'MPQ_BAD_INPUT') throw e1;
          skipped.add(readers[0].name(i));
          warn(opts, `skipping sample '${readers[0].name(i)}': ${e1.message}`);
        }
      }
      if (parts.length === idx.length) throw hint(e); // not a per-sample problem (samples of different sizes)
      if (parts.length === 0) return { inputs: {}, indices: [], names: [] }; // left out by the caller
      b = concatBatches(parts, inputNames);
    }
    const keep: number[] = [];
    for (let j = 0; j < b.indices.length; j++) {
      const p = sampleProblem(b.inputs, j);
      if (p === undefined) keep.push(j);
      else if (skip) {
        if (!skipped.has(b.names[j])) warn(opts, `skipping sample '${b.names[j]}': ${p}`);
        skipped.add(b.names[j]);
      }
      else throw bad(`sample '${b.names[j]}': ${p}${SKIP_HINT}`);
    }
    return keep.length === b.indices.length ? b : pick(b, keep);
  }

  async function* withInfo(batchSize = defaultBatch): AsyncGenerator<BatchInfo> {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw bad(`batchSize must be a positive integer, got ${batchSize}`);
    const chunks: number[][] = [];
    for (let i = 0; i < indices.length; i += batchSize) chunks.push(indices.slice(i, i + batchSize));
    let next: Promise<BatchInfo> | undefined = chunks.length ? loadBatch(chunks[0]) : undefined;
    let yielded = 0;
    for (let c = 0; c < chunks.length; c++) {
      const cur = await next!;
      // prepare the next batch while this one is used
      next = c + 1 < chunks.length ? loadBatch(chunks[c + 1]) : undefined;
      next?.catch(() => undefined); // surfaced when awaited
      if (cur.indices.length === 0) continue; // every sample of this batch was skipped
      yielded++;
      yield cur;
    }
    if (yielded === 0 && indices.length > 0) throw bad('every sample was skipped as unusable; nothing is left to work on');
  }

  return {
    count: indices.length,
    inputNames,
    sampleShapes: Object.fromEntries(inputNames.map((n, i) => [n, readers[i].sampleShape])),
    indices,
    names: indices.map((i) => readers[0].name(i)),
    skipped: () => [...skipped],
    fingerprint() {
      const h = crypto.createHash('sha256');
      h.update(JSON.stringify({ inputNames, indices }));
      for (const r of readers) {
        h.update(r.describe());
        for (const f of r.files()) {
          const st = fs.statSync(f);
          h.update(`${f}\0${st.size}\0${st.mtimeMs}\n`);
        }
      }
      return h.digest('hex');
    },
    async *batches(batchSize?: number) {
      for await (const b of withInfo(batchSize)) yield b.inputs;
    },
    batchesWithInfo: withInfo,
  };
}
