//! Password hashes: yescrypt hashing for `hash-password` and crypt(3) hash syntax checks.
//!
//! STUB: being written.
