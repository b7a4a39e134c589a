//! The desired-state spec: types, loading YAML with source locations, validation and the spec hash.

pub mod commands;
pub mod diff;
pub mod hash;
pub mod image_ref;
pub mod load;
pub mod order;
pub mod password;
pub mod quantity;
mod types;
pub mod validate;
pub mod window;

pub use image_ref::{ImageRef, ImageRefError};
pub use types::*;
