/** The engine's code paths: which instruction-set level the kernels run, and switching it. */
import { native } from './native';

/** An instruction-set level of the engine's kernels. Every level computes the same bits. */
export type EngineLevel = 'scalar' | 'avx2' | 'avx512';

/** What the engine runs on this machine. */
export interface EngineInfo {
  /** The level in force (`MPQ_FORCE_ISA` or {@link setEngineLevel} may have lowered it). */
  level: EngineLevel;
  /** The best level this CPU has. */
  detected: EngineLevel;
  /** Every level this CPU can run, from the baseline up. */
  available: EngineLevel[];
  /** The onnxruntime intra-op thread count whose GEMM blocking the engine mirrors (`MPQ_ORT_THREADS`, default 2). */
  ortThreads: number;
  /** Compute threads of the engine. */
  threads: number;
}

/** The engine's code paths on this machine. */
export function engineInfo(): EngineInfo {
  const b = native();
  const i = b.engineIsa();
  return {
    level: i.level as EngineLevel,
    detected: i.detected as EngineLevel,
    available: i.available as EngineLevel[],
    ortThreads: i.ortThreads,
    threads: b.numThreads(),
  };
}

/**
 * Selects the kernels' level for the following runs, as `MPQ_FORCE_ISA` does at start-up; a
 * level the CPU lacks gives the best it has. Returns the level in force. Meant for tests and
 * benchmarks that run every path on one machine.
 */
export function setEngineLevel(level: EngineLevel): EngineLevel {
  return native().setEngineIsa(level) as EngineLevel;
}

/** Sets the onnxruntime thread count whose batch-1 GEMM blocking the engine mirrors (as `MPQ_ORT_THREADS`). */
export function setOrtThreads(n: number): void {
  native().setOrtThreads(n);
}
