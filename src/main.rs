//! The `rewrap` binary: parses arguments, runs one command and maps its
//! outcome to an exit code. Everything the process owns lives here (the
//! command line, the allocator, the open-file limit, the progress bar); the
//! product is the library.

mod cli;

/// mimalloc: the rotation worker allocates many small short-lived objects
/// (paths, ARNs, contexts, audit lines) from several threads at once,
/// where glibc's allocator spent a fifth of the worker's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
