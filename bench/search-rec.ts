/**
 * The search on PP-OCRv4 rec through the API, with a custom evaluation function: exact match
 * of greedy CTC decoding on text lines 200-599 (calibration on lines 0-199).
 *
 *   node dist/bench/search-rec.js [--calib N] [--eval N] [--max-drop X | --max-bops R] [--out DIR]
 */
import * as path from 'path';
import { ctcGreedyDecode, Runnable, openDataSource, readCharset, readLabels, search } from '../index';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');

async function main(argv: string[]): Promise<void> {
  const arg = (k: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : undefined);
  const nCalib = Number(arg('--calib') ?? 200);
  const nEval = Number(arg('--eval') ?? 400);
  const dir = path.join(SHARED, 'data', 'textlines');
  const labels = readLabels(path.join(dir, 'labels.tsv'));
  if (labels.kind !== 'text') throw new Error('expected text labels');
  const charset = readCharset(path.join(OCR, 'ppocr_keys_v1.txt'));
  const calib = await openDataSource(path.join(dir, 'images'), { preset: 'paddleocr-rec', inputName: 'x', range: [0, nCalib], batchSize: 16 });
  const evalSrc = await openDataSource(path.join(dir, 'images'), { preset: 'paddleocr-rec', inputName: 'x', range: [200, 200 + nEval], batchSize: 16 });
  const evaluate = async (m: Runnable) => {
    let hit = 0, n = 0;
    for await (const b of evalSrc.batchesWithInfo()) {
      const texts = ctcGreedyDecode((await m.run(b.inputs))[m.outputNames[0]], charset);
      texts.forEach((t, i) => {
        n++;
        if (t === labels.byFile.get(b.names[i])) hit++;
      });
    }
    return hit / n;
  };
  const maxBops = arg('--max-bops');
  const r = await search({
    model: path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'),
    calib: { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count },
    target: maxBops ? { maxBops: Number(maxBops) } : { maxDrop: Number(arg('--max-drop') ?? 0.02) },
    evaluate,
    out: arg('--out') ?? 'rec-search',
    onProgress: ({ phase, done, total }) => process.stderr.write(`\r${phase} ${done}/${total}   `),
  });
  process.stderr.write('\n');
  process.stdout.write(JSON.stringify(r, null, 2) + '\n');
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
