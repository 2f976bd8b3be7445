/**
 * The `mpq` command line. Each command lives in its own module; this file wires them up and
 * owns what every command shares: `--quiet` (no progress), `--debug` (stack traces), errors
 * as one line on stderr (and, with `--json`, as `{"error": {"code", "message"}}` on stdout),
 * and the exit codes: 0 done, 1 failed (bad input, model, data, or a bug), 2 the command line
 * itself could not be parsed (unknown command or option, missing argument).
 */
import { Command, CommanderError } from 'commander';
import { MpqError } from '../errors';
import { addDataFlags } from './data-options';
import { evalCommand } from './eval';
import { inspectCommand } from './inspect';
import { quantizeCommand } from './quantize';
import { runCommand } from './run';
import { searchCommand } from './search';
import { demoCommand } from './demo';
import { builtinProfiles, candKey } from '../profiles/profile';
import { verifyCommand } from './verify';
import { workerCommand } from './worker';

const collect = (v: string, prev: string[]) => [...prev, v];

function program(): Command {
  const p = new Command('mpq')
    .description('mixed-precision post-training quantization of ONNX models')
    .version(require('../../../package.json').version)
    .option('-q, --quiet', 'no progress output on stderr')
    .option('--debug', 'print stack traces with errors')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    // the global flags reach every command's options (they may be written after the command)
    .hook('preAction', (root, cmd) => {
      for (const [k, v] of Object.entries(root.opts())) if (v !== undefined) cmd.setOptionValue(k, v);
    });

  p.command('inspect')
    .description('inputs, outputs, op counts, parameters and MACs per op')
    .argument('<model>', 'ONNX model file')
    .option('--shape <name=d,d,...>', 'input shapes for dynamic dimensions: NAME=1,3,224,224 (repeatable, or several at once: a=1,3,b=1,10)', collect, [])
    .option('--json', 'print one JSON document and nothing else')
    .action(inspectCommand);

  p.command('run')
    .description('run a model on .npy inputs, writing each output to DIR/<output>.npy')
    .argument('<model>', 'ONNX model file')
    .requiredOption('--input <name=file.npy>', 'an input (repeatable); a single-input model also takes just FILE.npy', collect, [])
    .requiredOption('--out <dir>', 'output folder')
    .option('--encodings <file>', 'run the simulated quantized model (float model + encodings.json)')
    .option('--json', 'print one JSON document (outputs, shapes, files) and nothing else')
    .action(runCommand);

  addDataFlags(
    p.command('quantize')
      .description('calibrate and quantize at one configuration; writes DIR/model.qdq.onnx, encodings.json, config.json, quantize.json')
      .argument('<model>', 'ONNX model file')
      .requiredOption('--calib <data>', 'calibration data: image folder, .npy folder, one .npy with a sample axis, or NAME=PATH,...')
      .requiredOption('--config <W8A8|W4A8|W8A16|W16A16|W4A16|file.json>', 'bit-widths: a named configuration or a config file')
      .requiredOption('--out <dir>', 'output folder')
      .option('--weight-range <minmax|mse>', 'weight range setting')
      .option('--act-range <minmax|mse>', 'activation range setting')
      .option('--rounding <nearest|gptq|auto>', 'weight rounding: nearest, gptq (data-aware, with bias correction), or auto = gptq at 8 bits and below (default)')
      .option('--profile <name|file>', 'hardware profile: its scheme is applied and the configuration must be one it allows (e.g. ort-cpu for ONNX Runtime on CPU)')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(quantizeCommand);

  addDataFlags(
    p.command('eval')
      .description('top-1 against labels; with --encodings, the quantized model against float (agreement, SQNR)')
      .argument('<model>', 'ONNX model file (float)')
      .requiredOption('--data <data>', 'evaluation data')
      .option('--labels <file>', 'labels.tsv (by file name or position), .npy or .txt (one label per sample)')
      .option('--task <task>', 'classification', 'classification')
      .option('--encodings <file>', 'evaluate the float model with these encodings applied')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(evalCommand);

  addDataFlags(
    p.command('verify')
      .description('run DIR/model.qdq.onnx in onnxruntime-node with graph optimizations off and with the default session options, compare each with the simulation, and say whether the default run is faithful')
      .argument('<dir>', 'output folder of mpq quantize or mpq search')
      .option('--data <data>', 'data to compare on (default: the first 128 calibration samples)')
      .option('--json', 'print one JSON document and nothing else'),
  ).action(verifyCommand);
  addDataFlags(
    p.command('search')
      .description('mixed-precision search: the cheapest per-layer bit-widths that meet a target; writes the model, encodings, front and report to --out')
      .argument('<model>', 'ONNX model file')
      .requiredOption('--calib <data>', 'calibration data')
      .option('--profile <name|file>', 'hardware profile (see mpq profiles)', 'default')
      .option('--max-drop <x>', 'largest metric drop from float (top-1 fraction, or dB of SQNR)')
      .option('--max-bops <r>', 'largest BOPs relative to all-W8A8')
      .option('--max-size <mb>', 'largest weight memory in MB')
      .option('--eval <data>', 'evaluation data for phase 3 (default: the calibration data)')
      .option('--labels <file>', 'labels of the evaluation data')
      .option('--task <task>', 'classification')
      .option('--order <sqnr|efficiency|auto>', 'front order', 'auto')
      .option('--weight-range <minmax|mse>', 'weight range setting')
      .option('--act-range <minmax|mse>', 'activation range setting')
      .option('--rounding <nearest|gptq|auto>', 'weight rounding (auto: data-aware at 8 bits and below)')
      .option('--sequential', 'sequential data-aware rounding for evaluated points and the export (better at 4 bits, one calibration pass per evaluated point)')
      .requiredOption('--out <dir>', 'output folder')
      .option('--redis <url>', 'run phase 1 on the workers (mpq worker) of this Redis, e.g. redis://localhost:6379')
      .option('--queue-chunk <n>', 'phase-1 entries per queued job (with --redis)', '8')
      .option('--blobs <dir>', 'with --redis: put model and data in this folder the workers share (mpq worker --blobs) instead of in Redis')
      .option('--whole-job', 'with --redis: run the whole search as one job on a worker of the pool; its files come back into --out')
      .option('--json', 'print run.json and nothing else'),
  ).action(searchCommand);

  p.command('worker')
    .description('a worker of a pool: computes the phase-1 chunks that mpq search --redis enqueues, and whole searches (--whole-job), until SIGINT or SIGTERM')
    .requiredOption('--redis <url>', 'the Redis of the pool, e.g. redis://localhost:6379')
    .option('--concurrency <n>', 'jobs at once in this process', '1')
    .option('--threads <n>', 'engine compute threads (default: one per core)')
    .option('--blobs <dir>', 'a folder to read model and data blobs from, besides Redis (repeatable)', collect, [])
    .option('--name <id>', 'name in run.json (default host:pid)')
    .option('--queue <name>', 'queue name', 'mpq-phase1')
    .option('--search-queue <name>', 'queue of whole searches', 'mpq-search')
    .option('--no-searches', 'take phase-1 chunks only, no whole searches')
    .option('--lock-duration <ms>', "a job's lock: a killed worker's job goes to another worker this long after", '30000')
    .option('--stalled-interval <ms>', 'how often to look for jobs of killed workers', '30000')
    .action(workerCommand);

  p.command('demo')
    .description('the whole job on a bundled small model (PP-OCR text-direction classifier); writes ./mpq-demo')
    .option('--out <dir>', 'output folder', 'mpq-demo')
    .option('--json', 'print run.json and nothing else')
    .action(demoCommand);

  p.command('profiles')
    .description('list the built-in hardware profiles')
    .option('--json', 'print one JSON document and nothing else')
    .action((o: { json?: boolean }) => {
      const ps = builtinProfiles();
      if (o.json) process.stdout.write(JSON.stringify(ps, null, 2) + '\n');
      else for (const pr of ps) process.stdout.write(`${pr.name.padEnd(14)} ${pr.candidates.map(candKey).join(', ').padEnd(30)} ${pr.description ?? ''}\n`);
    });
  return p;
}

/** The flags a command was given, before `--` (read before parsing, so that usage errors honour them too). */
function flagGiven(argv: string[], flag: string): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes(flag);
}

/** Prints an error: one line on stderr, the JSON document on stdout with --json, the stack with --debug. */
function reportError(argv: string[], code: string, message: string, e?: unknown): void {
  if (flagGiven(argv, '--json')) process.stdout.write(JSON.stringify({ error: { code, message } }, null, 2) + '\n');
  if (flagGiven(argv, '--debug') && e instanceof Error) {
    process.stderr.write(`${e.stack}\n`);
    if (e.cause instanceof Error) process.stderr.write(`caused by: ${e.cause.stack}\n`);
  }
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0;
      // commander has printed its own message on stderr
      reportError(argv, 'MPQ_USAGE', e.message.replace(/^error: /, ''), e);
      return 2;
    }
    if (e instanceof MpqError) {
      process.stderr.write(`mpq: error [${e.code}]: ${e.message}\n`);
      reportError(argv, e.code, e.message, e);
      return 1;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`mpq: internal error: ${msg}${flagGiven(argv, '--debug') ? '' : ' (run again with --debug for the stack trace, and please report it)'}\n`);
    reportError(argv, 'MPQ_INTERNAL', msg, e);
    return 1;
  }
}

/**
 * `--shape` values: each is NAME=d,d,... or several at once, NAME=d,d,NAME=d,d (a part with
 * `=` starts the next input); `x` also separates dimensions (1x3x224x224).
 */
export function parseShapes(list: string[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  const bad = (s: string) => new MpqError('MPQ_BAD_INPUT', `--shape '${s}' must look like NAME=1,3,224,224 (several inputs: a=1,3,224,224,b=1,10)`);
  for (const s of list) {
    let name: string | undefined;
    for (const part of s.split(',').map((p) => p.trim())) {
      const eq = part.indexOf('=');
      let dims = part.replace(/\s+/g, '');
      if (eq >= 0) {
        name = part.slice(0, eq).trim();
        dims = part.slice(eq + 1).replace(/\s+/g, '');
        if (!name) throw bad(s);
        if (name in out) throw new MpqError('MPQ_BAD_INPUT', `--shape gives input '${name}' twice`);
        out[name] = [];
      }
      if (name === undefined || !/^\d+(x\d+)*$/.test(dims)) throw bad(s);
      out[name].push(...dims.split('x').map(Number));
    }
  }
  return out;
}
