/** `mpq search`: the mixed-precision search. */
import * as path from 'path';
import { MpqError } from '../errors';
import { loadSampleLabels } from '../eval/labels';
import { Model } from '../model';
import { RangeMethod } from '../quant/ranges';
import { Rounding, ROUNDINGS } from '../quant/rounding';
import { describeVerification, verificationWarning } from '../eval/verify';
import { search } from '../search/search';
import { DataFlags, openData } from './data-options';
import { countedPasses, phaseProgress } from './progress';
import { absoluteDataSpec, calibRecord } from './verify';

export interface SearchFlags extends DataFlags {
  calib: string;
  profile?: string;
  maxDrop?: string;
  maxBops?: string;
  maxSize?: string;
  eval?: string;
  labels?: string;
  task?: string;
  order?: string;
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  rounding?: string;
  sequential?: boolean;
  out: string;
  json?: boolean;
  quiet?: boolean;
  redis?: string;
  queueChunk?: string;
  blobs?: string;
  wholeJob?: boolean;
}

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new MpqError('MPQ_BAD_INPUT', `--${flag} must be a non-negative number, got '${v}'`);
  return n;
};

export async function searchCommand(file: string, f: SearchFlags): Promise<void> {
  const model = Model.fromFile(file);
  const calib = await openData(f.calib, model, f);
  const evalSrc = f.eval ? await openData(f.eval, model, { ...f, select: 'all', limit: undefined, offset: undefined }) : undefined;
  if (f.labels && !evalSrc) throw new MpqError('MPQ_BAD_INPUT', '--labels needs --eval DATA (the labelled evaluation samples)');
  const labels = f.labels ? loadSampleLabels(f.labels) : undefined;
  if (f.order && !['sqnr', 'efficiency', 'auto'].includes(f.order)) throw new MpqError('MPQ_BAD_INPUT', `--order must be sqnr, efficiency or auto`);
  if (f.rounding && !(ROUNDINGS as string[]).includes(f.rounding)) throw new MpqError('MPQ_BAD_INPUT', `--rounding must be one of ${ROUNDINGS.join(', ')}, got '${f.rounding}'`);
  if (f.blobs && !f.redis) throw new MpqError('MPQ_BAD_INPUT', '--blobs goes with --redis (the folder the workers read model and data from)');
  if (f.wholeJob && !f.redis) throw new MpqError('MPQ_BAD_INPUT', '--whole-job goes with --redis (the pool whose workers run the search)');
  if (f.wholeJob && f.eval) throw new MpqError('MPQ_BAD_INPUT', '--whole-job evaluates on the calibration data on the worker: --eval is not taken there yet (drop one of them)');
  const progress = phaseProgress(!f.quiet);
  // passes over the calibration data are shown while calibrating; after that, the search's phases
  let calibrating = true;
  try {
    const r = await search({
      model: file,
      calib: { batches: countedPasses(() => calib.batches(), calib.count, 'calibration', progress, () => calibrating), fingerprint: calib.fingerprint(), count: calib.count },
      profile: f.profile,
      target: { maxDrop: num(f.maxDrop, 'max-drop'), maxBops: num(f.maxBops, 'max-bops'), maxSizeMb: num(f.maxSize, 'max-size') },
      eval: evalSrc ? { batches: () => evalSrc.batchesWithInfo(), labels } : undefined,
      task: f.task,
      order: f.order as 'sqnr' | 'efficiency' | 'auto' | undefined,
      weightRange: f.weightRange,
      actRange: f.actRange,
      rounding: f.rounding as Rounding | undefined,
      roundingOptions: { sequential: !!f.sequential },
      out: f.out,
      queue: f.redis ? { redis: f.redis, chunk: num(f.queueChunk, 'queue-chunk'), blobs: f.blobs && path.resolve(f.blobs), whole: !!f.wholeJob } : undefined,
      onProgress: (p) => {
        if (p.phase === 'calibration') calibrating = p.done < p.total;
        else progress.update(p.phase, p.done, p.total);
      },
      record: {
        calib: calibRecord(f.calib, f, calib.count),
        eval: f.eval && absoluteDataSpec(f.eval),
        labels: f.labels && path.resolve(f.labels),
      },
    });
    progress.stop();
    if (!f.quiet) for (const n of (r.options.notes as string[] | undefined) ?? []) process.stderr.write(`mpq: note: ${n}\n`);
    if (f.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else {
      const s = r.selected;
      process.stdout.write(
        `selected: rel_bops ${s.rel_bops.toFixed(3)}, ${(s.size_bytes / 1e6).toFixed(3)} MB, ${r.metric} ${s.metric.toFixed(4)} (float ${r.float_metric.toFixed(4)})${s.meets_target ? '' : ' - target NOT met'}\n` +
          r.homogeneous.map((h) => `  ${h.name.padEnd(7)} rel_bops ${h.rel_bops.toFixed(3)}  ${r.metric} ${h.metric.toFixed(4)}`).join('\n') +
          `\nphase 1: ${r.phase1.computed} computed${r.phase1.workers ? ` (${Object.entries(r.phase1.workers).map(([w, n]) => `${w}: ${n}`).join(', ')})` : ''}, ${r.phase1.reused} reused; ${r.seconds.total} s\nwrote ${r.files.model}, ${r.files.report}\n` +
          (r.verification ? describeVerification(r.verification).join('\n') + '\n' : ''),
      );
    }
    const warning = verificationWarning(r.verification, r.files.model);
    if (warning) process.stderr.write(warning + '\n');
  } finally {
    progress.stop();
  }
}
