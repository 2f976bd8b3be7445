/**
 * Does search() leave the event loop free? Runs search() on MobileNetV1-0.75 in this process
 * and records, while it runs: the event-loop delay (perf_hooks.monitorEventLoopDelay, 10 ms
 * resolution; p50/p99/max over the run, and every stall over 100 ms with the phase it fell
 * in), the progress events (how many in the first 4 s, the longest gap), and, with
 * `--abort-at S`, the time from abort() to the promise's rejection, its name and code, and
 * whether anything in `out` changed after the abort (`changes`; `out_written_after_abort` leaves
 * out the run's own lock file, which the aborted run removes as it stops).
 *
 *   npm run build:ts && node dist/bench/responsiveness.js [--abort-at 4] [--images 64] [--out DIR] [--json FILE]
 *
 * Calibration: the first N even-class images of ../shared/data/imagenet-samples (imagenet-tf
 * preset), default 64; the search's target is --max-bops 0.75 with the default profile.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { monitorEventLoopDelay } from 'perf_hooks';
import { openDataSource, search } from '../index';
import type { Progress } from '../index';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const MOBILENET = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');
const IMAGES = path.join(SHARED, 'data', 'imagenet-samples', 'images');

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** Names, sizes and modification times of every file under `dir`. */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else {
        const s = fs.statSync(f);
        out.push(`${path.relative(dir, f)} ${s.size} ${s.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out.sort().join('\n');
}

async function main(): Promise<void> {
  if (!fs.existsSync(MOBILENET)) throw new Error(`needs ${MOBILENET} (../shared beside the checkout)`);
  const abortAt = arg('abort-at') !== undefined ? Number(arg('abort-at')) : undefined;
  const n = Number(arg('images') ?? 64);
  const out = arg('out') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-resp-'));
  const calib = await openDataSource(IMAGES, { preset: 'imagenet-tf', select: 'even', limit: n, batchSize: 32 });

  const h = monitorEventLoopDelay({ resolution: 10 });
  // our own sampler, to say when the stalls happened and in which phase
  let phase = 'start';
  const stalls: { at_s: number; ms: number; phase: string }[] = [];
  let last = performance.now();
  const t0 = last;
  const tick = setInterval(() => {
    const now = performance.now();
    const lag = now - last - 10;
    if (lag > 100) stalls.push({ at_s: +((now - t0) / 1000).toFixed(2), ms: Math.round(lag), phase });
    last = now;
  }, 10);
  const events: { at_s: number; p: Progress }[] = [];
  const ac = new AbortController();
  let abortedAt: number | undefined;
  let snapAtAbort = '';
  if (abortAt !== undefined) {
    setTimeout(() => {
      snapAtAbort = snapshot(out);
      abortedAt = performance.now();
      ac.abort();
    }, abortAt * 1000);
  }
  h.enable();
  let result: unknown, error: (Error & { code?: string }) | undefined;
  try {
    result = await search({
      model: MOBILENET,
      calibration: { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count },
      target: { maxBops: 0.75 },
      out,
      signal: ac.signal,
      onProgress: (p) => {
        phase = p.phase;
        events.push({ at_s: +((performance.now() - t0) / 1000).toFixed(2), p });
      },
    });
  } catch (e) {
    error = e as Error & { code?: string };
  }
  const end = performance.now();
  h.disable();
  clearInterval(tick);
  const rejectMs = abortedAt !== undefined && error ? Math.round(end - abortedAt) : undefined;
  let changedAfter: boolean | undefined;
  let changes: string[] = [];
  if (abortedAt !== undefined) {
    await new Promise((r) => setTimeout(r, 3000)); // anything still running would write now
    const after = snapshot(out);
    changedAfter = after !== snapAtAbort;
    if (changedAfter) {
      const [a, b] = [new Set(snapAtAbort.split('\n')), new Set(after.split('\n'))];
      changes = [...[...a].filter((l) => !b.has(l)).map((l) => `- ${l}`), ...[...b].filter((l) => !a.has(l)).map((l) => `+ ${l}`)];
    }
  }
  const gaps = events.map((e, i) => (i ? e.at_s - events[i - 1].at_s : e.at_s));
  const report = {
    images: calib.count,
    seconds: +((end - t0) / 1000).toFixed(1),
    event_loop_delay_ms: { p50: +(h.percentile(50) / 1e6).toFixed(1), p99: +(h.percentile(99) / 1e6).toFixed(1), max: +(h.max / 1e6).toFixed(1) },
    stalls_over_100ms: stalls,
    progress: {
      events: events.length,
      in_first_4s: events.filter((e) => e.at_s <= 4).length,
      longest_gap_s: +Math.max(0, ...gaps).toFixed(2),
      phases: [...new Set(events.map((e) => e.p.phase))],
    },
    abort: abortAt === undefined ? undefined : { at_s: abortAt, rejected_after_ms: rejectMs, name: error?.name, code: error?.code, message: error?.message, out_changed_after_abort: changedAfter, changes, out_written_after_abort: changes.some((c) => !c.startsWith('- .mpq.lock ')) },
    error: abortAt === undefined && error ? { name: error.name, code: error.code, message: error.message } : undefined,
    ok: !!result,
  };
  const text = JSON.stringify(report, null, 2);
  if (arg('json')) fs.writeFileSync(arg('json')!, text + '\n');
  process.stdout.write(text + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
