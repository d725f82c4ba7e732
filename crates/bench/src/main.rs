//! kanpa's benchmarks: each prints its figures as a table.
//!
//! `cargo run --release -p kanpa-bench -- ledger` posts balanced entries
//! through the ledger with 1, 8 and 32 concurrent writers on SQLite and on a
//! throw-away PostgreSQL cluster (durable settings), against the floor of
//! the same rows written by plain INSERTs on one connection, and times
//! balance reads at 10k and 1M postings.
//!
//! `cargo run --release -p kanpa-bench -- messaging` posts signed Stripe
//! events to a running server from 32 clients for 20 s, against the floor of
//! plain single-row inserts, times until every event is applied, and sends
//! emails through the file transport and through SMTP to a sink.
//!
//! `cargo run --release -p kanpa-bench -- settle` charges 10,000 committed
//! pledges against the fake Stripe (50 ms answers, 100 requests/s limit) at
//! 90 charges/s and compares the wall time with 10,000/90 s.
//!
//! `cargo run --release -p kanpa-bench -- renewal` delivers 100,000 signed
//! `invoice.paid` events to a `kanpa serve` process on the Stripe gateway
//! (against the fake), times until every one is posted with its receipt
//! queued, against the same plain-INSERT floor, and reports the server's
//! memory.
//! `cargo run --release -p kanpa-bench -- export` runs the real `kanpa
//! export journal --format csv` over 1,000,000 postings on each backend
//! against the database's own CSV dump of the same rows (psql `COPY … TO
//! STDOUT`, `sqlite3 -csv`): wall time, rows/s and peak memory.
//!
//! `cargo run --release -p kanpa-bench -- page` serves the demo campaign
//! page under `wrk -t2 -c64 -d20s` against nginx serving the same HTML as a
//! static file.

mod export;
mod ledger;
mod messaging;
mod page;
mod renewal;
mod settlement;
mod target;

use clap::{Parser, Subcommand};

/// The `kanpa` binary's allocator, so the server measured in this process
/// allocates as it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "kanpa-bench", about = "kanpa's benchmarks; each prints a table of figures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ledger posting throughput against a plain-INSERT floor, and balance read times.
    Ledger(ledger::Args),
    /// Stripe webhook intake over HTTP against a plain-INSERT floor, time to apply every event, email throughput.
    Messaging(messaging::Args),
    /// Settlement of 10,000 pledges against the fake Stripe (50 ms latency, 100 requests/s limit) at 90/s.
    Settle(settlement::Args),
    /// Month-end renewal: 100,000 invoice.paid events through a kanpa serve process until every one is posted.
    Renewal(renewal::Args),
    /// `kanpa export journal --format csv` over 1,000,000 postings against the database's own CSV dump.
    Export(export::Args),
    /// The campaign page under wrk against nginx serving the same rendered HTML.
    Page(page::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kanpa_server::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Ledger(args) => runtime.block_on(ledger::run(args)),
        Command::Messaging(args) => runtime.block_on(messaging::run(args)),
        Command::Settle(args) => runtime.block_on(settlement::run(args)),
        Command::Page(args) => runtime.block_on(page::run(args)),
        Command::Renewal(args) => runtime.block_on(renewal::run(args)),
        Command::Export(args) => runtime.block_on(export::run(args)),
    }
}
