/**
 * Progress of long work, on stderr: a bar with ETA per phase on a terminal; plain lines
 * (`mpq: phase1 12/90 13% ETA 2m10s`) when stderr is a pipe or a file, at most one every few
 * seconds per phase (plus the start and the end of each phase), so that a logged run shows
 * where it is without flooding the log. `--quiet` turns both off.
 */
import * as cliProgress from 'cli-progress';

export interface Progress {
  update(phase: string, done: number, total: number): void;
  stop(): void;
}

export interface ProgressOptions {
  /** Where the lines go (default process.stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Least time between two lines of one phase, in ms (default 5000). */
  intervalMs?: number;
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** "1h02m", "3m05s", "12s". */
export function formatSeconds(s: number): string {
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

/** Plain progress lines: the first and last update of each phase, and at most one per interval between. */
export function lineProgress(opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const interval = opts.intervalMs ?? 5000;
  const now = opts.now ?? Date.now;
  let phase = '';
  let start = 0, last = 0, lastDone = -1;
  const line = (done: number, total: number) => {
    const t = now();
    const pct = total > 0 ? ` ${Math.floor((100 * done) / total)}%` : '';
    let eta = '';
    if (done >= total) eta = ` done in ${formatSeconds((t - start) / 1000)}`;
    else if (done > 0) eta = ` ETA ${formatSeconds((((t - start) / done) * (total - done)) / 1000)}`;
    stream.write(`mpq: ${phase} ${done}/${total}${pct}${eta}\n`);
    last = t;
    lastDone = done;
  };
  return {
    update(p, done, total) {
      const t = now();
      if (p !== phase) {
        phase = p;
        start = t;
        line(done, total);
      } else if (done !== lastDone && (done >= total || t - last >= interval)) line(done, total);
    },
    stop: () => undefined,
  };
}

function barProgress(stream: NodeJS.WritableStream): Progress {
  let bar: cliProgress.SingleBar | undefined;
  let current = '';
  return {
    update(phase, done, total) {
      if (phase !== current) {
        bar?.stop();
        current = phase;
        bar = new cliProgress.SingleBar(
          { format: `${phase.padEnd(12)} [{bar}] {value}/{total}  ETA {eta_formatted}`, stream, hideCursor: true, etaBuffer: 20 },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, done);
      } else {
        bar?.setTotal(total);
        bar?.update(done);
      }
    },
    stop() {
      bar?.stop();
    },
  };
}

/** A bar on a terminal, lines otherwise; nothing when disabled (--quiet). */
export function phaseProgress(enabled: boolean, opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  return stream.isTTY ? barProgress(stream) : lineProgress(opts);
}

/**
 * Wraps a batch source so that every full pass over it reports `phase` (`phase pass 2` from
 * the second pass on) with samples done out of `total`, while `active()` says so. A pass that
 * stops at its first batch (a peek at the input shapes) is not counted.
 */
export function countedPasses<B extends Record<string, { shape: number[] }>>(
  batches: () => AsyncIterable<B>,
  total: number,
  phase: string,
  progress: Progress,
  active: () => boolean = () => true,
): () => AsyncIterable<B> {
  let pass = 0;
  return async function* () {
    let name: string | undefined;
    let done = 0;
    for await (const b of batches()) {
      yield b;
      if (name === undefined) name = ++pass === 1 ? phase : `${phase} pass ${pass}`;
      done += Object.values(b)[0]?.shape[0] ?? 0;
      if (active()) progress.update(name, Math.min(done, total), total);
    }
  };
}
