//! Built-in checks.
