//! Binding of data-aware weight rounding: layer-input statistics gathered while a plan runs,
//! and GPTQ rounding with bias correction. Both run off the JS thread, panics caught.

use crate::{guard, shape_usize, CancelToken, PlanHandle, TensorIn};
use mpq_core::gptq::{round_layer, Method, RoundOptions};
use mpq_core::hessian::{LayerAcc, LayerSpec};
use mpq_core::{Error as CoreError, Executor, Tensor};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

type Layers = Arc<Mutex<Vec<LayerAcc>>>;

fn lock(l: &Layers) -> std::sync::MutexGuard<'_, Vec<LayerAcc>> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// Input statistics of weighted layers (one `H` and mean per group), accumulated over batches.
#[napi]
pub struct RoundingStats {
    layers: Layers,
}

pub struct AccumulateTask {
    exec: Arc<Executor>,
    layers: Layers,
    inputs: Option<Vec<Tensor>>,
    values: Vec<usize>,
    cancel: Option<Arc<AtomicBool>>,
}

#[napi]
impl Task for AccumulateTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        let inputs = self.inputs.take().unwrap_or_default();
        let exec = self.exec.clone();
        let layers = self.layers.clone();
        let values = self.values.clone();
        let cancel = self.cancel.clone();
        guard(move || {
            let mut by_value: HashMap<usize, Vec<usize>> = HashMap::new();
            for (i, &v) in values.iter().enumerate() {
                by_value.entry(v).or_default().push(i);
            }
            let mut unique: Vec<usize> = by_value.keys().copied().collect();
            unique.sort_unstable();
            let mut ls = lock(&layers);
            if ls.len() != values.len() {
                return Err(CoreError::Plan(format!("{} layer values for {} layers", values.len(), ls.len())));
            }
            let mut err = None;
            exec.run_observe(inputs, &[], &unique, &mut |v, t| {
                // layers that read the same value the same way (the Q, K and V projections of
                // an attention block) share one accumulation: the first adds, the others copy
                let ids = &by_value[&v];
                for (k, &i) in ids.iter().enumerate() {
                    let same = ids[..k].iter().copied().find(|&j| ls[j].spec == ls[i].spec);
                    if let Some(j) = same {
                        let st = ls[j].stats.clone();
                        ls[i].stats = st;
                    } else if let Err(e) = ls[i].add(t) {
                        err.get_or_insert(e);
                    }
                }
            }, cancel.as_deref())?;
            err.map_or(Ok(()), Err)
        })
    }

    fn resolve(&mut self, _env: Env, _output: Self::Output) -> Result<Self::JsValue> {
        Ok(())
    }
}

pub struct AddTask {
    layers: Layers,
    layer: usize,
    x: Option<Tensor>,
    x_ref: Option<Tensor>,
}

#[napi]
impl Task for AddTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        let (x, x_ref) = (self.x.take(), self.x_ref.take());
        let layers = self.layers.clone();
        let layer = self.layer;
        guard(move || {
            let x = x.ok_or_else(|| CoreError::Plan("statistics task run twice".into()))?;
            let mut ls = lock(&layers);
            let acc = ls.get_mut(layer).ok_or_else(|| CoreError::Plan(format!("no layer {layer}")))?;
            acc.add_pair(&x, x_ref.as_ref())
        })
    }

    fn resolve(&mut self, _env: Env, _output: Self::Output) -> Result<Self::JsValue> {
        Ok(())
    }
}

#[napi(object)]
pub struct RoundedOut {
    /// The integers, in the weight's layout.
    pub q: Float32Array,
    /// Output mean shift per output channel caused by the rounding (add to the bias).
    pub bias_delta: Float32Array,
    /// Scale per output channel (re-chosen when `scaleSearch` is on).
    pub scales: Float32Array,
    /// Output channels that kept the data-aware result (the others: nearest, as measured better).
    pub data_aware: u32,
    pub channels: u32,
    /// Output error on the calibration statistics of the result and of round-to-nearest.
    pub loss: f64,
    pub nearest_loss: f64,
}

pub struct RoundTask {
    layer: Option<LayerAcc>,
    weight: Vec<f32>,
    shape: Vec<usize>,
    scales: Vec<f32>,
    bits: u32,
    method: Method,
    opts: RoundOptions,
}

#[napi]
impl Task for RoundTask {
    type Output = mpq_core::gptq::Rounded;
    type JsValue = RoundedOut;

    fn compute(&mut self) -> Result<Self::Output> {
        let layer = self.layer.take();
        let (w, shape, scales, bits, method, opts) = (&self.weight, &self.shape, &self.scales, self.bits, self.method, &self.opts);
        guard(move || {
            let layer = layer.ok_or_else(|| CoreError::Plan("rounding task run twice".into()))?;
            let stats = layer.stats.as_ref().ok_or_else(|| CoreError::Plan("no calibration statistics were gathered for this layer".into()))?;
            round_layer(&layer.spec, stats, w, shape, scales, bits, method, opts)
        })
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(RoundedOut {
            q: Float32Array::new(out.q),
            bias_delta: Float32Array::new(out.bias_delta),
            scales: Float32Array::new(out.scales),
            data_aware: out.data_aware as u32,
            channels: out.channels as u32,
            loss: out.loss,
            nearest_loss: out.nearest_loss,
        })
    }
}

