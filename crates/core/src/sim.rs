//! The simulation plan (DESIGN.md section 8): the folded float graph compiled once per input
//! shape, with a quantizer slot on every quantized activation and weight. A configuration is
//! data ([`SimConfig`]): fake-quant parameters per activation slot, and per weight slot a
//! [`WeightVariant`] (the dequantized integers of one bit-width and rounding, with the bias
//! correction of its node), uploaded once. A step whose weight changes is rebuilt (re-packed)
//! once per variant and kept; activation fake-quant is applied in place to the producer's
//! output as soon as it is computed.
//!
//! The arithmetic is that of the QDQ graph the quantizer exports (QuantizeLinear ->
//! DequantizeLinear on each activation, DequantizeLinear of integer weights folded into the
//! float weight), so a configuration simulated here equals the same configuration run as a
//! QDQ model, bit for bit.
//!
//! [`Sim::phase1`] measures many configurations that each quantize one group: the float
//! plan runs once per batch, each configuration runs only the steps downstream of its
//! quantizers, from float activations kept in memory, and only the noise power per output
//! comes back.

use crate::attrs::Attrs;
use crate::error::{Error, Result};
use crate::exec::{BuildOptions, Executor};
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::kernels::{fq, simd_level};
use crate::ops::Op;
use crate::plan::{PlanDef, WeightStore};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Fake-quant of an activation: `(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    pub scale: f32,
    pub zp: f32,
    pub qmin: f32,
    pub qmax: f32,
}

/// A quantized weight: the dequantized values standing in for a plan constant, and the bias
/// correction (per output channel) of the Conv/ConvTranspose/Gemm that reads it as its weight.
pub struct WeightVariant {
    pub weight: Arc<Tensor>,
    pub bias_delta: Option<Vec<f32>>,
}

/// Weight variants by key, shared by the simulation plans of one model (one per input
/// shape): each is made and uploaded once.
pub type VariantStore = RwLock<HashMap<String, Arc<WeightVariant>>>;

/// How a weight variant is made from the float weight.
pub struct VariantSpec<'a> {
    /// The rounded integers (data-aware rounding), clamped to `[qmin, qmax]`; `None`: round
    /// to nearest here.
    pub q: Option<&'a [f32]>,
    /// One scale (per tensor) or one per channel of `axis`.
    pub scales: &'a [f32],
    pub axis: Option<usize>,
    pub qmin: f32,
    pub qmax: f32,
    pub bias_delta: Option<Vec<f32>>,
}

/// A configuration: fake-quant per activation value, a weight variant (by key) per weight
/// value. Quantizers not named are float.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    pub acts: Vec<(usize, ActQuant)>,
    pub weights: Vec<(usize, String)>,
}

/// Time spent in [`Sim::phase1`]: the float pass(es) and the configurations' own steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phase1Times {
    pub float_secs: f64,
    pub entry_secs: f64,
}

pub struct Sim {
    exec: Executor,
    variants: Arc<VariantStore>,
    /// Rebuilt steps by (step, keys of the variants it reads).
    ops: Mutex<HashMap<(usize, String), StepOverride>>,
    producer: Vec<Option<usize>>,
}

/// A step rebuilt on weight variants, and the inputs it reads in their place (ops that read
/// their weights or bias at run time get the variants there too).
#[derive(Clone)]
struct StepOverride {
    op: Arc<dyn Op>,
    args: Arc<Vec<(usize, Arc<Tensor>)>>,
}

impl StepOverride {
    /// `args` with the replaced inputs in place (extended for an added input).
    fn apply<'a>(&'a self, mut args: Vec<Option<&'a Tensor>>) -> Vec<Option<&'a Tensor>> {
        for (p, t) in self.args.iter() {
            if *p >= args.len() {
                args.resize(p + 1, None);
            }
            args[*p] = Some(t.as_ref());
        }
        args
    }
}

/// Runs step `si` on `args`, with its override where there is one.
fn run_with(exec: &Executor, si: usize, ov: Option<&StepOverride>, args: Vec<Option<&Tensor>>) -> Result<Vec<Tensor>> {
    match ov {
        Some(o) => exec.run_step(si, o.op.as_ref(), &o.apply(args)),
        None => exec.run_step(si, exec.steps[si].op.as_ref(), &args),
    }
}

/// What one configuration changes, resolved against the plan.
struct Prepared {
    fq: HashMap<usize, ActQuant>,
    ops: HashMap<usize, StepOverride>,
    /// Steps to recompute, in plan order.
    dirty: Vec<usize>,
    /// Values fake-quantized from their float value (produced by unchanged steps, or inputs).
    start: Vec<usize>,
    /// Float values the recomputed steps read (including `start`).
    frontier: Vec<usize>,
    /// The float step after which the whole frontier exists (`None`: graph inputs only).
    ready: Option<usize>,
    /// For each value read by a recomputed step: the position in `dirty` of its last read.
    last_use: HashMap<usize, usize>,
    changed: Vec<bool>,
}

fn check_cancel(cancel: Option<&AtomicBool>) -> Result<()> {
    match cancel {
        Some(c) if c.load(Ordering::Relaxed) => Err(Error::Cancelled),
        _ => Ok(()),
    }
}

/// Fake-quant in place, in parallel chunks for large tensors.
fn fake_quant_in_place(x: &mut [f32], q: &ActQuant) {
    let level = simd_level();
    if x.len() < PAR_MIN {
        fq::fake_quant_inplace(level, x, q.scale, q.zp, q.qmin, q.qmax);
    } else {
        x.par_chunks_mut(PAR_CHUNK).for_each(|c| fq::fake_quant_inplace(level, c, q.scale, q.zp, q.qmin, q.qmax));
    }
}

fn sum_sq(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

fn sum_sq_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64) * (x as f64 - y as f64)).sum()
}

impl Sim {
    /// Builds the float plan with every activation slot kept as a value of its own.
    pub fn new(plan: PlanDef, store: &WeightStore, act_slots: &[usize], variants: Arc<VariantStore>) -> Result<Self> {
        let opts = BuildOptions { no_fuse: act_slots.to_vec(), ..Default::default() };
        let exec = Executor::with_options(plan, store, &opts)?;
        let mut producer = vec![None; exec.values().len()];
        for (si, s) in exec.steps.iter().enumerate() {
            for &o in &s.outputs {
                producer[o] = Some(si);
            }
        }
        Ok(Sim { exec, variants, ops: Mutex::new(HashMap::new()), producer })
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn has_variant(&self, key: &str) -> bool {
        self.variants.read().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }

    /// Makes the variant `key` of plan constant `value` (see [`VariantSpec`]): the weight
    /// as a QDQ model's DequantizeLinear gives it.
    pub fn add_variant(&self, key: String, value: usize, spec: VariantSpec) -> Result<()> {
        let w = self
            .exec
            .consts
            .get(value)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Plan(format!("weight variant '{key}': value {value} is not a constant of the plan")))?;
        let n = w.data.len();
        let (ch, inner) = match spec.axis {
            None => (1, n.max(1)),
            Some(a) if a < w.shape.len() => (w.shape[a], w.shape[a + 1..].iter().product::<usize>().max(1)),
            Some(a) => return Err(Error::Plan(format!("weight variant '{key}': axis {a} out of range for shape {:?}", w.shape))),
        };
        if spec.scales.len() != ch || spec.scales.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(Error::Plan(format!("weight variant '{key}': needs {ch} finite non-zero scales, got {}", spec.scales.len())));
        }
        if let Some(q) = spec.q {
            if q.len() != n {
                return Err(Error::Plan(format!("weight variant '{key}': {} rounded values for a weight of {n}", q.len())));
            }
        }
        let (lo, hi) = (spec.qmin, spec.qmax);
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let s = spec.scales[if ch == 1 { 0 } else { (i / inner) % ch }];
                let q = match spec.q {
                    Some(q) => q[i].max(lo).min(hi),
                    None => fq::quantize_one(w.data[i], s, 0.0, lo, hi),
                };
                fq::dequantize_one(q, s, 0.0)
            })
            .collect();
        let v = WeightVariant { weight: Arc::new(Tensor::new(w.shape.clone(), data)), bias_delta: spec.bias_delta };
        self.variants.write().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::new(v));
        Ok(())
    }

    /// Step `si` rebuilt on the variants it reads (`None` when it reads none).
    fn step_op(&self, si: usize, variants: &HashMap<usize, (&str, Arc<WeightVariant>)>) -> Result<Option<StepOverride>> {
        let step = &self.exec.steps[si];
        let mut replace = Vec::new();
        let mut key = String::new();
        for (p, v) in step.inputs.iter().enumerate() {
            if let Some((k, var)) = v.and_then(|v| variants.get(&v)) {
                replace.push((p, var.weight.clone()));
                key.push_str(k);
                key.push('\u{1}');
            }
        }
        if replace.is_empty() {
            return Ok(None);
        }
        let ck = (si, key);
        if let Some(op) = self.ops.lock().unwrap_or_else(|e| e.into_inner()).get(&ck) {
            return Ok(Some(op.clone()));
        }
        if let Some(b) = self.corrected_bias(si, variants) {
            replace.push((2, Arc::new(b)));
        }
        let op: Arc<dyn Op> = Arc::from(self.exec.build_step_with(si, &replace)?);
        let ov = StepOverride { op, args: Arc::new(replace) };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).insert(ck, ov.clone());
        Ok(Some(ov))
    }

    /// The bias of a Conv/ConvTranspose/Gemm whose weight (input 1) has a bias correction:
    /// the old bias (or zeros) plus the correction (over Gemm's `beta`), as the QDQ graph
    /// builder writes it. `None` when there is nothing to correct or the bias is not constant.
    fn corrected_bias(&self, si: usize, variants: &HashMap<usize, (&str, Arc<WeightVariant>)>) -> Option<Tensor> {
        let step = &self.exec.steps[si];
        let node = self.exec.node_of(si);
        if !["Conv", "ConvTranspose", "Gemm"].contains(&node.op.as_str()) {
            return None;
        }
        let (_, var) = variants.get(&step.inputs.get(1).copied().flatten()?)?;
        let delta = var.bias_delta.as_ref()?;
        let old = match node.inputs.get(2).copied().flatten() {
            Some(b) => Some(self.exec.consts[b].clone()?),
            None => None,
        };
        let beta = if node.op == "Gemm" { Attrs { op: &node.op, node: &node.name, map: &node.attrs }.float("beta", 1.0).ok()? } else { 1.0 };
        if beta == 0.0 || !beta.is_finite() {
            return None;
        }
        let len = old.as_ref().map_or(delta.len(), |o| o.data.len());
        if len != delta.len() && len != 1 {
            return None;
        }
        let data: Vec<f32> = (0..delta.len())
            .map(|i| {
                let o = old.as_ref().map_or(0.0, |o| o.data[if len == 1 { 0 } else { i }]);
                (o as f64 + delta[i] as f64 / beta as f64) as f32
            })
            .collect();
        let shape = match &old {
            Some(o) if len == delta.len() => o.shape.clone(),
            _ => vec![delta.len()],
        };
        Some(Tensor::new(shape, data))
    }

    /// Resolves a configuration: fake-quant by value and rebuilt steps.
    fn resolve(&self, cfg: &SimConfig) -> Result<(HashMap<usize, ActQuant>, HashMap<usize, StepOverride>)> {
        let nv = self.exec.values().len();
        let mut fq = HashMap::new();
        for &(v, q) in &cfg.acts {
            if v >= nv {
                return Err(Error::Plan(format!("activation slot {v} is not a value of the plan")));
            }
            if !q.scale.is_finite() || q.scale == 0.0 || q.qmin.is_nan() || q.qmax.is_nan() || q.qmin > q.qmax {
                return Err(Error::Plan(format!("activation '{}': scale {} / range [{}, {}] is not a valid quantizer", self.exec.values()[v].name, q.scale, q.qmin, q.qmax)));
            }
            fq.insert(v, q);
        }
        let mut variants = HashMap::new();
        {
            let all = self.variants.read().unwrap_or_else(|e| e.into_inner());
            for (v, k) in &cfg.weights {
                let var = all.get(k).ok_or_else(|| Error::Plan(format!("weight variant '{k}' was not uploaded")))?;
                let want = self.exec.consts.get(*v).cloned().flatten().ok_or_else(|| Error::Plan(format!("weight variant '{k}': value {v} is not a constant of the plan")))?;
                if var.weight.shape != want.shape {
                    return Err(Error::Plan(format!("weight variant '{k}' has shape {:?}, the plan's constant {:?}", var.weight.shape, want.shape)));
                }
                variants.insert(*v, (k.as_str(), var.clone()));
            }
        }
        let mut ops = HashMap::new();
        if !variants.is_empty() {
            for si in 0..self.exec.steps.len() {
                if let Some(op) = self.step_op(si, &variants)? {
                    ops.insert(si, op);
                }
            }
        }
        Ok((fq, ops))
    }

    fn prepare(&self, cfg: &SimConfig) -> Result<Prepared> {
        let (fq, ops) = self.resolve(cfg)?;
        let nv = self.exec.values().len();
        let mut changed = vec![false; nv];
        let mut start = Vec::new();
        for &v in self.exec.input_ids() {
            if fq.contains_key(&v) {
                changed[v] = true;
                start.push(v);
            }
        }
        let mut dirty = Vec::new();
        for (si, st) in self.exec.steps.iter().enumerate() {
            if ops.contains_key(&si) || st.inputs.iter().flatten().any(|&v| changed[v]) {
                dirty.push(si);
                for &o in &st.outputs {
                    changed[o] = true;
                }
            } else {
                for &o in &st.outputs {
                    if fq.contains_key(&o) {
                        changed[o] = true;
                        start.push(o);
                    }
                }
            }
        }
        let mut frontier = start.clone();
        let mut last_use = HashMap::new();
        for (k, &si) in dirty.iter().enumerate() {
            for &v in self.exec.steps[si].inputs.iter().flatten() {
                last_use.insert(v, k);
                if !changed[v] && self.exec.consts[v].is_none() && !frontier.contains(&v) {
                    frontier.push(v);
                }
            }
        }
        let ready = frontier.iter().filter_map(|&v| self.producer[v]).max();
        Ok(Prepared { fq, ops, dirty, start, frontier, ready, last_use, changed })
    }

    /// Runs a prepared configuration's steps from the float values in `float`; returns the
    /// changed values among `outs` (`None` for the unchanged ones).
    fn run_prepared(&self, p: &Prepared, float: &[Option<Arc<Tensor>>], outs: &[usize], cancel: Option<&AtomicBool>) -> Result<Vec<Option<Arc<Tensor>>>> {
        let mut slots: HashMap<usize, Arc<Tensor>> = HashMap::with_capacity(p.frontier.len() + 4);
        for &v in &p.frontier {
            let t = float[v].clone().ok_or_else(|| Error::Plan(format!("float value '{}' is not available", self.exec.values()[v].name)))?;
            slots.insert(v, t);
        }
        for &v in &p.start {
            let mut t = (*slots[&v]).clone();
            fake_quant_in_place(&mut t.data, &p.fq[&v]);
            slots.insert(v, Arc::new(t));
        }
        let keep: Vec<usize> = outs.to_vec();
        for (k, &si) in p.dirty.iter().enumerate() {
            check_cancel(cancel)?;
            let step = &self.exec.steps[si];
            let produced = {
                let args: Vec<Option<&Tensor>> = step
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| slots.get(&v).map(|a| a.as_ref()).or(self.exec.consts[v].as_deref())))
                    .collect();
                run_with(&self.exec, si, p.ops.get(&si), args)?
            };
            for (mut t, &o) in produced.into_iter().zip(&step.outputs) {
                if let Some(q) = p.fq.get(&o) {
                    fake_quant_in_place(&mut t.data, q);
                }
                slots.insert(o, Arc::new(t));
            }
            for v in step.inputs.iter().flatten() {
                if p.last_use.get(v) == Some(&k) && !keep.contains(v) {
                    slots.remove(v);
                }
            }
        }
        Ok(outs.iter().map(|o| if p.changed[*o] { slots.get(o).cloned() } else { None }).collect())
    }

    /// Runs the whole plan under `cfg` and returns the values `want` (graph outputs).
    pub fn run(&self, inputs: Vec<Tensor>, cfg: &SimConfig, want: &[usize], cancel: Option<&AtomicBool>) -> Result<Vec<Tensor>> {
        let (fq, ops) = self.resolve(cfg)?;
        for &w in want {
            if !self.exec.output_ids().contains(&w) {
                return Err(Error::Plan(format!("value {w} is not a graph output")));
            }
        }
        let mut slots = self.exec.initial_slots(inputs)?;
        for &v in self.exec.input_ids() {
            if let Some(q) = fq.get(&v) {
                let mut t = (*slots[v].take().unwrap()).clone();
                fake_quant_in_place(&mut t.data, q);
                slots[v] = Some(Arc::new(t));
            }
        }
        for (si, step) in self.exec.steps.iter().enumerate() {
            check_cancel(cancel)?;
            let produced = {
                let args: Vec<Option<&Tensor>> = step.inputs.iter().map(|v| v.and_then(|v| slots[v].as_deref())).collect();
                run_with(&self.exec, si, ops.get(&si), args)?
            };
            for (mut t, &o) in produced.into_iter().zip(&step.outputs) {
                if let Some(q) = fq.get(&o) {
                    fake_quant_in_place(&mut t.data, q);
                }
                slots[o] = Some(Arc::new(t));
            }
            for v in step.inputs.iter().flatten() {
                if self.exec.last_use[*v] == si && self.exec.consts[*v].is_none() {
                    slots[*v] = None;
                }
            }
        }
        want.iter()
            .map(|&w| {
                let t = slots[w].take().ok_or_else(|| Error::Plan(format!("value '{}' was not computed", self.exec.values()[w].name)))?;
                Ok(Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone()))
            })
            .collect()
    }

    /// Phase 1 on one batch: for each configuration, the noise power (sum of squared
    /// differences from float) of each of `outs` (graph outputs), entries x outputs, and the
    /// float signal power of each output. `float_outs`: the float outputs when the caller has
    /// them; otherwise the float pass runs to the end and they are returned (the fourth value),
    /// so that the caller can keep them for the next chunk: the float plan runs once per call,
    /// and each configuration runs its own steps as soon as the float values it reads exist.
    pub fn phase1(
        &self,
        inputs: Vec<Tensor>,
        cfgs: &[SimConfig],
        outs: &[usize],
        float_outs: Option<Vec<Tensor>>,
        cancel: Option<&AtomicBool>,
    ) -> Result<(Vec<f64>, Vec<f64>, Phase1Times, Option<Vec<Tensor>>)> {
        for &o in outs {
            if !self.exec.output_ids().contains(&o) {
                return Err(Error::Plan(format!("value {o} is not a graph output")));
            }
        }
        let prepared: Vec<Prepared> = cfgs.iter().map(|c| self.prepare(c)).collect::<Result<_>>()?;
        let mut times = Phase1Times::default();
        let t0 = Instant::now();
        if let Some(f) = &float_outs {
            if f.len() != outs.len() {
                return Err(Error::Plan(format!("{} float outputs for {} outputs", f.len(), outs.len())));
            }
            for (t, &o) in f.iter().zip(outs) {
                if t.shape != self.exec.values()[o].shape {
                    return Err(Error::Plan(format!("float output '{}' has shape {:?}, the plan says {:?}", self.exec.values()[o].name, t.shape, self.exec.values()[o].shape)));
                }
            }
        }
        let computed_here = float_outs.is_none();
        let nsteps = self.exec.steps.len();
        let nv = self.exec.values().len();
        // each float value is kept until its last float reader and the last configuration
        // that reads it have run (the graph outputs to the end when this call computes them)
        let mut need: Vec<Option<usize>> = vec![None; nv];
        for (si, st) in self.exec.steps.iter().enumerate() {
            for &v in st.inputs.iter().flatten() {
                need[v] = Some(si);
            }
        }
        let mut at: Vec<Vec<usize>> = vec![Vec::new(); nsteps + 1]; // entries by ready step (+1; 0: before any)
        for (e, p) in prepared.iter().enumerate() {
            let r = p.ready.map_or(0, |s| s + 1);
            at[r].push(e);
            for &v in &p.frontier {
                need[v] = Some(need[v].map_or(r.saturating_sub(1), |n| n.max(r.saturating_sub(1))));
            }
        }
        if computed_here {
            for &o in outs {
                need[o] = Some(usize::MAX);
            }
        }
        let last = prepared.iter().filter(|p| !p.dirty.is_empty()).map(|p| p.ready.map_or(0, |s| s + 1)).max();
        let mut noise = vec![0f64; cfgs.len() * outs.len()];
        let mut slots = self.exec.initial_slots(inputs)?;
        times.float_secs += t0.elapsed().as_secs_f64();
        // the configurations' outputs, until the float outputs exist (this call computes them)
        let mut pending: Vec<(usize, Vec<Option<Arc<Tensor>>>)> = Vec::new();
        let add_noise = |noise: &mut [f64], float: &[Tensor], e: usize, g: &[Option<Arc<Tensor>>]| {
            for (i, g) in g.iter().enumerate() {
                if let Some(g) = g {
                    noise[e * outs.len() + i] = sum_sq_diff(&float[i].data, &g.data);
                }
            }
        };
        // the entries ready at one point run side by side (a group's candidates share their
        // frontier): small downstream steps alone would leave cores idle
        let run_ready = |r: usize, slots: &[Option<Arc<Tensor>>], times: &mut Phase1Times, noise: &mut [f64], pending: &mut Vec<(usize, Vec<Option<Arc<Tensor>>>)>| -> Result<()> {
            let t = Instant::now();
            let got: Vec<(usize, Vec<Option<Arc<Tensor>>>)> = at[r]
                .par_iter()
                .filter(|&&e| !prepared[e].dirty.is_empty())
                .map(|&e| self.run_prepared(&prepared[e], slots, outs, cancel).map(|g| (e, g)))
                .collect::<Result<_>>()?;
            match &float_outs {
                Some(f) => got.iter().for_each(|(e, g)| add_noise(noise, f, *e, g)),
                None => pending.extend(got),
            }
            times.entry_secs += t.elapsed().as_secs_f64();
            Ok(())
        };
        let end = match (last, computed_here) {
            (_, true) => nsteps,
            (Some(l), false) => l,
            (None, false) => 0,
        };
        if last.is_some() {
            run_ready(0, &slots, &mut times, &mut noise, &mut pending)?;
        }
        for si in 0..end {
            check_cancel(cancel)?;
            let t = Instant::now();
            let step = &self.exec.steps[si];
            let produced = {
                let args: Vec<Option<&Tensor>> = step.inputs.iter().map(|v| v.and_then(|v| slots[v].as_deref())).collect();
                self.exec.run_step(si, step.op.as_ref(), &args)?
            };
            for (t, &o) in produced.into_iter().zip(&step.outputs) {
                if need[o].is_some() {
                    slots[o] = Some(Arc::new(t));
                }
            }
            times.float_secs += t.elapsed().as_secs_f64();
            if last.is_some_and(|l| si < l) {
                run_ready(si + 1, &slots, &mut times, &mut noise, &mut pending)?;
            }
            for v in step.inputs.iter().flatten().copied().chain(step.outputs.iter().copied()) {
                if need[v].is_none_or(|n| n <= si) && self.exec.consts[v].is_none() {
                    slots[v] = None;
                }
            }
        }
        // the float outputs this call computed, taken out of their slots (copied only when shared)
        let computed: Option<Vec<Tensor>> = if computed_here {
            let f: Vec<Tensor> = outs
                .iter()
                .map(|&o| {
                    let t = slots[o].take().ok_or_else(|| Error::Plan(format!("float value '{}' was not computed", self.exec.values()[o].name)))?;
                    Ok(Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone()))
                })
                .collect::<Result<_>>()?;
            for (e, g) in &pending {
                add_noise(&mut noise, &f, *e, g);
            }
            Some(f)
        } else {
            None
        };
        let float = float_outs.as_deref().or(computed.as_deref()).unwrap_or_default();
        let signal: Vec<f64> = float.iter().map(|t| sum_sq(&t.data)).collect();
        Ok((signal, noise, times, computed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanDef;

    /// x -> Conv(w, b) -> c -> Relu -> r -> Conv(w2) -> y, 1x2x4x4 input
    fn plan() -> (PlanDef, WeightStore) {
        let json = r#"{
          "values": [
            {"name": "x", "shape": [1, 2, 4, 4]}, {"name": "w", "shape": [3, 2, 1, 1]}, {"name": "b", "shape": [3]},
            {"name": "c", "shape": [1, 3, 4, 4]}, {"name": "r", "shape": [1, 3, 4, 4]},
            {"name": "w2", "shape": [2, 3, 3, 3]}, {"name": "y", "shape": [1, 2, 2, 2]}
          ],
          "inputs": [0], "outputs": [6],
          "constants": [{"value": 1, "weight": "w"}, {"value": 2, "weight": "b"}, {"value": 5, "weight": "w2"}],
          "nodes": [
            {"op": "Conv", "name": "conv1", "inputs": [0, 1, 2], "outputs": [3], "attrs": {}, "opset": 13},
            {"op": "Relu", "name": "relu", "inputs": [3], "outputs": [4], "attrs": {}, "opset": 13},
            {"op": "Conv", "name": "conv2", "inputs": [4, 5, null], "outputs": [6], "attrs": {}, "opset": 13}
          ]
        }"#;
        let store = WeightStore::new();
        let r = |n: usize, s: f32| (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * s).collect::<Vec<f32>>();
        store.insert("w".into(), Tensor::new(vec![3, 2, 1, 1], r(6, 0.3)));
        store.insert("b".into(), Tensor::new(vec![3], vec![0.1, -0.2, 0.3]));
        store.insert("w2".into(), Tensor::new(vec![2, 3, 3, 3], r(54, 0.05)));
        (PlanDef::from_json(json).unwrap(), store)
    }

    fn input() -> Tensor {
        Tensor::new(vec![1, 2, 4, 4], (0..32).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.4).collect())
    }

    #[test]
    fn phase1_noise_equals_a_full_run_of_each_configuration() {
        let (p, store) = plan();
        let sim = Sim::new(p, &store, &[4], Default::default()).unwrap();
        let scales = [0.02f32, 0.03, 0.05];
        sim.add_variant("w@4".into(), 1, VariantSpec { q: None, scales: &scales, axis: Some(0), qmin: -7.0, qmax: 7.0, bias_delta: Some(vec![0.01, 0.0, -0.02]) }).unwrap();
        sim.add_variant("w2@4".into(), 5, VariantSpec { q: None, scales: &[0.04], axis: None, qmin: -7.0, qmax: 7.0, bias_delta: Some(vec![0.5, -0.5]) }).unwrap();
        let aq = ActQuant { scale: 0.05, zp: 0.0, qmin: 0.0, qmax: 15.0 };
        let cfgs = vec![
            SimConfig { acts: vec![(4, aq)], weights: vec![(1, "w@4".into())] },
            SimConfig { acts: vec![], weights: vec![(5, "w2@4".into())] },
            SimConfig { acts: vec![(0, ActQuant { scale: 0.15, zp: 128.0, qmin: 0.0, qmax: 255.0 })], weights: vec![] },
            SimConfig::default(),
        ];
        let float = sim.executor().run(vec![input()], None).unwrap();
        let (signal, noise, _, floats) = sim.phase1(vec![input()], &cfgs, &[6], None, None).unwrap();
        assert!(floats.is_some());
        assert_eq!(signal[0], sum_sq(&float[0].data));
        for (e, c) in cfgs.iter().enumerate() {
            let y = sim.run(vec![input()], c, &[6], None).unwrap();
            assert_eq!(noise[e], sum_sq_diff(&float[0].data, &y[0].data), "entry {e}");
        }
        assert!(noise[0] > 0.0 && noise[1] > 0.0 && noise[2] > 0.0 && noise[3] == 0.0, "{noise:?}");
    }

    #[test]
    fn a_bias_correction_reaches_a_conv_without_bias() {
        let (p, store) = plan();
        let sim = Sim::new(p, &store, &[], Default::default()).unwrap();
        let w2 = sim.executor().consts[5].clone().unwrap();
        // q = the float weight over scale 1 rounded: integers here only when the weight is one already
        let q: Vec<f32> = w2.data.iter().map(|v| (v / 0.05).round()).collect();
        sim.add_variant("a".into(), 5, VariantSpec { q: Some(&q), scales: &[0.05], axis: None, qmin: -127.0, qmax: 127.0, bias_delta: None }).unwrap();
        sim.add_variant("b".into(), 5, VariantSpec { q: Some(&q), scales: &[0.05], axis: None, qmin: -127.0, qmax: 127.0, bias_delta: Some(vec![1.0, -2.0]) }).unwrap();
        let ya = sim.run(vec![input()], &SimConfig { acts: vec![], weights: vec![(5, "a".into())] }, &[6], None).unwrap();
        let yb = sim.run(vec![input()], &SimConfig { acts: vec![], weights: vec![(5, "b".into())] }, &[6], None).unwrap();
        for (i, (a, b)) in ya[0].data.iter().zip(&yb[0].data).enumerate() {
            let d = if i < 4 { 1.0 } else { -2.0 };
            assert!((b - a - d).abs() < 1e-5, "{i}: {a} {b}");
        }
        assert!(sim.run(vec![input()], &SimConfig { acts: vec![], weights: vec![(5, "missing".into())] }, &[6], None).is_err());
    }
}
