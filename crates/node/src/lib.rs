//! napi-rs binding of mpq-core: conversions of options, results and errors only.
//! Every entry point catches Rust panics and turns them into JS errors.

use mpq_core::exec::BuildOptions;
use mpq_core::{Error as CoreError, Executor, PlanDef, Tensor, WeightStore};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// mimalloc reuses freed tensor buffers instead of returning them to the OS after each op,
/// which spares the page faults of a fresh mapping for every large output.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod data;
mod rounding;
mod sim;

/// Error codes, kept in step with `src/errors.ts`.
fn code_of(e: &CoreError) -> &'static str {
    match e {
        CoreError::UnsupportedOp { .. } => "MPQ_UNSUPPORTED_OP",
        CoreError::BadNode { .. } | CoreError::BadAttr { .. } => "MPQ_BAD_NODE",
        CoreError::InputShape { .. } => "MPQ_INPUT_SHAPE",
        CoreError::BadTensor { .. } | CoreError::MissingWeight(_) | CoreError::Plan(_) => "MPQ_BAD_PLAN",
        CoreError::TooLarge(_) => "MPQ_TOO_LARGE",
        CoreError::BadData(_) => "MPQ_BAD_INPUT",
        CoreError::Cancelled => "MPQ_ABORTED",
    }
}

/// The one conversion from core errors to JS errors: "CODE: message".
fn to_js(e: CoreError) -> Error {
    Error::new(Status::GenericFailure, format!("{}: {}", code_of(&e), e))
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs `f`, turning a panic into an `MPQ_INTERNAL` JS error (every entry point goes through this).
pub(crate) fn catch_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(Error::new(Status::GenericFailure, format!("MPQ_INTERNAL: internal error (Rust panic): {}", panic_msg(p)))),
    }
}

/// Runs `f`, turning a core error or a panic into a JS error.
pub(crate) fn guard<T>(f: impl FnOnce() -> mpq_core::Result<T>) -> Result<T> {
    catch_panics(|| f().map_err(to_js))
}

fn shape_usize(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

/// Sets the engine's size limits (bytes; 0 leaves one unchanged), see `mpq_core::limits`.
#[napi]
pub fn set_limits(max_tensor_bytes: f64, max_plan_bytes: f64) {
    mpq_core::limits::set(max_tensor_bytes as u64, max_plan_bytes as u64);
}

/// Weights shared by plans. Upload each once; plans refer to them by name.
#[napi]
pub struct WeightStoreHandle {
    inner: Arc<WeightStore>,
}

#[napi]
impl WeightStoreHandle {
    #[napi(constructor)]
    pub fn new() -> Self {
        WeightStoreHandle { inner: Arc::new(WeightStore::new()) }
    }

    #[napi]
    pub fn set(&self, name: String, shape: Vec<u32>, data: Float32Array) -> Result<()> {
        let shape = shape_usize(&shape);
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::new(
                Status::InvalidArg,
                format!("MPQ_BAD_PLAN: weight '{name}' has {} values, shape {shape:?} needs {n}", data.len()),
            ));
        }
        self.inner.insert(name, Tensor::new(shape, data.to_vec()));
        Ok(())
    }

    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.inner.len() as u32
    }
}

/// A cancellation flag that a running task polls between steps.
#[napi]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    pub fn new() -> Self {
        CancelToken { flag: Arc::new(AtomicBool::new(false)) }
    }
    #[napi]
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

/// A compiled plan: ops built, weights packed.
#[napi]
pub struct PlanHandle {
    exec: Arc<Executor>,
}

#[napi(object)]
pub struct TensorIn {
    pub shape: Vec<u32>,
    pub data: Float32Array,
}

#[napi(object)]
pub struct TensorOut {
    pub shape: Vec<u32>,
    pub data: Float32Array,
}

impl From<Tensor> for TensorOut {
    fn from(t: Tensor) -> Self {
        TensorOut { shape: t.shape.iter().map(|&d| d as u32).collect(), data: Float32Array::new(t.data) }
    }
}

pub struct RunTask {
    exec: Arc<Executor>,
    inputs: Option<Vec<Tensor>>,
    want: Option<Vec<usize>>,
    cancel: Option<Arc<AtomicBool>>,
}

#[napi]
impl Task for RunTask {
    type Output = Vec<Tensor>;
    type JsValue = Vec<TensorOut>;

    fn compute(&mut self) -> Result<Self::Output> {
        let inputs = self.inputs.take().unwrap_or_default();
        let exec = self.exec.clone();
        let cancel = self.cancel.clone();
        let want = self.want.take();
        guard(move || match want {
            Some(w) => exec.run_values(inputs, &w, cancel.as_deref()),
            None => exec.run(inputs, cancel.as_deref()),
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.into_iter().map(TensorOut::from).collect())
    }
}


pub struct ObserveTask {
    exec: Arc<Executor>,
    inputs: Option<Vec<Tensor>>,
    values: Vec<usize>,
    /// `None`: min/max per value. `Some((ranges, bins))`: histograms over the given ranges.
    hist: Option<(Vec<f64>, usize)>,
    cancel: Option<Arc<AtomicBool>>,
}

#[napi]
impl Task for ObserveTask {
    type Output = Vec<f64>;
    type JsValue = Float64Array;

