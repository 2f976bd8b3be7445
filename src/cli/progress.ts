/** A progress bar with ETA per phase on a terminal; silent otherwise. */
import * as cliProgress from 'cli-progress';

export function phaseProgress(enabled: boolean): { update(phase: string, done: number, total: number): void; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  let bar: cliProgress.SingleBar | undefined;
  let current = '';
  return {
    update(phase, done, total) {
      if (phase !== current) {
        bar?.stop();
        current = phase;
        bar = new cliProgress.SingleBar(
          { format: `${phase.padEnd(12)} [{bar}] {value}/{total}  ETA {eta_formatted}`, stream: process.stderr, hideCursor: true, etaBuffer: 20 },
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