fn bad_arg(msg: String) -> Error {
    Error::new(Status::InvalidArg, format!("MPQ_BAD_INPUT: {msg}"))
}

#[napi]
impl RoundingStats {
    /// `specs_json`: a JSON array of layer specs (see `mpq_core::hessian::LayerSpec`).
    #[napi(constructor)]
    pub fn new(specs_json: String) -> Result<Self> {
        let specs: Vec<LayerSpec> = serde_json::from_str(&specs_json).map_err(|e| bad_arg(format!("bad layer specs: {e}")))?;
        Ok(RoundingStats { layers: Arc::new(Mutex::new(specs.into_iter().map(LayerAcc::new).collect())) })
    }

    /// Runs `plan` on one batch and adds each layer's input (`values[i]`: plan value index
    /// of layer i's input, kept at compile time) to its statistics.
    #[napi]
    pub fn accumulate(&self, plan: &PlanHandle, inputs: Vec<TensorIn>, values: Vec<u32>, cancel: Option<&CancelToken>) -> AsyncTask<AccumulateTask> {
        let inputs = inputs.into_iter().map(|t| Tensor { shape: shape_usize(&t.shape), data: t.data.to_vec() }).collect();
        AsyncTask::new(AccumulateTask {
            exec: plan.exec.clone(),
            layers: self.layers.clone(),
            inputs: Some(inputs),
            values: values.into_iter().map(|v| v as usize).collect(),
            cancel: cancel.map(|c| c.flag.clone()),
        })
    }

    /// Adds one batch of layer `layer`'s input `x` directly and, for sequential rounding, the
    /// same input in the float network `xRef` (same shape): rounding then aims at the float
    /// layer's output and bias correction at its mean.
    #[napi]
    pub fn add_inputs(&self, layer: u32, x: TensorIn, x_ref: Option<TensorIn>) -> AsyncTask<AddTask> {
        let conv = |t: TensorIn| Tensor { shape: shape_usize(&t.shape), data: t.data.to_vec() };
        AsyncTask::new(AddTask { layers: self.layers.clone(), layer: layer as usize, x: Some(conv(x)), x_ref: x_ref.map(conv) })
    }

    /// Forgets layer `layer`'s statistics.
    #[napi]
    pub fn reset(&self, layer: u32) {
        if let Some(l) = lock(&self.layers).get_mut(layer as usize) {
            l.stats = None;
        }
    }

    /// Number of input vectors seen by layer `layer` (0 if none).
    #[napi]
    pub fn count(&self, layer: u32) -> f64 {
        lock(&self.layers).get(layer as usize).and_then(|l| l.stats.as_ref()).map_or(0.0, |s| s.count as f64)
    }

    /// Rounds layer `layer`'s weight (ONNX layout, `scales` per output channel) to `bits`
    /// with `method` ("gptq" or "nearest"). `options`: JSON {damp, block, actOrder, scaleSearch,
    /// cross, crossMinRatio, exhaustive, exhaustiveScales} (see `mpq_core::gptq::RoundOptions`).
    #[napi]
    pub fn round(&self, layer: u32, weight: Float32Array, shape: Vec<u32>, scales: Float32Array, bits: u32, method: String, options: Option<String>) -> Result<AsyncTask<RoundTask>> {
        let method = match method.as_str() {
            "gptq" => Method::Gptq,
            "nearest" => Method::Nearest,
            m => return Err(bad_arg(format!("unknown rounding method '{m}' (nearest or gptq)"))),
        };
        let mut opts = RoundOptions::default();
        if let Some(o) = options {
            let v: serde_json::Value = serde_json::from_str(&o).map_err(|e| bad_arg(format!("bad rounding options: {e}")))?;
            if let Some(d) = v.get("damp").and_then(|x| x.as_f64()) {
                opts.damp = d;
            }
            if let Some(b) = v.get("block").and_then(|x| x.as_u64()) {
                opts.block = b as usize;
            }
            if let Some(a) = v.get("actOrder").and_then(|x| x.as_bool()) {
                opts.act_order = a;
            }
            if let Some(a) = v.get("scaleSearch").and_then(|x| x.as_bool()) {
                opts.scale_search = a;
            }
            if let Some(a) = v.get("cross").and_then(|x| x.as_bool()) {
                opts.cross = a;
            }
            if let Some(a) = v.get("crossMinRatio").and_then(|x| x.as_f64()) {
                opts.cross_min_ratio = a;
            }
            if let Some(a) = v.get("exhaustive").and_then(|x| x.as_u64()) {
                opts.exhaustive = a as usize;
            }
            if let Some(a) = v.get("exhaustiveScales").and_then(|x| x.as_bool()) {
                opts.exhaustive_scales = a;
            }
        }
        let layer = lock(&self.layers).get(layer as usize).cloned().ok_or_else(|| bad_arg(format!("no layer {layer}")))?;
        Ok(AsyncTask::new(RoundTask {
            layer: Some(layer),
            weight: weight.to_vec(),
            shape: shape_usize(&shape),
            scales: scales.to_vec(),
            bits,
            method,
            opts,
        }))
    }
}
