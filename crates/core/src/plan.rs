use crate::attrs::AttrValue;
use crate::error::{Error, Result};
use crate::limits;
use crate::tensor::Tensor;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Element type a value had in the ONNX graph. Data is always `f32`; ops that behave
/// differently on integers (Div, Cast) read this.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    Float,
    Int,
    Bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ValueDef {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(default)]
    pub dtype: DType,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NodeDef {
    pub op: String,
    pub name: String,
    /// Value indices; `None` for an omitted optional input.
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    #[serde(default)]
    pub attrs: HashMap<String, AttrValue>,
    /// Opset of the node's domain, for ops whose semantics changed between opsets.
    #[serde(default)]
    pub opset: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConstDef {
    pub value: usize,
    /// Key in the [`WeightStore`].
    pub weight: String,
    /// Computed by the plan's constant folding rather than an initializer (or Constant node)
    /// of the model: onnxruntime (graph optimizations off) computes it at run time.
    #[serde(default)]
    pub folded: bool,
}

/// A graph lowered to static shapes, in topological order.
#[derive(Clone, Debug, Deserialize)]
pub struct PlanDef {
    pub values: Vec<ValueDef>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub constants: Vec<ConstDef>,
    pub nodes: Vec<NodeDef>,
}

impl PlanDef {
    pub fn from_json(s: &str) -> Result<Self> {
        let p: PlanDef = serde_json::from_str(s).map_err(|e| Error::Plan(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Structural checks so that a bad plan is an error, never an index panic.
    pub fn validate(&self) -> Result<()> {
        let n = self.values.len();
        let chk = |i: usize, what: &str| {
            if i >= n {
                Err(Error::Plan(format!("{what} refers to value {i}, but there are {n} values")))
            } else {
                Ok(())
            }
        };
        let mut defined = vec![false; n];
        for &i in &self.inputs {
            chk(i, "graph input")?;
            defined[i] = true;
        }
        for c in &self.constants {
            chk(c.value, "constant")?;
            defined[c.value] = true;
        }
        for node in &self.nodes {
            for i in node.inputs.iter().flatten() {
                chk(*i, &format!("node '{}'", node.name))?;
                if !defined[*i] {
                    return Err(Error::Plan(format!(
                        "node '{}' reads '{}' before it is computed (nodes must be in topological order)",
                        node.name, self.values[*i].name
                    )));
                }
            }
            for &o in &node.outputs {
                chk(o, &format!("node '{}'", node.name))?;
                if defined[o] {
                    return Err(Error::Plan(format!("value '{}' is defined twice", self.values[o].name)));
                }
                defined[o] = true;
            }
        }
        for &o in &self.outputs {
            chk(o, "graph output")?;
            if !defined[o] {
                return Err(Error::Plan(format!("graph output '{}' is never computed", self.values[o].name)));
            }
        }
        self.check_memory()
    }

    /// Checks every value against the per-tensor limit and the plan's peak of live values
    /// (constants, inputs and intermediates until their last use, in node order) against the
    /// plan limit, before anything is allocated.
    pub fn check_memory(&self) -> Result<()> {
        self.check_memory_max(limits::max_tensor_bytes(), limits::max_plan_bytes())
    }

    /// [`Self::check_memory`] against explicit limits.
    pub fn check_memory_max(&self, max_tensor: u64, max_plan: u64) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.values.len());
        let mut producer: Vec<Option<usize>> = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                producer[o] = Some(i);
            }
        }
        for (v, def) in self.values.iter().enumerate() {
            let what = match producer[v] {
                Some(i) => format!("node '{}' ({}), output '{}'", self.nodes[i].name, self.nodes[i].op, def.name),
                None => format!("value '{}'", def.name),
            };
            bytes.push(limits::check_tensor_max(&what, &def.shape, max_tensor)? as u128 * 4);
        }
        let mut last_use = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                last_use[*v] = Some(i);
            }
        }
        let mut keep = vec![false; self.values.len()];
        for &v in self.outputs.iter().chain(self.constants.iter().map(|c| &c.value)) {
            keep[v] = true;
        }
        let mut live: u128 = self.constants.iter().map(|c| bytes[c.value]).sum::<u128>() + self.inputs.iter().map(|&v| bytes[v]).sum::<u128>();
        let mut peak = (live, None);
        for (i, n) in self.nodes.iter().enumerate() {
            live += n.outputs.iter().map(|&o| bytes[o]).sum::<u128>();
            if live > peak.0 {
                peak = (live, Some(i));
            }
            for v in n.inputs.iter().flatten() {
                if last_use[*v] == Some(i) && !keep[*v] {
                    live -= bytes[*v];
                    bytes[*v] = 0; // read twice by one node: freed once
                }
            }
        }
        let at = peak.1.map_or(String::new(), |i| format!(" (at node '{}', {})", self.nodes[i].name, self.nodes[i].op));
        limits::check_total_max(&format!("the plan's live values{at}"), Some(peak.0), max_plan)
    }
}

/// Weights by name, uploaded once and shared by every plan built on them.
#[derive(Default)]
pub struct WeightStore {
    map: RwLock<HashMap<String, Arc<Tensor>>>,
}

impl WeightStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&self, name: String, t: Tensor) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).insert(name, Arc::new(t));
    }
    pub fn get(&self, name: &str) -> Result<Arc<Tensor>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingWeight(name.to_string()))
    }
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(shape: Vec<usize>) -> PlanDef {
        // x -> Relu -> r -> Neg -> y
        let v = |name: &str| ValueDef { name: name.into(), shape: shape.clone(), dtype: DType::Float };
        let node = |op: &str, i: usize, o: usize| NodeDef { op: op.into(), name: format!("{op}_{i}"), inputs: vec![Some(i)], outputs: vec![o], attrs: HashMap::new(), opset: 13 };
        PlanDef { values: vec![v("x"), v("r"), v("y")], inputs: vec![0], outputs: vec![2], constants: vec![], nodes: vec![node("Relu", 0, 1), node("Neg", 1, 2)] }
    }

    #[test]
    fn a_value_over_the_tensor_limit_is_refused_naming_its_node() {
        let e = chain(vec![1 << 20, 1 << 20]).check_memory_max(2 << 30, 8 << 30).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::TooLarge(_)));
        assert!(m.contains("value 'x'") && m.contains("4.0 TiB"), "{m}");
        // products that overflow 64 bits are errors too, not wrapped sizes
        let e = chain(vec![usize::MAX, usize::MAX]).check_memory_max(2 << 30, 8 << 30).unwrap_err();
        assert!(e.to_string().contains("more than 2^128 bytes") || e.to_string().contains("needs"), "{e}");
    }

    #[test]
    fn the_peak_of_live_values_is_checked_against_the_plan_limit() {
        // 16 KiB per value; x is freed after Relu, so two values are live at once
        let p = chain(vec![64, 64]);
        assert!(p.check_memory_max(1 << 20, 32 << 10).is_ok());
        let m = p.check_memory_max(1 << 20, 24 << 10).unwrap_err().to_string();
        assert!(m.contains("at node 'Relu_0'") && m.contains("32.0 KiB"), "{m}");
    }
}
