/**
 * The npm package as users get it: the platform package is an exact optional dependency,
 * onnxruntime-node an optional peer, the tarball holds what users need and no tests or
 * benchmarks, and the demo's model and data travel with their licences.
 */
import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ROOT } from './helpers';

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

test('each platform package is an exact-version optional dependency with the same version', (t) => {
  const deps = Object.entries(pkg.optionalDependencies ?? {}) as [string, string][];
  t.true(deps.length >= 1);
  for (const [name, version] of deps) {
    const dir = path.join(ROOT, 'npm', name.replace('onnx-mpq-', ''));
    const p = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    t.is(p.name, name);
    t.is(version, pkg.version, `${name}: optionalDependencies must pin the exact version`);
    t.is(p.version, pkg.version);
    t.deepEqual(p.files, [p.main], `${name} ships only its .node file`);
    t.regex(p.main, /^mpq\..+\.node$/);
  }
});

test('onnxruntime-node is an optional peer, not a dependency', (t) => {
  t.falsy(pkg.dependencies['onnxruntime-node']);
  t.truthy(pkg.peerDependencies['onnxruntime-node']);
  t.true(pkg.peerDependenciesMeta['onnxruntime-node'].optional);
});

test('the main tarball holds the API, CLI, loader, profiles and demo, and no tests, benchmarks or native code', (t) => {
  const out = execFileSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const files: string[] = JSON.parse(out)[0].files.map((f: { path: string }) => f.path);
  t.deepEqual(files.filter((f) => /(^|\/)(__test__|bench|crates|scripts)\//.test(f) || f.endsWith('.node') || f.endsWith('.map')), []);
  for (const need of ['package.json', 'LICENSE', 'bin/mpq.js', 'binding.js', 'dist/index.js', 'dist/index.d.ts', 'dist/src/cli/main.js', 'dist/src/onnx/load-worker.js', 'profiles/default.json']) {
    t.true(files.includes(need), `${need} is in the tarball`);
  }
  for (const need of ['demo/model/ch_ppocr_mobile_v2.0_cls_infer.onnx', 'demo/model/LICENSE', 'demo/README.md', 'demo/profile.json', 'demo/textlines/labels.tsv']) {
    t.true(files.includes(need), `${need} is in the tarball`);
  }
  const lines = files.filter((f) => f.startsWith('demo/textlines/images/'));
  const labels = fs.readFileSync(path.join(ROOT, 'demo', 'textlines', 'labels.tsv'), 'utf8').trim().split('\n').slice(1);
  t.is(lines.length, labels.length, 'one image per label line');
});
