/** Command-line options that describe DATA (calibration or evaluation samples). */
import { Command } from 'commander';
import { MpqError } from '../errors';
import { DataSource, DataSourceOptions, openDataSource, parsePreprocess } from '../data';
import { Model } from '../model';

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

/** The batch size the model fixes: a number on axis 0 of every input, the same for all (else undefined). */
export function declaredBatch(model: Model): number | undefined {
  const sizes = model.graph.inputs.map((i) => i.dims?.[0]);
  const b = sizes[0];
  return typeof b === 'number' && b > 0 && sizes.every((s) => s === b) ? b : undefined;
}

/**
 * Opens DATA in batches the model accepts: of the size it declares (a model exported with
 * batch 1 gets batches of 1) unless --batch says otherwise, else 32. With a declared batch
 * B > 1, the samples past the last multiple of B are left out (with a note on stderr).
 */
export async function openData(spec: string, model: Model, f: DataFlags): Promise<DataSource> {
  const rank = model.graph.inputs[0]?.dims?.length;
  const declared = declaredBatch(model);
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
    expect: Object.fromEntries(model.graph.inputs.map((i) => [i.name, { sampleDims: i.dims ? i.dims.slice(1) : null, dtype: i.dtype }])),
    skipBadSamples: !!f.skipBadSamples,
  };
  if (f.select && !['all', 'even', 'odd'].includes(f.select)) throw new MpqError('MPQ_BAD_INPUT', `--select must be all, even or odd`);
  const data = parseDataSpec(spec, model);
  const src = await openDataSource(data, opts);
  if (src.count === 0) throw new MpqError('MPQ_BAD_INPUT', `no samples selected from '${spec}'`);
  if (declared === undefined || declared === 1 || batchSize !== declared || src.count % declared === 0) return src;
  const whole = src.count - (src.count % declared);
  if (whole === 0) throw new MpqError('MPQ_INPUT_SHAPE', `the model takes batches of exactly ${declared} samples (declared on axis 0 of its inputs), but only ${src.count} are selected from '${spec}'`);
  if (!f.quiet) process.stderr.write(`mpq: the model takes batches of exactly ${declared}: using ${whole} of the ${src.count} samples\n`);
  return openDataSource(data, { ...opts, limit: whole });
}
