/** Progress events of long calls: per phase, done of total, and an estimate of the time left. */

/** The phases of {@link search} (and of {@link quantize}, which has the first two). */
/** `rounding`: the weights phase 1 measures, scaled and rounded (data-aware rounding, once per layer and width). */
export type Phase = 'load' | 'calibration' | 'rounding' | 'phase1' | 'phase3' | 'export' | 'verify';

export interface Progress {
  phase: Phase;
  /** Units of work done in this phase (samples, sensitivity entries, evaluations); phase 1 moves in fractions of an entry. */
  done: number;
  /** Units of work of this phase (an estimate while it is not known exactly). */
  total: number;
  /** Seconds left in this phase at the rate so far; null before the first unit is done. */
  etaSeconds: number | null;
}

export type OnProgress = (p: Progress) => void;

/**
 * A reporter over `onProgress`: `report(phase, done, total)` adds the ETA (from the time since
 * the phase's first report) and passes the event on. A throwing listener cannot break the call.
 */
export function progressReporter(onProgress: OnProgress | undefined): (phase: Phase, done: number, total: number) => void {
  let current: Phase | undefined;
  let since = 0;
  return (phase, done, total) => {
    if (!onProgress) return;
    const now = Date.now();
    if (phase !== current) {
      current = phase;
      since = now;
    }
    const rate = done > 0 ? (now - since) / 1000 / done : null;
    const etaSeconds = rate === null ? null : +(rate * Math.max(0, total - done)).toFixed(1);
    try {
      onProgress({ phase, done, total, etaSeconds });
    } catch {
      // a listener's error is the listener's: the search goes on
    }
  };
}
