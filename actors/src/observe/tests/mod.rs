//! Tests of the control endpoint over a real TCP connection.

mod control_endpoint;
