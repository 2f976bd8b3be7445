/** Command-line options that describe DATA (calibration or evaluation samples). */
import { Command } from 'commander';
import { MpqError } from '../errors';
import { DataSource, DataSourceOptions, openDataSource, parsePreprocess } from '../data';
import { Model, Tensor } from '../model';

export interface DataFlags {
  preset?: string;
  preprocess?: string;
  select?: 'all' | 'even' | 'odd';
  limit?: string;
  offset?: string;
  batch?: string;
  quiet?: boolean;
  skipBadSamples?: boolean;
}

/** Adds --preset, --preprocess, --select, --limit, --offset, --batch. */
export function addDataFlags(c: Command): Command {
  return c
    .option('--preset <name>', 'image preprocessing preset: imagenet-tf, imagenet-torch, paddleocr-rec, paddleocr-cls')
    .option('--preprocess <k=v,...>', 'image preprocessing options (override the preset), e.g. resize=256,crop=224,order=rgb')
    .option('--select <all|even|odd>', 'keep all, even or odd sample indices', 'all')
    .option('--limit <n>', 'at most this many samples')
    .option('--offset <n>', 'skip this many selected samples')
    .option('--batch <n>', 'batch size (default: the batch size the model declares, else 32)')
    .option('--skip-bad-samples', 'skip unusable samples (undecodable or truncated files, NaN/Inf, wrong values) with a warning instead of failing');
}

const int = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new MpqError('MPQ_BAD_INPUT', `--${name} must be a non-negative integer, got '${v}'`);
  return n;
};

