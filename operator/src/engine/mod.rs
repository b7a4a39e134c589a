//! The engine seam.
