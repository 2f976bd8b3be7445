/** Atomic file writes (written aside, then renamed) and output folders whose file set changes at once. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MpqError, throwIfAborted } from './errors';

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
}

/** Characters outside [A-Za-z0-9_.-] become '_' (safe file names for tensor names). */
export function safeFileName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, '_');
}

/**
 * An output folder (`--out`) whose file set changes all at once.
 *
 * Layout: the files of one run live in a generation folder `.mpq-gen-<id>/`; the symbolic
 * link `.mpq-current` names the generation in force, and each documented name
 * `--out/<file>` is a symbolic link to `.mpq-current/<file>`. A run writes its files into a
 * fresh generation folder (the staging folder), syncs them, and then swaps `.mpq-current`
 * with one rename: at every moment, even under SIGKILL, `--out/<file>` reads the complete old
 * set or the complete new set. Files of an older tool version (plain files at `--out/<file>`)
 * are first moved into a generation of their own, by hard links and per-file renames of
 * links to the very same content, so that they too stay readable throughout.
 *
 * A lock file `--out/.mpq.lock` (pid and host) keeps a second run off the same folder; the
 * lock of a process that no longer exists is taken over. Leftovers of killed runs (staging
 * folders, temporary files) are removed when the next run takes the lock. Folders the
 * output set does not own (`cache/` of the search) are written in place as before.
 */
export class OutputDir {
  /** The staging folder this run writes into (created on open). */
  readonly staging: string;
  private readonly lock: string;
  private done = false;
  private readonly onExit = () => this.releaseLock();

