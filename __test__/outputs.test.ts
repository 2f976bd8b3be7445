/**
 * Outputs all or nothing (issue 11): `mpq quantize` killed with SIGKILL at random points over
 * an existing --out leaves either the complete old set or the complete new set; failed runs
 * write nothing; a second run on a locked --out is refused.
 */
import test from 'ava';
import { execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { encodeNpy } from '../index';
import { Rng } from '../bench/mutate';
import { randomData, ROOT, tinyModel } from './helpers';

const MPQ = path.join(ROOT, 'bin', 'mpq.js');
const FILES = ['model.qdq.onnx', 'encodings.json', 'config.json', 'quantize.json'];
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-outputs-'));

async function mpq(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [MPQ, ...args], { maxBuffer: 64 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** A small Conv-Relu-Conv model and 8 calibration samples. */
function setup(): { dir: string; model: string; calib: string } {
  const dir = tmp();
  const w = (o: number, i: number, seed: number) => ({ dims: [o, i, 3, 3], values: Array.from(randomData(o * i * 9, seed)) });
  const bytes = tinyModel({
    inputs: { x: ['N', 3, 8, 8] },
    outputs: { y: null },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'], attrs: { pads: [1, 1, 1, 1] } },
      { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
      { op: 'Conv', inputs: ['r1', 'w2'], outputs: ['y'], attrs: { pads: [1, 1, 1, 1] } },
    ],
    inits: { w1: w(8, 3, 1), w2: w(4, 8, 2) },
  });
  const model = path.join(dir, 'm.onnx');
  fs.writeFileSync(model, bytes);
  const calib = path.join(dir, 'calib');
  fs.mkdirSync(calib);
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(calib, `s${i}.npy`), encodeNpy([1, 3, 8, 8], randomData(192, 10 + i)));
  return { dir, model, calib };
}

const quantizeArgs = (s: ReturnType<typeof setup>, out: string, config: string) => ['quantize', s.model, '--calib', s.calib, '--config', config, '--rounding', 'nearest', '--out', out];

/** The files of a set; the summary's timings and paths differ from run to run, its config does not. */
function readSet(out: string): Record<string, string> | null {
  const r: Record<string, string> = {};
  for (const f of FILES) {
    try {
      r[f] = fs.readFileSync(path.join(out, f)).toString('base64');
    } catch {
      return null;
    }
  }
  return r;
}
const stable = (s: Record<string, string>) => ({ ...s, 'quantize.json': JSON.parse(Buffer.from(s['quantize.json'], 'base64').toString()).config });

test('quantize killed with SIGKILL at random points over an existing --out leaves the complete old or the complete new set', async (t) => {
  t.timeout(180_000);
  const s = setup();
  // the reference sets
  const ref = path.join(s.dir, 'ref');
  t.is((await mpq(quantizeArgs(s, ref, 'W4A8'))).code, 0);
  const newSet = stable(readSet(ref)!);
  const out = path.join(s.dir, 'out');
  const t0 = Date.now();
  const r = await mpq(quantizeArgs(s, out, 'W8A8'));
  t.is(r.code, 0, r.stderr);
  const runMs = Date.now() - t0;
  const oldSet = readSet(out)!;
  t.notDeepEqual(stable(oldSet), newSet);

  const rng = new Rng(7);
  const seen = { old: 0, new: 0 };
  // MPQ_TEST_KILLS=20 for the count (5 by default, to keep CI fast)
  const kills = Number(process.env.MPQ_TEST_KILLS ?? 5);
  for (let k = 0; k < kills; k++) {
    const child = spawn(process.execPath, [MPQ, ...quantizeArgs(s, out, 'W4A8')], { stdio: 'ignore' });
    const exited = new Promise((res) => child.once('exit', res));
    // kill points spread over the whole run, the final write phase included
    await new Promise((res) => setTimeout(res, Math.floor(runMs * (0.3 + 0.8 * rng.next()))));
    child.kill('SIGKILL');
    await exited;
    const got = readSet(out);
    t.truthy(got, `kill ${k}: a file of the set is missing`);
    const isOld = JSON.stringify(got) === JSON.stringify(oldSet);
    const isNew = !isOld && JSON.stringify(stable(got!)) === JSON.stringify(newSet);
    t.true(isOld || isNew, `kill ${k}: --out holds a mixed set`);
    if (isOld) seen.old++;
    else {
      seen.new++;
      // put the old set back for the next kill
      t.is((await mpq(quantizeArgs(s, out, 'W8A8'))).code, 0);
      t.deepEqual(stable(readSet(out)!), stable(oldSet));
      Object.assign(oldSet, readSet(out)!);
    }
  }
  t.log(`kills: ${seen.old} left the old set, ${seen.new} the new one (run ${runMs} ms)`);
  // a run after the kills completes and leaves nothing behind but the set
  t.is((await mpq(quantizeArgs(s, out, 'W4A8'))).code, 0);
  t.deepEqual(stable(readSet(out)!), newSet);
  const names = fs.readdirSync(out).sort();
  t.deepEqual(names.filter((n) => n.endsWith('.tmp') || n === '.mpq.lock'), []);
  t.is(names.filter((n) => n.startsWith('.mpq-gen-')).length, 1);
});

test('a failed quantize writes nothing to --out; a second run on a locked --out is refused', async (t) => {
  const s = setup();
  // NaN in one calibration sample: refused naming it, --out not created
  const bad = encodeNpy([1, 3, 8, 8], randomData(192, 3).map((v, i) => (i === 5 ? NaN : v)));
  fs.writeFileSync(path.join(s.calib, 's3.npy'), bad);
  const out = path.join(s.dir, 'never');
  let r = await mpq(quantizeArgs(s, out, 'W8A8'));
  t.is(r.code, 1);
  t.regex(r.stderr, /sample 's3\.npy': input 'x' has NaN at element 5/);
  t.false(fs.existsSync(out));
  // with --skip-bad-samples it runs on the other 7, with a warning
  r = await mpq([...quantizeArgs(s, out, 'W8A8'), '--skip-bad-samples', '--json']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /warning: skipping sample 's3\.npy'/);
  t.is(r.stderr.match(/skipping sample/g)!.length, 1, 'warned once, though calibration streams the data more than once');
  t.like(JSON.parse(r.stdout).calib, { samples: 7, skipped: ['s3.npy'] });
  // a live process holds the lock (this test's own pid)
  fs.writeFileSync(path.join(out, '.mpq.lock'), JSON.stringify({ pid: process.pid, host: os.hostname(), started: 'now' }));
  const before = readSet(out);
  r = await mpq(quantizeArgs(s, out, 'W4A8'));
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`another mpq run \\(pid ${process.pid}`));
  t.deepEqual(readSet(out), before);
  fs.unlinkSync(path.join(out, '.mpq.lock'));
  // --out that is a file
  r = await mpq(quantizeArgs(s, s.model, 'W8A8'));
  t.is(r.code, 1);
  t.regex(r.stderr, /is an existing file, not a folder/);
});

