//! The background workers of a `kanpa` process: which job kinds exist and
//! what handles them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kanpa_ledger::Db;
use kanpa_messaging::hooks::{self, Deliver};
use kanpa_messaging::inbox::{self, EventHandlers, ProcessEvent};
use kanpa_messaging::jobs::{Registry, WorkerOptions, Workers};
use kanpa_messaging::mailer::{FileMailer, Mailer, SmtpMailer};
use kanpa_messaging::outbox::{self, SendEmail, SenderSettings};

use kanpa_campaigns::settle::Settler;
use kanpa_payments::PaymentGateway;
use kanpa_payments::sandbox::Sandbox;
use kanpa_payments::stripe_api;
use kanpa_payments::stripe_gateway::StripeGateway;

use crate::config::{Config, GatewayKind, MailTransport};

/// What a caller (the binary, or a test) plugs into the workers.
#[derive(Clone, Default)]
pub struct Extras {
    /// Stripe event handlers by type; later issues register the domain ones.
    pub event_handlers: EventHandlers,
    /// Replaces the configured mailer.
    pub mailer: Option<Arc<dyn Mailer>>,
}

/// The mailer `mail.transport` selects.
pub fn mailer(config: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match config.mail.transport {
        MailTransport::File => Arc::new(FileMailer::new(&config.mail.file_dir)),
        MailTransport::Smtp => Arc::new(
            SmtpMailer::from_url(config.mail.smtp_url.expose()).map_err(anyhow::Error::msg).context("mail.smtp_url")?,
        ),
    })
}

/// The payment gateway `payments.gateway` selects.
pub fn gateway(config: &Config, db: &Db) -> anyhow::Result<Arc<dyn PaymentGateway>> {
    Ok(match config.payments.gateway {
        GatewayKind::Sandbox => Arc::new(Sandbox::new(db.clone(), config.site().base_url)),
        GatewayKind::Stripe => {
            let client = stripe_api::client(config.stripe.secret_key.expose(), &config.stripe.api_base)
                .context("stripe.secret_key / stripe.api_base")?;
            Arc::new(StripeGateway::new(client))
        }
    })
}

/// The settlement runner, shared by its jobs and `kanpa campaign settle`.
pub fn settler(config: &Config, db: Db, gateway: Arc<dyn PaymentGateway>) -> Arc<Settler> {
    Arc::new(Settler { db, gateway, site: config.site(), rate: config.payments.charge_rate })
}

/// Builds the worker pool with every job kind registered.
pub fn build(config: &Config, db: Db, extras: Extras) -> anyhow::Result<Workers> {
    let gateway = gateway(config, &db)?;
    let mailer = match extras.mailer {
        Some(mailer) => mailer,
        None => mailer(config)?,
    };
    let settings =
        SenderSettings { from: config.mail.from.parse().context("mail.from")?, site_name: "kanpa".to_owned() };
    let mut registry = Registry::default();
    let mut handlers = EventHandlers::default();
    kanpa_campaigns::events::register(&mut handlers, config.site());
    kanpa_patrons::events::register(&mut handlers, &mut registry, config.salon_site(), gateway.clone());
    // Handlers a caller plugs in take precedence.
    handlers.extend(extras.event_handlers);
    registry.register(inbox::JOB_KIND, Arc::new(ProcessEvent { handlers }));
    // A settlement slice stays well inside its job's lease.
    let slice = Duration::from_secs(config.jobs.lease_secs).mul_f64(0.4);
    kanpa_campaigns::settle::register(&mut registry, settler(config, db.clone(), gateway), slice);
    if let Some(every) = config.reconcile_every() {
        let source = crate::reconcile::source(config, &db).context("stripe.secret_key / stripe.api_base")?;
        registry.register(crate::reconcile::JOB_KIND, Arc::new(crate::reconcile::ReconcileJob { source, every }));
    }
    registry.register(outbox::JOB_KIND, Arc::new(SendEmail { mailer, settings }));
    registry.register(hooks::JOB_KIND, Arc::new(Deliver::new()));
    let options = WorkerOptions {
        name: format!("{}-{}", hostname(), std::process::id()),
        concurrency: config.jobs.concurrency,
        lease: Duration::from_secs(config.jobs.lease_secs),
        poll_interval: Duration::from_millis(config.jobs.poll_interval_ms),
        backoff_scale: config.jobs.backoff_scale,
        batch: config.jobs.batch,
    };
    Ok(Workers::new(db, registry, options))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "kanpa".to_owned())
}
