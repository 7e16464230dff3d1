//! The `weft` command: run a node, manage identities, chaincode and the ledger, and run the
//! demo. Errors print as one sentence that says what to do, with a non-zero exit code.

mod cli;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: a node allocates and frees small buffers for every
/// message and transaction on several threads, and glibc's malloc spent about 16% of the
/// cluster's CPU in `weft bench` (issue 6; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