/**
 * The commit step by step: a child process commits a new set over an old one and SIGKILLs
 * itself at the n-th file-system change (rename, link, unlink, removal), for every n until
 * the commit completes. After each kill the folder reads as the old set or the new set, and
 * the next run cleans up. Old sets of both kinds: a committed one and plain files of an
 * older version.
 */
test('a commit killed at every one of its file-system steps leaves the old or the new set', async (t) => {
  const { OutputDir } = await import('../src/fsutil');
  const script = `
    const fs = require('fs');
    const { OutputDir } = require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'fsutil.js'))});
    const [out, at] = process.argv.slice(1);
    const o = OutputDir.open(out);
    o.write('a.txt', 'new a'); o.write('b.txt', 'new b'); o.write('d.txt', 'new d');
    let n = 0;
    for (const f of ['renameSync', 'linkSync', 'symlinkSync', 'unlinkSync', 'rmSync', 'copyFileSync']) {
      const orig = fs[f];
      fs[f] = (...a) => { if (++n === Number(at)) process.kill(process.pid, 'SIGKILL'); return orig(...a); };
    }
    o.commit();
  `;
  const OLD = { 'a.txt': 'old a', 'b.txt': 'old b', 'c.txt': 'old c' };
  const NEW = { 'a.txt': 'new a', 'b.txt': 'new b', 'd.txt': 'new d' };
  const read = (out: string) => Object.fromEntries(['a.txt', 'b.txt', 'c.txt', 'd.txt'].flatMap((f) => (fs.existsSync(path.join(out, f)) ? [[f, fs.readFileSync(path.join(out, f), 'utf8')]] : [])));
  for (const legacy of [false, true]) {
    let completed = false;
    let steps = 0;
    for (let at = 1; !completed && at < 100; at++) {
      const out = path.join(tmp(), 'out');
      if (legacy) {
        fs.mkdirSync(out);
        for (const [f, v] of Object.entries(OLD)) fs.writeFileSync(path.join(out, f), v);
      } else {
        const o = OutputDir.open(out);
        for (const [f, v] of Object.entries(OLD)) o.write(f, v);
        o.commit();
      }
      const r = await new Promise<number | null>((res) => spawn(process.execPath, ['-e', script, out, String(at)], { stdio: 'inherit' }).once('exit', (code) => res(code)));
      completed = r === 0;
      const got = read(out);
      const want = completed ? NEW : got['d.txt'] !== undefined && got['a.txt'] === 'new a' ? NEW : OLD;
      // an adopted older set keeps files the new set does not name (c.txt), as before
      const expect = legacy && want === NEW ? { ...NEW, 'c.txt': 'old c' } : want;
      t.deepEqual(got, expect, `${legacy ? 'plain files' : 'committed set'}, killed at step ${at}`);
      // the next run takes the dead process's lock, cleans up and commits
      const o = OutputDir.open(out);
      o.write('a.txt', 'next');
      o.commit();
      t.is(fs.readFileSync(path.join(out, 'a.txt'), 'utf8'), 'next');
      t.deepEqual(fs.readdirSync(out).filter((n) => n.endsWith('.tmp') || n === '.mpq.lock'), []);
      t.is(fs.readdirSync(out).filter((n) => n.startsWith('.mpq-gen-')).length, 1);
      steps = at;
    }
    t.true(completed, 'the commit completed within 100 steps');
    t.log(`${legacy ? 'plain files' : 'committed set'}: killed at each of ${steps - 1} steps`);
  }
});
