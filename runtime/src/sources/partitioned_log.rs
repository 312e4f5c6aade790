//! The file-backed partitioned log (being written).
