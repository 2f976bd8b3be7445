#!/usr/bin/env node
/**
 * `npm run package`: installable tarballs in pack/, the napi-rs way.
 *
 *   pack/onnx-mpq-VERSION.tgz                  the JS/TS package (no native code), which lists
 *                                              the platform package as an exact optionalDependency
 *   pack/onnx-mpq-linux-x64-gnu-VERSION.tgz    the prebuilt addon for this platform
 *
 * Steps: build the addon (release) and the TypeScript from a clean dist/, copy the addon into
 * npm/<triple>/ (`napi artifacts`), check that the versions agree, `npm pack` both, and check
 * what went into the tarballs. Install them together into any project:
 *   npm install ./pack/onnx-mpq-VERSION.tgz ./pack/onnx-mpq-linux-x64-gnu-VERSION.tgz
 * `--skip-build` packs what is already built.
 */
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const pack = path.join(root, 'pack');
const npmCmd = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const run = (cmd, args, cwd = root) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
const fail = (msg) => {
  process.stderr.write(`package: ${msg}\n`);
  process.exit(1);
};

const main = require(path.join(root, 'package.json'));
const platforms = Object.keys(main.optionalDependencies ?? {});
if (platforms.length === 0) fail('package.json lists no platform package in optionalDependencies');

if (!process.argv.includes('--skip-build')) {
  run(npmCmd, ['run', 'build:native']);
  fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
  run(npmCmd, ['run', 'build:ts']);
}
// copies <binaryName>.<platform>.node from the package root into npm/<platform>/
run(path.join(root, 'node_modules', '.bin', 'napi'), ['artifacts', '--output-dir', '.', '--npm-dir', 'npm']);

fs.mkdirSync(pack, { recursive: true });
const tarballs = [];
const packDir = (dir) => {
  // scripts are not run: everything is built above (the main package's `prepare` would rebuild)
  const [info] = JSON.parse(run(npmCmd, ['pack', '--json', '--ignore-scripts', '--pack-destination', pack], dir));
  tarballs.push(path.join(pack, info.filename));
  return info;
};

for (const name of platforms) {
  const dir = path.join(root, 'npm', name.replace(`${main.name}-`, ''));
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  if (pkg.name !== name) fail(`npm/${path.basename(dir)}/package.json is named ${pkg.name}, expected ${name}`);
  if (pkg.version !== main.version || main.optionalDependencies[name] !== main.version) {
    fail(`versions disagree: onnx-mpq ${main.version}, ${name} ${pkg.version}, optionalDependencies ${main.optionalDependencies[name]} (run 'npx napi version')`);
  }
  const info = packDir(dir);
  if (!info.files.some((f) => f.path === pkg.main)) fail(`${info.filename} lacks ${pkg.main}: build the addon first`);
}

// the main package from a staging copy whose manifest is what consumers need: no lifecycle
// scripts (the repo's `prepare` builds from source, which a consumer must never do), no
// devDependencies or workspaces; everything else as in package.json
const stage = path.join(pack, '.stage');
fs.rmSync(stage, { recursive: true, force: true });
fs.mkdirSync(stage, { recursive: true });
const listed = JSON.parse(run(npmCmd, ['pack', '--dry-run', '--json', '--ignore-scripts'], root))[0].files.map((f) => f.path);
for (const f of listed) {
  if (f === 'package.json') continue;
  fs.mkdirSync(path.dirname(path.join(stage, f)), { recursive: true });
  fs.copyFileSync(path.join(root, f), path.join(stage, f));
}
const manifest = { ...main };
for (const k of ['scripts', 'devDependencies', 'workspaces', 'ava']) delete manifest[k];
fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
const info = packDir(stage);
fs.rmSync(stage, { recursive: true, force: true });
const shipped = info.files.map((f) => f.path);
const unwanted = shipped.filter((f) => /(^|\/)(__test__|bench)\//.test(f) || f.endsWith('.node') || f.endsWith('.map'));
if (unwanted.length) fail(`${info.filename} ships files users do not need: ${unwanted.join(', ')}`);
for (const need of [main.main, 'binding.js', 'bin/mpq.js', 'dist/src/cli/main.js']) {
  if (!shipped.includes(need)) fail(`${info.filename} lacks ${need}`);
}

for (const t of tarballs) process.stdout.write(`${path.relative(root, t)}  ${(fs.statSync(t).size / 1e6).toFixed(2)} MB\n`);
process.stdout.write(`install with: npm install ${tarballs.map((t) => path.relative(root, t)).join(' ')}\n`);
