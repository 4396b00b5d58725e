//! The `rewrap` binary: everything lives in the library's `cli` module.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(rewrap::cli::main());
}
