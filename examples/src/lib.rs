//! Helpers shared by the weir examples (`src/bin/*.rs`) and their tests: a text generator
//! that drops files into a directory the way a well-behaved producer does (write a temp file,
//! then rename), a replayable directory source, an atomic batch-directory sink, a reader of
//! that sink's output, and the command-line plumbing every example shares.
//!
//! The directory source and the sink here are stand-ins for `StreamingContext::
//! text_file_stream` and `DStream::save_as_text_files`, which are being added to the runtime;
//! the examples switch to those when they land, and keep the output format.

pub mod batch_dir;
pub mod dir_source;
pub mod generator;
pub mod run;
