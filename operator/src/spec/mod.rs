//! The desired-state spec: types, loading YAML with source locations, validation and the spec hash.

pub mod commands;
pub mod hash;
pub mod load;
pub mod password;
pub mod validate;
pub mod window;
mod types;

pub use types::*;
