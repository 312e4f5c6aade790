//! Helpers shared by the weir examples (`src/bin/*.rs`) and their tests: a text generator
//! that drops files into a directory the way a well-behaved producer does (write a temp file,
//! then rename), a reader of the batch directories `save_as_text_files` writes, and the
//! plumbing every example shares (a runtime, signals, stop conditions, fatal errors).

pub mod generator;
pub mod output;
pub mod run;
