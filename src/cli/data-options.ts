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
    .option('--batch <n>', 'batch size', '32')
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

export async function openData(spec: string, model: Model, f: DataFlags): Promise<DataSource> {
  const rank = model.graph.inputs[0]?.dims?.length;
  const opts: DataSourceOptions = {
    preset: f.preset,
    preprocess: f.preprocess ? parsePreprocess(f.preprocess) : undefined,
    inputName: model.inputNames[0],
    sampleRank: rank !== undefined ? rank - 1 : undefined,
    select: f.select,
    limit: int(f.limit, 'limit'),
    offset: int(f.offset, 'offset'),
    batchSize: int(f.batch, 'batch') || 32,
    expect: Object.fromEntries(model.graph.inputs.map((i) => [i.name, { sampleDims: i.dims ? i.dims.slice(1) : null, dtype: i.dtype }])),
    skipBadSamples: !!f.skipBadSamples,
  };
  if (f.select && !['all', 'even', 'odd'].includes(f.select)) throw new MpqError('MPQ_BAD_INPUT', `--select must be all, even or odd`);
  const src = await openDataSource(parseDataSpec(spec, model), opts);
  if (src.count === 0) throw new MpqError('MPQ_BAD_INPUT', `no samples selected from '${spec}'`);
  return src;
}
