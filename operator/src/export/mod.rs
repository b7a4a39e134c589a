//! The way out: `Container` objects converted to other systems' manifests (pure; the CLI prints).

pub mod kubernetes;
