//! Configuration, loaded once at start in three layers:
//! `config/default.toml` → `config/$KANPA_ENV.toml` → `KANPA__SECTION__KEY`
//! environment variables. The files are compiled into the binary so `kanpa
//! serve` needs nothing on disk; a file of the same name under `./config/`
//! replaces the built-in one. A bad value stops start-up naming its key.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");
const PRODUCTION_TOML: &str = include_str!("../../../config/production.toml");
const TEST_TOML: &str = include_str!("../../../config/test.toml");

/// A value that must never appear in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// "development", "production", "test": from `KANPA_ENV`.
    #[serde(default = "default_env")]
    pub env: String,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub jobs: JobsConfig,
    pub webhooks: WebhooksConfig,
    pub payments: PaymentsConfig,
    pub campaigns: CampaignsConfig,
    pub stripe: StripeConfig,
    pub mail: MailConfig,
    /// Account mapping for the freee, Money Forward and Yayoi exports.
    #[serde(default)]
    pub exports: ExportsConfig,
    /// The scheduled reconciliation with Stripe.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
}

/// `[reconcile]`: how often the workers reconcile with Stripe (with the
/// Stripe gateway only); 0 turns it off.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    pub every_hours: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig { every_hours: 24 }
    }
}

impl Config {
    /// How often to reconcile with Stripe, if at all.
    pub fn reconcile_every(&self) -> Option<Duration> {
        (self.payments.gateway == GatewayKind::Stripe && self.reconcile.every_hours > 0)
            .then(|| Duration::from_secs(self.reconcile.every_hours * 3600))
    }
}

/// `[exports]`: which account of an organisation's own chart each kanpa
/// account lands in, for the Japanese accounting products' journal imports.
/// Keys are kanpa account codes or code prefixes ending in `*`:
///
/// ```toml
/// [exports.accounts]
/// "stripe-balance:*" = { account = "預け金", sub = "Stripe" }
/// "fund:*" = { account = "受取寄付金", tax = "対象外" }
/// [exports.orgs.iryo.accounts]
/// "bank:JPY" = { account = "普通預金", sub = "みずほ" }
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Rules for every organisation.
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, kanpa_ledger::export::MappedAccount>,
    /// Rules for one organisation (by slug), over those for all.
    #[serde(default)]
    pub orgs: std::collections::BTreeMap<String, OrgExportsConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgExportsConfig {
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, kanpa_ledger::export::MappedAccount>,
}

impl ExportsConfig {
    /// The export options: the rules for all, and per organisation those
    /// layered with its own.
    pub fn options(&self, bom: bool) -> kanpa_ledger::export::Options {
        use kanpa_ledger::export::Mapping;
        let general = || self.accounts.iter().map(|(k, v)| (k.clone(), v.clone()));
        let org_mappings = self
            .orgs
            .iter()
            .map(|(slug, org)| {
                let rules = general().chain(org.accounts.iter().map(|(k, v)| (k.clone(), v.clone())));
                (slug.clone(), Mapping::new(rules))
            })
            .collect();
        kanpa_ledger::export::Options { bom, mapping: Mapping::new(general()), org_mappings }
    }
}