/** DATA may be one path (single-input models) or NAME=PATH pairs, comma-separated. */
export function parseDataSpec(spec: string, model: Model): string | Record<string, string> {
  if (!spec.includes('=')) {
    if (model.inputNames.length !== 1) {
      throw new MpqError('MPQ_BAD_INPUT', `the model has ${model.inputNames.length} inputs (${model.inputNames.join(', ')}); give data as NAME=PATH,NAME=PATH`);
    }
    return spec;
  }
  const out: Record<string, string> = {};
  for (const part of spec.split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) throw new MpqError('MPQ_BAD_INPUT', `data '${part}' must be NAME=PATH`);
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/**
 * Per input, the axis that holds the batch, or null where it has none. The batch is axis 0 of
 * the first input; other inputs have it where the same symbol (or, all sizes fixed, the same
 * size) is: exporters put it on axis 1 of recurrent state inputs (`h: [2, batch, 64]`), and
 * an input of fixed shape beside a symbolic batch (a sample rate `sr: []`) has none.
 */
export function batchAxes(model: Model): Record<string, number | null> {
  const b = model.graph.inputs[0]?.dims?.[0];
  return Object.fromEntries(
    model.graph.inputs.map((i) => {
      const d = i.dims;
      if (!d || b === undefined || b === null) return [i.name, 0];
      const k = d.indexOf(b);
      return [i.name, k >= 0 ? k : d.some((x) => typeof x !== 'number') ? 0 : null];
    }),
  );
}

/** The batch size the model fixes: a number on axis 0 of the first input, where every input's batch axis has it (else undefined). */
export function declaredBatch(model: Model): number | undefined {
  const b = model.graph.inputs[0]?.dims?.[0];
  const axes = batchAxes(model);
  return typeof b === 'number' && b > 0 && model.graph.inputs.every((i) => axes[i.name] === null || i.dims?.[axes[i.name]!] === b) ? b : undefined;
}

/** `t` (samples on axis 0) with its sample axis moved to axis `k` (null: no batch axis, every sample of the batch must be the same). */
function toBatchAxis(name: string, t: Tensor, k: number | null): Tensor {
  if (k === 0) return t;
  const [n, ...rest] = t.shape;
  const len = rest.reduce((a, c) => a * c, 1);
  if (k === null) {
    for (let j = 1; j < n; j++) {
      for (let e = 0; e < len; e++) {
        if (t.data[j * len + e] !== t.data[e]) {
          throw new MpqError('MPQ_BAD_INPUT', `input '${name}' has no batch axis (shape [${rest}] whatever the batch), but the samples of one batch differ (sample ${j}, element ${e}: ${t.data[j * len + e]} vs ${t.data[e]}); pass --batch 1`);
        }
      }
    }
    return { shape: rest, data: t.data.slice(0, len) };
  }
  // [n, a..., b...] -> [a..., n, b...] with `a` the first k axes of a sample
  const outer = rest.slice(0, k).reduce((a, c) => a * c, 1), inner = len / outer;
  const data = new Float32Array(t.data.length);
  for (let j = 0; j < n; j++) for (let o = 0; o < outer; o++) data.set(t.data.subarray(j * len + o * inner, j * len + (o + 1) * inner), (o * n + j) * inner);
  return { shape: [...rest.slice(0, k), n, ...rest.slice(k)], data };
}

/** `src` with each batch's tensors laid out as the model's inputs have their batch axes. */
function onBatchAxes(src: DataSource, axes: Record<string, number | null>): DataSource {
  if (Object.values(axes).every((k) => k === 0)) return src;
  const lay = (b: Record<string, Tensor>) => Object.fromEntries(Object.entries(b).map(([n, t]) => [n, toBatchAxis(n, t, n in axes ? axes[n] : 0)]));
  return {
    ...src,
    async *batches(size?: number) {
      for await (const b of src.batches(size)) yield lay(b);
    },
    async *batchesWithInfo(size?: number) {
      for await (const b of src.batchesWithInfo(size)) yield { ...b, inputs: lay(b.inputs) };
    },
  };
}

/**
 * Opens DATA in batches the model accepts: of the size it declares (a model exported with
 * batch 1 gets batches of 1) unless --batch says otherwise, else 32. With a declared batch
 * B > 1, the samples past the last multiple of B are left out (with a note on stderr).
 */
export async function openData(spec: string, model: Model, f: DataFlags): Promise<DataSource> {
  const rank = model.graph.inputs[0]?.dims?.length;
  const declared = declaredBatch(model);
  const axes = batchAxes(model);
  const batchSize = int(f.batch, 'batch') || declared || 32;
  const opts: DataSourceOptions = {
    preset: f.preset,
    preprocess: f.preprocess ? parsePreprocess(f.preprocess) : undefined,
    inputName: model.inputNames[0],
    sampleRank: rank !== undefined ? rank - 1 : undefined,
    select: f.select,
    limit: int(f.limit, 'limit'),
    offset: int(f.offset, 'offset'),
    batchSize,
    // one sample is the input without its batch axis
    expect: Object.fromEntries(model.graph.inputs.map((i) => [i.name, { sampleDims: i.dims ? i.dims.filter((_, k) => k !== axes[i.name]) : null, dtype: i.dtype }])),
    skipBadSamples: !!f.skipBadSamples,
  };
  if (f.select && !['all', 'even', 'odd'].includes(f.select)) throw new MpqError('MPQ_BAD_INPUT', `--select must be all, even or odd`);
  const data = parseDataSpec(spec, model);
  const src = onBatchAxes(await openDataSource(data, opts), axes);
  if (src.count === 0) throw new MpqError('MPQ_BAD_INPUT', `no samples selected from '${spec}'`);
  if (declared === undefined || declared === 1 || batchSize !== declared || src.count % declared === 0) return src;
  const whole = src.count - (src.count % declared);
  if (whole === 0) throw new MpqError('MPQ_INPUT_SHAPE', `the model takes batches of exactly ${declared} samples (declared on axis 0 of its inputs), but only ${src.count} are selected from '${spec}'`);
  if (!f.quiet) process.stderr.write(`mpq: the model takes batches of exactly ${declared}: using ${whole} of the ${src.count} samples\n`);
  return onBatchAxes(await openDataSource(data, { ...opts, limit: whole }), axes);
}
