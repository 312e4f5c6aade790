//! The socket text receiver (being written).
