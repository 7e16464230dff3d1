//! The `weft` command: run a node, manage identities, chaincode and the ledger, and run the
//! demo. Errors print as one sentence that says what to do, with a non-zero exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Allocations from 64 KiB up (encoded batches and blocks, RocksDB's memtable arenas) are
/// mapped on their own and returned to the system when freed. glibc otherwise raises this
/// threshold as such blocks are freed and serves them from its heaps, where a validator under
/// saturation kept freed memory: resident size grew about 2 MiB/s for as long as the load
/// lasted, with the live heap flat (issue 6, BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_blocks_when_freed() {
    const THRESHOLD: libc::c_int = 64 * 1024;
    // SAFETY: mallopt only sets a parameter of the allocator; it is called before any thread
    // is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return_large_blocks_when_freed();
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
