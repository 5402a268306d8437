//! TEMPORARY stand-in until the probe module lands.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
/// Hardware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// cpu
    pub cpu: u32,
}
