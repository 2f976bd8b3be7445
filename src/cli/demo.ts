/**
 * `mpq demo`: the whole job on a small real model and data that the package carries (demo/,
 * see demo/README.md), no flags needed. It searches PP-OCR's text-direction classifier for
 * the cheapest mixed configuration within 0.75 of W8A8's BOPs (profile demo/profile.json: W4A8, W8A8, W8A16), calibrating on 32 text lines
 * and measuring top-1 direction against the labels of 32 others, and writes the model, the
 * front and the report to ./mpq-demo (or --out).
 */
import * as fs from 'fs';
import * as path from 'path';
import { openDataSource } from '../data';
import { MpqError } from '../errors';
import { describeVerification, verificationWarning } from '../eval/verify';
import { loadSampleLabels } from '../eval/labels';
import { search } from '../search/search';
import { phaseProgress } from './progress';

/** The demo's files, at the package root (../../../demo from dist/src/cli/). */
export const DEMO_DIR = path.resolve(__dirname, '..', '..', '..', 'demo');

export async function demoCommand(opts: { out?: string; json?: boolean; quiet?: boolean }): Promise<void> {
  const model = path.join(DEMO_DIR, 'model', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
  const lines = path.join(DEMO_DIR, 'textlines');
  for (const f of [model, path.join(lines, 'labels.tsv')]) {
    if (!fs.existsSync(f)) throw new MpqError('MPQ_BAD_INPUT', `the demo's file ${f} is missing: reinstall onnx-mpq`);
  }
  const out = path.resolve(opts.out ?? 'mpq-demo');
  const log = opts.json ? () => undefined : (s: string) => process.stdout.write(s + '\n');
  const data = { preset: 'paddleocr-cls' as const, inputName: 'x', batchSize: 16 };
  const calib = await openDataSource(path.join(lines, 'images'), { ...data, range: [0, 32] });
  const evalSrc = await openDataSource(path.join(lines, 'images'), { ...data, range: [32, 64] });
  log(`demo: PP-OCR text-direction classifier (${path.relative(process.cwd(), model) || model})`);
  log(`      calibrating on ${calib.count} text lines, measuring top-1 direction on ${evalSrc.count} others; target: at most 0.75 of W8A8's BOPs`);
  const progress = phaseProgress(!opts.json && !opts.quiet);
  let r;
  try {
    r = await search({
      model,
      calib: { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count },
      eval: { batches: () => evalSrc.batchesWithInfo(), labels: loadSampleLabels(path.join(lines, 'labels.tsv')) },
      profile: path.join(DEMO_DIR, 'profile.json'),
      target: { maxBops: 0.75 },
      out,
      onProgress: (p) => progress.update(p.phase, p.done, p.total),
      record: { calib: { spec: 'demo' } },
    });
  } finally {
    progress.stop();
  }
  if (opts.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  log(`float model: top-1 ${pct(r.float_metric)}`);
  log(`selected mixed configuration: ${r.selected.rel_bops.toFixed(3)} of W8A8's BOPs, ${(r.selected.size_bytes / 1e3).toFixed(1)} kB of weights, top-1 ${pct(r.selected.metric)}`);
  for (const h of r.homogeneous) log(`  ${h.name.padEnd(7)} ${h.rel_bops.toFixed(2)} of W8A8's BOPs  top-1 ${pct(h.metric)}`);
  log(`phase 1: ${r.phase1.computed} computed, ${r.phase1.reused} reused; ${r.seconds.total} s`);
  if (r.verification) log(describeVerification(r.verification).join('\n'));
  const warning = verificationWarning(r.verification, r.files.model);
  if (warning) process.stderr.write(warning + '\n');
  log(`wrote ${r.files.model}`);
  log(`report: ${r.files.report}`);
}
