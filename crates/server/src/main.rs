use std::process::ExitCode;

use clap::Parser;
use kanpa_server::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    kanpa_server::install_crypto_provider();
    cli::run(Cli::parse()).await
}
