use std::process::ExitCode;

use clap::Parser;
use kanpa_server::cli::{self, Cli};

/// mimalloc: the webhook path allocates heavily (async-stripe builds each
/// event's full object tree), and glibc's malloc was a tenth of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    kanpa_server::install_crypto_provider();
    cli::run(Cli::parse()).await
}
