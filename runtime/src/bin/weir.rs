//! The `weir` command-line tool; see `weir --help` and `docs/operations.md`.

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
