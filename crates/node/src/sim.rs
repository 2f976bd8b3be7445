//! Binding of the simulation plan (`mpq_core::sim`): one plan per model and input shape,
//! configurations as data, phase 1 as one call per batch and chunk of entries.
use crate::{guard, shape_usize, CancelToken, TensorIn, TensorOut, WeightStoreHandle};
use mpq_core::sim::{ActQuant, Sim, SimConfig, VariantSpec, VariantStore};
use mpq_core::{PlanDef, Tensor};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Fake-quant of one activation value of the plan.
#[napi(object)]
pub struct SimAct {
    pub value: u32,
    pub scale: f64,
    pub zp: f64,
    pub qmin: f64,
    pub qmax: f64,
}

/// A weight value of the plan replaced by an uploaded variant.
#[napi(object)]
pub struct SimWeight {
    pub value: u32,
    pub key: String,
}

/// A configuration: quantizers not named are float.
#[napi(object)]
pub struct SimConfigIn {
    pub acts: Vec<SimAct>,
    pub weights: Vec<SimWeight>,
}

fn config(c: SimConfigIn) -> SimConfig {
    SimConfig {
        acts: c
            .acts
            .into_iter()
            .map(|a| (a.value as usize, ActQuant { scale: a.scale as f32, zp: a.zp as f32, qmin: a.qmin as f32, qmax: a.qmax as f32 }))
            .collect(),
        weights: c.weights.into_iter().map(|w| (w.value as usize, w.key)).collect(),
    }
}

fn tensors(t: Vec<TensorIn>) -> Vec<Tensor> {
    t.into_iter().map(|t| Tensor { shape: shape_usize(&t.shape), data: t.data.to_vec() }).collect()
}

/// Weight variants shared by the simulation plans of one model.
#[napi]
pub struct VariantStoreHandle {
    inner: Arc<VariantStore>,
}

#[napi]
impl VariantStoreHandle {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        VariantStoreHandle { inner: Default::default() }
    }
}

/// The simulation plan of one model at one input shape.
#[napi]
pub struct SimHandle {
    sim: Arc<Sim>,
}

pub struct SimRunTask {
    sim: Arc<Sim>,
    inputs: Option<Vec<Tensor>>,
    config: SimConfig,
    want: Vec<usize>,
    cancel: Option<Arc<AtomicBool>>,
}

#[napi]
impl Task for SimRunTask {
    type Output = Vec<Tensor>;
    type JsValue = Vec<TensorOut>;
    fn compute(&mut self) -> Result<Self::Output> {
        let inputs = self.inputs.take().unwrap_or_default();
        let (sim, cfg, want, cancel) = (self.sim.clone(), &self.config, &self.want, self.cancel.clone());
        guard(move || sim.run(inputs, cfg, want, cancel.as_deref()))
    }
    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.into_iter().map(TensorOut::from).collect())
    }
}

pub struct Phase1Task {
    sim: Arc<Sim>,
    inputs: Option<Vec<Tensor>>,
    configs: Vec<SimConfig>,
    outs: Vec<usize>,
    float_outs: Option<Vec<Tensor>>,
    cancel: Option<Arc<AtomicBool>>,
}

/// What a phase-1 call returns: `values` = `[signal per output..., noise per config and
/// output..., float seconds, configurations' seconds]`; `floats`: the float outputs, when the
/// call computed them (none were given).
#[napi(object)]
pub struct Phase1Out {
    pub values: Float64Array,
    pub floats: Option<Vec<TensorOut>>,
}

#[napi]
impl Task for Phase1Task {
    type Output = (Vec<f64>, Option<Vec<Tensor>>);
    type JsValue = Phase1Out;
    fn compute(&mut self) -> Result<Self::Output> {
        let inputs = self.inputs.take().unwrap_or_default();
        let float_outs = self.float_outs.take();
        let (sim, cfgs, outs, cancel) = (self.sim.clone(), &self.configs, &self.outs, self.cancel.clone());
        guard(move || {
            let (signal, noise, t, floats) = sim.phase1(inputs, cfgs, outs, float_outs, cancel.as_deref())?;
            let mut v = signal;
            v.extend(noise);
            v.push(t.float_secs);
            v.push(t.entry_secs);
            Ok((v, floats))
        })
    }
    fn resolve(&mut self, _env: Env, (v, floats): Self::Output) -> Result<Self::JsValue> {
        Ok(Phase1Out {
            values: Float64Array::new(v),
            floats: floats.map(|f| f.into_iter().map(TensorOut::from).collect()),
        })
    }
}

