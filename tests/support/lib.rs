//! What kanpa's tests and benchmarks run against instead of the outside
//! world: throw-away PostgreSQL clusters, a fake Stripe, an SMTP sink, and a
//! small WebDriver client for headless Chromium.
//! None of it is linked into the `kanpa` binary.

pub mod backends;
pub mod postgres;
pub mod smtp;
pub mod stripe;
pub mod webdriver;
