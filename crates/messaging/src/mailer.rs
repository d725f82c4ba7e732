//! Where rendered emails go: SMTP (production) or `.eml` files (local use).

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the server is down, busy or answered 4xx.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Retrying cannot help: the server answered 5xx for this message.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, message: &Message) -> Result<(), SendError>;

    /// A name for logs and `kanpa mail test`.
    fn describe(&self) -> String;
}

/// Writes each message as `<dir>/<message-id>.eml`. A resend overwrites the
/// same file, so a crash between writing and recording never yields two.
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>) -> FileMailer {
        FileMailer { dir: dir.into() }
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let id = message
            .headers()
            .get_raw("Message-ID")
            .unwrap_or("<unnamed>")
            .trim_matches(|c| c == '<' || c == '>')
            .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'), "_");
        let bytes = message.formatted();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{id}.eml.tmp"));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
        })
        .await
        .map_err(|e| SendError::Transient(e.to_string()))?
        .map_err(|e| SendError::Transient(format!("writing to {}: {e}", self.dir.display())))
    }

    fn describe(&self) -> String {
        format!("files under {}", self.dir.display())
    }
}

/// SMTP with a connection pool. The URL chooses the security:
/// `smtp://user:pass@host:587` (STARTTLS required), `smtps://host:465`
/// (TLS), `smtp://host:25?tls=none` (plaintext, for local relays).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
}

impl SmtpMailer {
    pub fn from_url(url: &str) -> Result<SmtpMailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("mail.smtp_url is not a usable SMTP URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        let host = url.split('@').next_back().unwrap_or(url).split(['/', '?']).next().unwrap_or("").to_owned();
        Ok(SmtpMailer { transport, host })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        match self.transport.send(message.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }

    fn describe(&self) -> String {
        format!("SMTP at {}", self.host)
    }
}