fn default_env() -> String {
    "development".to_owned()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub base_url: String,
    pub secure_cookies: bool,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// May carry a password, so it is a secret.
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub concurrency: usize,
    pub batch: i64,
    pub lease_secs: u64,
    pub poll_interval_ms: u64,
    pub backoff_scale: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub allow_http_loopback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    Sandbox,
    Stripe,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub gateway: GatewayKind,
    pub charge_rate: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignsConfig {
    pub max_pledge: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    pub secret_key: Secret,
    /// Comma-separated signing secrets; any one of them may sign an event.
    pub webhook_secrets: Secret,
    pub api_base: String,
}

impl StripeConfig {
    pub fn webhook_secrets(&self) -> Vec<String> {
        self.webhook_secrets.expose().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    File,
    Smtp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub file_dir: String,
    /// May carry credentials.
    pub smtp_url: Secret,
    pub from: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: unknown KANPA_ENV {0:?} (no config/{0}.toml)")]
    UnknownEnv(String),
    #[error("configuration: {key}: {reason}")]
    Refused { key: &'static str, reason: String },
}

/// Overrides from the command line, applied above the environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
}

impl Config {
    /// Loads the configuration for `KANPA_ENV` (default "development").
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let env = std::env::var("KANPA_ENV").unwrap_or_else(|_| default_env());
        Config::load_env(&env, overrides)
    }

    pub fn load_env(env: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        let on_disk = Path::new("config").join(format!("{env}.toml"));
        if on_disk.is_file() {
            figment = figment.merge(Toml::file(on_disk));
        } else {
            match env {
                "production" => figment = figment.merge(Toml::string(PRODUCTION_TOML)),
                "test" => figment = figment.merge(Toml::string(TEST_TOML)),
                "development" => {}
                other => return Err(ConfigError::UnknownEnv(other.to_owned())),
            }
        }
        figment = figment.merge(Env::prefixed("KANPA__").split("__")).merge(Serialized::default("env", env));
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind));
        }
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that are well-formed but wrong together.
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.server.base_url.starts_with("http://") && !self.server.base_url.starts_with("https://") {
            return Err(ConfigError::Refused {
                key: "server.base_url",
                reason: "must be an absolute http:// or https:// URL".into(),
            });
        }
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Refused {
                key: "mail.from",
                reason: "must be an address like \"Name <noreply@example.jp>\"".into(),
            });
        }
        if !(self.jobs.backoff_scale > 0.0 && self.jobs.backoff_scale <= 100.0) {
            return Err(ConfigError::Refused { key: "jobs.backoff_scale", reason: "must be above 0".into() });
        }
        if !(1..=kanpa_campaigns::settle::MAX_RATE).contains(&self.payments.charge_rate) {
            return Err(ConfigError::Refused {
                key: "payments.charge_rate",
                reason: format!(
                    "must be between 1 and {} charges per second (Stripe allows about 100 requests per second)",
                    kanpa_campaigns::settle::MAX_RATE
                ),
            });
        }
        if self.campaigns.max_pledge < 50 {
            return Err(ConfigError::Refused { key: "campaigns.max_pledge", reason: "must be at least 50".into() });
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Refused { key: "database.max_connections", reason: "must be at least 1".into() });
        }
        if self.env == "production" {
            if self.payments.gateway == GatewayKind::Sandbox {
                return Err(ConfigError::Refused {
                    key: "payments.gateway",
                    reason: "the sandbox gateway takes no real money and is refused in production".into(),
                });
            }
            if self.mail.transport == MailTransport::File {
                return Err(ConfigError::Refused {
                    key: "mail.transport",
                    reason: "the file mailer sends nothing and is refused in production".into(),
                });
            }
        }
        if self.payments.gateway == GatewayKind::Stripe {
            if self.stripe.secret_key.expose().is_empty() {
                return Err(ConfigError::Refused {
                    key: "stripe.secret_key",
                    reason: "required when payments.gateway = \"stripe\"".into(),
                });
            }
            if self.stripe.webhook_secrets().is_empty() {
                return Err(ConfigError::Refused {
                    key: "stripe.webhook_secrets",
                    reason: "required when payments.gateway = \"stripe\"".into(),
                });
            }
        }
        if self.mail.transport == MailTransport::Smtp && self.mail.smtp_url.expose().is_empty() {
            return Err(ConfigError::Refused {
                key: "mail.smtp_url",
                reason: "required when mail.transport = \"smtp\"".into(),
            });
        }
        Ok(())
    }

    /// What campaign flows need to know about this server.
    pub fn site(&self) -> kanpa_campaigns::Site {
        let base_url = self.server.base_url.trim_end_matches('/').to_owned();
        kanpa_campaigns::Site { mail_domain: self.host(), base_url, max_pledge: self.campaigns.max_pledge }
    }

    pub fn salon_site(&self) -> kanpa_patrons::Site {
        let base_url = self.server.base_url.trim_end_matches('/').to_owned();
        kanpa_patrons::Site { mail_domain: self.host(), base_url }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }

    /// The host of `server.base_url`, used as the domain of Message-IDs.
    pub fn host(&self) -> String {
        let rest = self.server.base_url.split("://").nth(1).unwrap_or("localhost");
        let authority = rest.split('/').next().unwrap_or("localhost");
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if host.is_empty() { "localhost".to_owned() } else { host.to_owned() }
    }

    pub fn db_options(&self) -> kanpa_ledger::DbOptions {
        kanpa_ledger::DbOptions {
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_secs(self.database.acquire_timeout_secs),
        }
    }
}

/// Names every bad key in the dotted, lower-case form the files use, with
/// where the value came from ("KANPA__SERVER__BIND", "config/production.toml").
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            let key = if key.is_empty() { "(top level)".to_owned() } else { key };
            if source.is_empty() { format!("{key}: {}", e.kind) } else { format!("{key}: {} (from {source})", e.kind) }
        })
        .collect();
    ConfigError::Invalid(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_nothing_on_disk() {
        let config = Config::load_env("development", &Overrides::default()).unwrap();
        assert_eq!(config.server.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.database.url.expose(), "sqlite://data/kanpa.db");
        assert_eq!(config.payments.gateway, GatewayKind::Sandbox);
    }

    #[test]
    fn production_needs_real_stripe_keys_and_names_the_key() {
        let err = Config::load_env("production", &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("stripe.secret_key"), "{err}");
    }

    #[test]
    fn production_refuses_the_sandbox_and_the_file_mailer() {
        let mut config = Config::load_env("development", &Overrides::default()).unwrap();
        config.env = "production".into();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("payments.gateway"), "{err}");
        config.payments.gateway = GatewayKind::Stripe;
        config.stripe.secret_key = Secret::new("sk_test_x");
        config.stripe.webhook_secrets = Secret::new("whsec_a, whsec_b");
        assert_eq!(config.stripe.webhook_secrets(), ["whsec_a", "whsec_b"]);
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("mail.transport"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://u:hunter2@h/db");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn unknown_environments_are_refused() {
        assert!(matches!(Config::load_env("staging-typo", &Overrides::default()), Err(ConfigError::UnknownEnv(_))));
    }
}
