//! Listing a module's parameters (path, owning module type, shape) without materialising them.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bool, Int, Tensor};

/// One float parameter of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Dotted path from the module root (`layers.0.attn.qkv.weight`).
    pub path: String,
    /// Type name of the module that owns the parameter (`Linear`, `LayerNorm`, ...).
    pub module: String,
    /// Shape, read lazily (an uninitialised parameter is not allocated).
    pub shape: Vec<usize>,
}

#[derive(Default)]
struct SpecCollector {
    path: Vec<String>,
    containers: Vec<String>,
    out: Vec<ParamSpec>,
}

impl SpecCollector {
    fn owner(&self) -> String {
        self.containers
            .iter()
            .rev()
            .find_map(|c| {
                c.strip_prefix("Struct:")
                    .or_else(|| c.strip_prefix("Enum:"))
            })
            .unwrap_or("")
            .to_string()
    }
}

impl ModuleVisitor for SpecCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamSpec {
            path: self.path.join("."),
            module: self.owner(),
            shape: param.lazy_shape().to_vec(),
        });
    }

    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, Int>>) {}

    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, Bool>>) {}
}

/// Every float parameter of `module`, in visiting order, without materialising any of them.
pub fn param_specs<M: Module>(module: &M) -> Vec<ParamSpec> {
    let mut collector = SpecCollector::default();
    module.visit(&mut collector);
    collector.out
}
