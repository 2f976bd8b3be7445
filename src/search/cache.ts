/**
 * The phase-1 cache: one JSON line per finished (group, candidate), appended and flushed as
 * soon as it is known, keyed by a hash of model, profile, data and options. A line cut short
 * by a kill is ignored on the next run.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

export interface SensitivityEntry {
  key: string;
  group: number;
  candidate: string;
  sqnr_db: number;
  /** Per output: [signal power, noise power] summed over the calibration samples. */
  powers: Record<string, [number, number]>;
}

export function hashOf(...parts: (string | Uint8Array)[]): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 32);
}

export class SensitivityCache {
  private fd: number;
  readonly entries = new Map<string, SensitivityEntry>();

  constructor(readonly file: string, readonly key: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (fs.existsSync(file)) {
      for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          const e = JSON.parse(line) as SensitivityEntry;
          if (e.key === key && typeof e.sqnr_db === 'number') this.entries.set(`${e.group}/${e.candidate}`, e);
        } catch {
          // a line cut short by a kill: ignore it
        }
      }
      // make sure the next append starts on a fresh line
      const text = fs.readFileSync(file, 'utf8');
      if (text.length && !text.endsWith('\n')) fs.appendFileSync(file, '\n');
    }
    this.fd = fs.openSync(file, 'a');
  }

  get(group: number, candidate: string): SensitivityEntry | undefined {
    return this.entries.get(`${group}/${candidate}`);
  }

  add(e: Omit<SensitivityEntry, 'key'>): void {
    const full = { key: this.key, ...e };
    fs.writeSync(this.fd, JSON.stringify(full) + '\n');
    fs.fsyncSync(this.fd);
    this.entries.set(`${e.group}/${e.candidate}`, full);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** SQNR in dB from per-output powers (each output normalised by its own signal power). */
export function sqnrOf(powers: Record<string, [number, number]>): number {
  const r = Object.values(powers).map(([s, n]) => n / Math.max(s, 1e-30));
  const mean = r.reduce((a, b) => a + b, 0) / Math.max(r.length, 1);
  return mean <= 0 ? 200 : -10 * Math.log10(mean);
}
