//! Tests of the supervision machinery: every restart rule, on real actors, in paused time.

mod supervision;
