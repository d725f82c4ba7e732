//! Everything that happens later or elsewhere: the job runner, the durable
//! inbox for Stripe events, the email outbox, emailed sign-in links and
//! outgoing webhooks.
//!
//! Owns the tables `jobs`, `stripe_events`, `stripe_object_versions`,
//! `outbox_emails`, `webhook_endpoints`, `webhook_deliveries`,
//! `webhook_delivery_attempts`, and, for [`signin`], `sign_in_tokens` and
//! `supporter_sessions`. Rows are written in the caller's
//! transaction, so a job, an event or an email exists exactly when the
//! change that caused it does.
//!
//! It does not verify Stripe signatures (the HTTP edge does), does not know
//! what any Stripe event means (handlers are registered by `server`), and
//! knows nothing of campaigns or patrons.

pub mod email;
pub mod hooks;
pub mod inbox;
pub mod intake;
pub mod jobs;
pub mod mailer;
pub mod outbox;
pub mod signin;
