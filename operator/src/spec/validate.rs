//! Schema (generated JSON Schema, jsonschema crate) and semantic validation.
//!
//! STUB: being written.
