//! kanpa's one integration test binary: scenarios that spawn the real server
//! (or open the real database) and act as a user, an operator or a client
//! would. Every scenario runs on SQLite and on PostgreSQL.

mod harness;

mod admin;
mod browser;
mod campaigns;
mod cli;
mod console_books;
mod exports;
mod inbox;
mod jobs;
mod ledger;
mod outgoing;
mod pages;
mod receipts;
mod reconcile;
mod renewals;
mod salon_timeline;
mod salons;
mod server;