  private constructor(readonly dir: string, private readonly created: boolean) {
    this.lock = path.join(dir, LOCK);
    this.staging = path.join(dir, `${GEN_PREFIX}${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
  }

  /**
   * Opens `dir` for a run: refuses a path that is a file, creates the folder, takes the lock
   * (or fails with a clear error naming the process that holds it), removes leftovers of
   * killed runs and creates the staging folder.
   */
  static open(dir: string): OutputDir {
    let created = false;
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(dir);
    } catch {
      /* absent */
    }
    if (st && !st.isDirectory()) throw new MpqError('MPQ_BAD_INPUT', `--out '${dir}' is an existing file, not a folder; give a folder (it is created if missing)`);
    if (!st) {
      try {
        fs.mkdirSync(dir, { recursive: true });
        created = true;
      } catch (e) {
        throw new MpqError('MPQ_BAD_INPUT', `cannot create the output folder '${dir}': ${(e as Error).message}`);
      }
    }
    const o = new OutputDir(dir, created);
    o.takeLock();
    try {
      o.cleanLeftovers();
      fs.mkdirSync(o.staging);
    } catch (e) {
      o.releaseLock();
      throw e instanceof MpqError ? e : new MpqError('MPQ_BAD_INPUT', `cannot write into the output folder '${dir}': ${(e as Error).message}`);
    }
    return o;
  }

  /** Where `name` is written during the run (inside the staging folder). */
  file(name: string): string {
    return path.join(this.staging, name);
  }

  /** Writes `name` into the staging folder. */
  write(name: string, data: string | Uint8Array): string {
    const f = this.file(name);
    ioError(this.dir, () => {
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, data);
    });
    return path.join(this.dir, name);
  }

  /** Makes the staged files the folder's set, in one step; then releases the lock. */
  commit(): void {
    if (this.done) throw new MpqError('MPQ_INTERNAL', 'output set committed twice');
    ioError(this.dir, () => this.swap());
  }

  /**
   * {@link commit}, with the staged files flushed to disk off the event loop first (a model
   * of some megabytes takes a few hundred milliseconds to sync). A `signal` aborted by then
   * leaves the folder as it was and rejects with an AbortError.
   */
  async commitAsync(signal?: AbortSignal, what = 'the run'): Promise<void> {
    if (this.done) throw new MpqError('MPQ_INTERNAL', 'output set committed twice');
    await Promise.all(safeReaddir(this.staging).map((n) => fsyncPathAsync(path.join(this.staging, n))));
    throwIfAborted(signal, what);
    ioError(this.dir, () => this.swap(false));
  }

  /** `syncFiles`: flush the staged files first (false: {@link commitAsync} did). */
  private swap(syncFiles = true): void {
    const names = fs.readdirSync(this.staging);
    if (syncFiles) for (const n of names) fsyncPath(path.join(this.staging, n));
    fsyncPath(this.staging);
    const current = path.join(this.dir, CURRENT);
    const old = currentGeneration(this.dir);
    // plain files of an older version become a generation first, then links to it
    this.adoptPlainFiles(names, old);
    const oldGen = currentGeneration(this.dir);
    // the documented names: links through .mpq-current (dangling until the swap when new)
    for (const n of names) {
      const at = path.join(this.dir, n);
      if (!isOurLink(at, n)) replaceWithLink(path.join(CURRENT, n), at);
    }
    fsyncPath(this.dir);
    // the one atomic step
    replaceWithLink(path.basename(this.staging), current);
    fsyncPath(this.dir);
    this.done = true;
    // names of the old set that the new one lacks would dangle: remove them
    if (oldGen) {
      for (const n of safeReaddir(path.join(this.dir, oldGen))) {
        if (!names.includes(n) && isOurLink(path.join(this.dir, n), n)) rmQuiet(path.join(this.dir, n));
      }
      rmQuiet(path.join(this.dir, oldGen));
    }
    this.releaseLock();
  }

  /** Drops the staging folder and the lock; the folder keeps its previous set (or is removed when this run created it and left it empty). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    rmQuiet(this.staging);
    this.releaseLock();
    if (this.created) {
      try {
        fs.rmdirSync(this.dir);
      } catch {
        /* not empty (a cache, say): keep it */
      }
    }
  }

  private adoptPlainFiles(names: string[], gen: string | undefined): void {
    const plain = names.filter((n) => {
      try {
        const st = fs.lstatSync(path.join(this.dir, n));
        if (st.isDirectory()) throw new MpqError('MPQ_BAD_INPUT', `'${path.join(this.dir, n)}' is a folder; the run writes a file of that name there`);
        return st.isFile();
      } catch (e) {
        if (e instanceof MpqError) throw e;
        return false;
      }
    });
    if (plain.length === 0) return;
    if (!gen) {
      gen = `${GEN_PREFIX}adopted-${Date.now().toString(36)}`;
      fs.mkdirSync(path.join(this.dir, gen));
    }
    for (const n of plain) {
      const src = path.join(this.dir, n);
      const dst = path.join(this.dir, gen, n);
      const tmp = `${dst}.${process.pid}.tmp`;
      rmQuiet(tmp);
      try {
        fs.linkSync(src, tmp);
      } catch {
        fs.copyFileSync(src, tmp);
      }
      fs.renameSync(tmp, dst);
    }
    fsyncPath(path.join(this.dir, gen));
    if (currentGeneration(this.dir) !== gen) replaceWithLink(gen, path.join(this.dir, CURRENT));
    // each plain file becomes a link to the same content
    for (const n of plain) replaceWithLink(path.join(CURRENT, n), path.join(this.dir, n));
    fsyncPath(this.dir);
  }

  private takeLock(): void {
    const me = JSON.stringify({ pid: process.pid, host: os.hostname(), started: new Date().toISOString() });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = fs.openSync(this.lock, 'wx');
        fs.writeSync(fd, me);
        fs.closeSync(fd);
        process.on('exit', this.onExit);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new MpqError('MPQ_BAD_INPUT', `cannot write into the output folder '${this.dir}': ${(e as Error).message}`);
      }
      let holder: { pid?: number; host?: string; started?: string } = {};
      let text = '';
      try {
        text = fs.readFileSync(this.lock, 'utf8');
        holder = JSON.parse(text);
      } catch {
        /* being written, or cut short by a kill: judged by its age below */
      }
      if (holder.pid !== undefined ? !processAlive(holder.pid, holder.host) : lockAgeMs(this.lock) > 10_000) {
        // stale: the process that held it is gone; take it over (only if it is still the same file)
        try {
          if (fs.readFileSync(this.lock, 'utf8') === text) fs.unlinkSync(this.lock);
        } catch {
          /* gone meanwhile */
        }
        continue;
      }
      throw new MpqError(
        'MPQ_BAD_INPUT',
        `another mpq run (pid ${holder.pid ?? '?'}${holder.host ? ` on ${holder.host}` : ''}, started ${holder.started ?? '?'}) is writing into '${this.dir}'; ` +
          `wait for it, or give another --out (if no such run exists, delete ${this.lock})`,
      );
    }
    throw new MpqError('MPQ_BAD_INPUT', `cannot take the lock ${this.lock}: other runs keep taking it`);
  }

  private releaseLock(): void {
    process.removeListener('exit', this.onExit);
    try {
      const h = JSON.parse(fs.readFileSync(this.lock, 'utf8'));
      if (h.pid === process.pid) fs.unlinkSync(this.lock);
    } catch {
      /* already gone */
    }
  }

  /** Removes what killed runs left: staging folders not in force, temporary files. */
  private cleanLeftovers(): void {
    const cur = currentGeneration(this.dir);
    for (const n of safeReaddir(this.dir)) {
      const p = path.join(this.dir, n);
      if ((n.startsWith(GEN_PREFIX) && n !== cur) || /^\.mpq-current\..*\.tmp$/.test(n) || /^\..+\.\d+\.\d+\.tmp$/.test(n)) rmQuiet(p);
    }
    if (cur) for (const n of safeReaddir(path.join(this.dir, cur))) if (n.endsWith('.tmp')) rmQuiet(path.join(this.dir, cur, n));
    // links of names the set in force lacks (a run killed before it removed them)
    for (const n of safeReaddir(this.dir)) {
      const p = path.join(this.dir, n);
      if (isOurLink(p, n) && !fs.existsSync(p)) rmQuiet(p);
    }
  }
}

/** File-system failures while writing the output (disk full, no symbolic links, permissions) as MpqErrors. */
function ioError<T>(dir: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof MpqError) throw e;
    throw new MpqError('MPQ_BAD_INPUT', `cannot write into the output folder '${dir}': ${(e as Error).message}`, { cause: e });
  }
}

const LOCK = '.mpq.lock';
const CURRENT = '.mpq-current';
const GEN_PREFIX = '.mpq-gen-';

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function rmQuiet(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

function fsyncPath(p: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(p, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* some file systems refuse fsync on folders */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function fsyncPathAsync(p: string): Promise<void> {
  let h: fs.promises.FileHandle | undefined;
  try {
    h = await fs.promises.open(p, 'r');
    await h.sync();
  } catch {
    /* as fsyncPath */
  } finally {
    await h?.close();
  }
}

/** The generation folder `.mpq-current` points at, if any. */
function currentGeneration(dir: string): string | undefined {
  try {
    const t = fs.readlinkSync(path.join(dir, CURRENT));
    return t.startsWith(GEN_PREFIX) && fs.statSync(path.join(dir, t)).isDirectory() ? t : undefined;
  } catch {
    return undefined;
  }
}

function isOurLink(at: string, name: string): boolean {
  try {
    return fs.readlinkSync(at) === path.join(CURRENT, name);
  } catch {
    return false;
  }
}

/** Atomically makes `at` a symbolic link to `target` (a new link, renamed over whatever is there). */
function replaceWithLink(target: string, at: string): void {
  const tmp = path.join(path.dirname(at), `${CURRENT}.${path.basename(at)}.${process.pid}.tmp`);
  rmQuiet(tmp);
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, at);
}

function processAlive(pid: number, host?: string): boolean {
  if (host && host !== os.hostname()) return true; // cannot tell: assume it runs
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockAgeMs(file: string): number {
  try {
    return Date.now() - fs.statSync(file).mtimeMs;
  } catch {
    return Infinity;
  }
}
