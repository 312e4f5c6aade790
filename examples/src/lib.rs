//! Helpers shared by the weir examples (`src/bin/*.rs`) and their tests: a text generator
//! that drops files into a directory the way a well-behaved producer does (write a temp file,
//! then rename), a local TCP server sending generated text, a reader of the batch directories `save_as_text_files` writes, and the
//! plumbing every example shares (a runtime, signals, stop conditions, fatal errors).

pub mod generator;
pub mod output;
pub mod run;
pub mod text_server;