pub struct VariantTask {
    sim: Arc<Sim>,
    key: String,
    value: usize,
    q: Option<Vec<f32>>,
    scales: Vec<f32>,
    axis: Option<usize>,
    qmin: f32,
    qmax: f32,
    bias_delta: Option<Vec<f32>>,
}

#[napi]
impl Task for VariantTask {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> Result<()> {
        let spec = VariantSpec { q: self.q.as_deref(), scales: &self.scales, axis: self.axis, qmin: self.qmin, qmax: self.qmax, bias_delta: self.bias_delta.take() };
        let (sim, key, value) = (&self.sim, std::mem::take(&mut self.key), self.value);
        guard(move || sim.add_variant(key, value, spec))
    }
    fn resolve(&mut self, _env: Env, _v: ()) -> Result<()> {
        Ok(())
    }
}

#[napi]
impl SimHandle {
    /// Builds the simulation plan of a (folded, float) plan JSON on the weights in `store`;
    /// `actSlots`: the value indices of the activation quantizers.
    #[napi(factory)]
    pub fn compile(store: &WeightStoreHandle, variants: &VariantStoreHandle, plan_json: String, act_slots: Vec<u32>) -> Result<Self> {
        let store = store.inner.clone();
        let variants = variants.inner.clone();
        guard(move || {
            let plan = PlanDef::from_json(&plan_json)?;
            let slots: Vec<usize> = act_slots.into_iter().map(|v| v as usize).collect();
            Ok(SimHandle { sim: Arc::new(Sim::new(plan, &store, &slots, variants)?) })
        })
    }

    #[napi]
    pub fn has_variant(&self, key: String) -> bool {
        self.sim.has_variant(&key)
    }

    /// Uploads weight variant `key` of constant `value` (off the JS thread): `q` the rounded
    /// integers (or null: round to nearest), `scales` one per channel of `axis` (-1: per
    /// tensor), `[qmin, qmax]` the integer range, `biasDelta` the bias correction of its node.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn add_variant(
        &self,
        key: String,
        value: u32,
        q: Option<Float32Array>,
        scales: Float32Array,
        axis: i32,
        qmin: f64,
        qmax: f64,
        bias_delta: Option<Float32Array>,
    ) -> AsyncTask<VariantTask> {
        AsyncTask::new(VariantTask {
            sim: self.sim.clone(),
            key,
            value: value as usize,
            q: q.map(|q| q.to_vec()),
            scales: scales.to_vec(),
            axis: (axis >= 0).then_some(axis as usize),
            qmin: qmin as f32,
            qmax: qmax as f32,
            bias_delta: bias_delta.map(|b| b.to_vec()),
        })
    }

    /// Runs the whole plan under `config` (off the JS thread); returns the outputs `want`.
    #[napi]
    pub fn run(&self, inputs: Vec<TensorIn>, config_in: SimConfigIn, want: Vec<u32>, cancel: Option<&CancelToken>) -> AsyncTask<SimRunTask> {
        AsyncTask::new(SimRunTask {
            sim: self.sim.clone(),
            inputs: Some(tensors(inputs)),
            config: config(config_in),
            want: want.into_iter().map(|v| v as usize).collect(),
            cancel: cancel.map(|c| c.flag.clone()),
        })
    }

    /// Phase 1 on one batch (off the JS thread): see [`Phase1Out`].
    #[napi]
    pub fn phase1(
        &self,
        inputs: Vec<TensorIn>,
        configs: Vec<SimConfigIn>,
        outs: Vec<u32>,
        float_outs: Option<Vec<TensorIn>>,
        cancel: Option<&CancelToken>,
    ) -> AsyncTask<Phase1Task> {
        AsyncTask::new(Phase1Task {
            sim: self.sim.clone(),
            inputs: Some(tensors(inputs)),
            configs: configs.into_iter().map(config).collect(),
            outs: outs.into_iter().map(|v| v as usize).collect(),
            float_outs: float_outs.map(tensors),
            cancel: cancel.map(|c| c.flag.clone()),
        })
    }
}
