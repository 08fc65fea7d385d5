//! Weight loading: reading safetensors and torch checkpoints, the official key rules, layout
//! transforms (Linear transposition, weight-norm fusion, row permutations), load reports and
//! structure comparison with the parameter manifests.

mod layout;
mod load;
mod params;
mod state_dict;

pub use layout::{Layout, Source, Transform, module_types};
pub use load::{
    AppliedWeight, Component, LoadReport, StructureDiff, WeightSource, compare_with_manifest,
    fuse_weight_norm, fused_weight_norm_key, load_module, official_names, read_manifest,
};
pub use params::{ParamSpec, param_specs};
pub use state_dict::{
    NESTED_STATE_DICT_KEYS, StateDict, StoredDType, StoredTensor, WeightBytes, WeightFormat,
    resolve_official_keys,
};
