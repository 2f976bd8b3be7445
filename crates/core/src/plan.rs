use crate::attrs::AttrValue;
use crate::error::{Error, Result};
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
        Ok(())
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
