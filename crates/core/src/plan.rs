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
            bytes.push(limits::check_tensor(&what, &def.shape)? as u128 * 4);
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
        limits::check_total(&format!("the plan's live values{at}"), Some(peak.0))
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