    fn compute(&mut self) -> Result<Self::Output> {
        let inputs = self.inputs.take().unwrap_or_default();
        let exec = self.exec.clone();
        let values = self.values.clone();
        let hist = self.hist.clone();
        let cancel = self.cancel.clone();
        guard(move || {
            let slot: std::collections::HashMap<usize, usize> = values.iter().enumerate().map(|(i, &v)| (v, i)).collect();
            let n = values.len();
            match hist {
                None => {
                    let mut out = vec![0f64; 2 * n];
                    for i in 0..n {
                        out[2 * i] = f64::INFINITY;
                        out[2 * i + 1] = f64::NEG_INFINITY;
                    }
                    exec.run_observe(inputs, &[], &values, &mut |v, t| {
                        let i = slot[&v];
                        let (lo, hi) = mpq_core::stats::minmax(&t.data);
                        out[2 * i] = out[2 * i].min(lo as f64);
                        out[2 * i + 1] = out[2 * i + 1].max(hi as f64);
                    }, cancel.as_deref())?;
                    Ok(out)
                }
                Some((ranges, bins)) => {
                    if ranges.len() != 2 * n || bins == 0 {
                        return Err(CoreError::Plan(format!("histogram needs {} range bounds and bins > 0", 2 * n)));
                    }
                    let mut out = vec![0f64; n * bins];
                    exec.run_observe(inputs, &[], &values, &mut |v, t| {
                        let i = slot[&v];
                        mpq_core::stats::histogram(&t.data, ranges[2 * i] as f32, ranges[2 * i + 1] as f32, &mut out[i * bins..(i + 1) * bins]);
                    }, cancel.as_deref())?;
                    Ok(out)
                }
            }
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(Float64Array::new(output))
    }
}

#[napi]
impl PlanHandle {
    /// Builds a plan from its JSON (see `mpq_core::plan::PlanDef`) on the weights in `store`.
    /// `keep`: value indices that must stay readable (not fused away) for `run(..., want)`.
    #[napi(factory)]
    pub fn compile(store: &WeightStoreHandle, plan_json: String, keep: Option<Vec<u32>>, no_fusion: Option<bool>) -> Result<Self> {
        let store = store.inner.clone();
        guard(move || {
            let plan = PlanDef::from_json(&plan_json)?;
            let opts = BuildOptions {
                keep: keep.unwrap_or_default().into_iter().map(|v| v as usize).collect(),
                no_fusion: no_fusion.unwrap_or(false),
                no_fuse: Vec::new(),
            };
            Ok(PlanHandle { exec: Arc::new(Executor::with_options(plan, &store, &opts)?) })
        })
    }

    #[napi(getter)]
    pub fn num_steps(&self) -> u32 {
        self.exec.num_steps() as u32
    }

    /// Runs the plan and returns statistics of `values` (kept at compile time): min/max pairs,
    /// or, with `ranges` ([lo, hi] per value) and `bins`, histograms (values x bins).
    #[napi]
    pub fn observe(&self, inputs: Vec<TensorIn>, values: Vec<u32>, ranges: Option<Float64Array>, bins: Option<u32>, cancel: Option<&CancelToken>) -> AsyncTask<ObserveTask> {
        let inputs = inputs.into_iter().map(|t| Tensor { shape: shape_usize(&t.shape), data: t.data.to_vec() }).collect();
        AsyncTask::new(ObserveTask {
            exec: self.exec.clone(),
            inputs: Some(inputs),
            values: values.into_iter().map(|v| v as usize).collect(),
            hist: ranges.map(|r| (r.to_vec(), bins.unwrap_or(2048) as usize)),
            cancel: cancel.map(|c| c.flag.clone()),
        })
    }

    /// Runs the plan off the JS thread. `want`: value indices to return instead of the outputs.
    #[napi]
    pub fn run(&self, inputs: Vec<TensorIn>, want: Option<Vec<u32>>, cancel: Option<&CancelToken>) -> AsyncTask<RunTask> {
        let inputs = inputs.into_iter().map(|t| Tensor { shape: shape_usize(&t.shape), data: t.data.to_vec() }).collect();
        AsyncTask::new(RunTask {
            exec: self.exec.clone(),
            inputs: Some(inputs),
            want: want.map(|w| w.into_iter().map(|v| v as usize).collect()),
            cancel: cancel.map(|c| c.flag.clone()),
        })
    }
}

/// Op types the engine runs.
#[napi]
pub fn supported_ops() -> Vec<String> {
    mpq_core::ops::supported_ops().into_iter().map(String::from).collect()
}

/// The SIMD level the kernels dispatch to ("scalar", "avx2" or "avx512").
#[napi]
pub fn simd_level() -> String {
    mpq_core::kernels::simd_level().name().into()
}

/// The engine's code paths on this machine.
#[napi(object)]
pub struct EngineIsa {
    /// The level in force.
    pub level: String,
    /// The best level this CPU has.
    pub detected: String,
    /// Every level this CPU can run, from the baseline up.
    pub available: Vec<String>,
    /// The onnxruntime intra-op thread count whose GEMM blocking the engine mirrors.
    pub ort_threads: u32,
}

/// The engine's code paths on this machine.
#[napi]
pub fn engine_isa() -> EngineIsa {
    use mpq_core::kernels as k;
    EngineIsa {
        level: k::simd_level().name().into(),
        detected: k::detected_level().name().into(),
        available: k::available_levels().into_iter().map(|l| l.name().into()).collect(),
        ort_threads: k::mlas::ort_threads() as u32,
    }
}

/// Selects the kernels' level ("scalar", "avx2", "avx512"; clamped to what the CPU has) for
/// the following runs, as `MPQ_FORCE_ISA` does at start-up; returns the level in force.
/// Every level computes the same bits; this exists to test each path on one machine.
#[napi]
pub fn set_engine_isa(level: String) -> Result<String> {
    let l = mpq_core::kernels::SimdLevel::parse(&level)
        .ok_or_else(|| Error::new(Status::InvalidArg, format!("MPQ_USAGE: unknown engine level '{level}'; use scalar, avx2 or avx512")))?;
    Ok(mpq_core::kernels::set_simd_level(l).name().into())
}

/// Sets the onnxruntime intra-op thread count whose GEMM blocking the engine mirrors (as
/// `MPQ_ORT_THREADS` does at start-up).
#[napi]
pub fn set_ort_threads(n: u32) {
    mpq_core::kernels::mlas::set_ort_threads(n.max(1) as usize)
}

/// Sets the number of compute threads (call before the first run; later calls are ignored).
#[napi]
pub fn set_threads(n: u32) -> bool {
    rayon::ThreadPoolBuilder::new().num_threads(n.max(1) as usize).build_global().is_ok()
}

/// Number of compute threads in use.
#[napi]
pub fn num_threads() -> u32 {
    rayon::current_num_threads() as u32
}

/// Checks a weight-scale request; the core asserts the same (a panic would become MPQ_INTERNAL).
fn scales_args(len: usize, shape: &[u32], axis: u32, bits: u32, method: &str) -> Result<(Vec<usize>, bool)> {
    let shape = shape_usize(shape);
    let n: usize = shape.iter().product();
    let bad = |m: String| Error::new(Status::InvalidArg, format!("MPQ_BAD_INPUT: {m}"));
    if n != len {
        return Err(bad(format!("weight of shape {shape:?} needs {n} values, got {len}")));
    }
    if axis as usize >= shape.len() {
        return Err(bad(format!("channel axis {axis} out of range for a weight of rank {}", shape.len())));
    }
    if !(2..=16).contains(&bits) {
        return Err(bad(format!("weight bit-width must be 2..16, got {bits}")));
    }
    match method {
        "mse" => Ok((shape, true)),
        "minmax" => Ok((shape, false)),
        m => Err(bad(format!("weight range method must be 'minmax' or 'mse', got '{m}'"))),
    }
}

pub struct WeightScalesTask {
    data: Vec<f32>,
    shape: Vec<usize>,
    axis: usize,
    bits: u32,
    mse: bool,
}

#[napi]
impl Task for WeightScalesTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> Result<Self::Output> {
        let data = std::mem::take(&mut self.data);
        let (shape, axis, bits, mse) = (self.shape.clone(), self.axis, self.bits, self.mse);
        catch_panics(move || Ok(mpq_core::ranges::weight_scales(&data, &shape, axis, bits, mse)))
    }

    fn resolve(&mut self, _env: Env, v: Self::Output) -> Result<Self::JsValue> {
        Ok(Float32Array::new(v))
    }
}

/// Per-output-channel symmetric scales of a weight (`method`: "minmax" or "mse", see
/// `mpq_core::ranges`), computed off the JS thread.
#[napi]
pub fn weight_scales(data: Float32Array, shape: Vec<u32>, axis: u32, bits: u32, method: String) -> Result<AsyncTask<WeightScalesTask>> {
    let (shape, mse) = scales_args(data.len(), &shape, axis, bits, &method)?;
    Ok(AsyncTask::new(WeightScalesTask { data: data.to_vec(), shape, axis: axis as usize, bits, mse }))
}

/// The same as `weightScales`, on the calling thread (for callers that cannot wait).
#[napi]
pub fn weight_scales_sync(data: Float32Array, shape: Vec<u32>, axis: u32, bits: u32, method: String) -> Result<Float32Array> {
    let (shape, mse) = scales_args(data.len(), &shape, axis, bits, &method)?;
    catch_panics(|| Ok(Float32Array::new(mpq_core::ranges::weight_scales(&data, &shape, axis as usize, bits, mse))))
}
