//! Spec hash (being written).
