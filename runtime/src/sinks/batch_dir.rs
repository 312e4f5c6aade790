//! Atomic per-batch output directories (being written).
