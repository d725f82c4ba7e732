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

/// Messages a mailer's default [`Mailer::send_many`] has in flight at once.
const IN_FLIGHT: usize = 4;

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, message: &Message) -> Result<(), SendError>;

    /// Sends several messages, each as [`Mailer::send`] would; what became
    /// of each, in order. By default a few are in flight at once.
    async fn send_many(&self, messages: &[Message]) -> Vec<Result<(), SendError>> {
        use futures::StreamExt;
        let mut sends = Vec::with_capacity(messages.len());
        for message in messages {
            sends.push(self.send(message));
        }
        futures::stream::iter(sends).buffered(IN_FLIGHT).collect().await
    }

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

/// The file name of a message: its Message-ID, kept to safe characters.
fn file_stem(message: &Message) -> String {
    message
        .headers()
        .get_raw("Message-ID")
        .unwrap_or("<unnamed>")
        .trim_matches(|c| c == '<' || c == '>')
        .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'), "_")
}

/// Writes a message beside its final name, then renames it there, so a
/// reader never sees half a message.
fn write_file(dir: &std::path::Path, stem: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{stem}.eml.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(format!("{stem}.eml")))
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let written = self.send_many(std::slice::from_ref(message)).await.pop();
        written.unwrap_or_else(|| Err(SendError::Transient("not written".into())))
    }

    /// Writes the whole batch in one blocking task: a hand-off to the
    /// blocking pool per batch, not per message.
    async fn send_many(&self, messages: &[Message]) -> Vec<Result<(), SendError>> {
        let files: Vec<(String, Vec<u8>)> = messages.iter().map(|m| (file_stem(m), m.formatted())).collect();
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || match std::fs::create_dir_all(&dir) {
            Ok(()) => files.iter().map(|(stem, bytes)| write_file(&dir, stem, bytes)).collect(),
            Err(e) => files.iter().map(|_| Err(std::io::Error::new(e.kind(), e.to_string()))).collect::<Vec<_>>(),
        })
        .await;
        match written {
            Ok(written) => written
                .into_iter()
                .map(|w| w.map_err(|e| SendError::Transient(format!("writing to {}: {e}", self.dir.display()))))
                .collect(),
            Err(e) => messages.iter().map(|_| Err(SendError::Transient(e.to_string()))).collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message::builder()
            .from("kanpa <noreply@kanpa.invalid>".parse().unwrap())
            .to("hanako@example.jp".parse().unwrap())
            .subject("領収書")
            .message_id(Some(format!("<{id}@kanpa.example>")))
            .body(String::from("本文"))
            .unwrap()
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_file_mailer_writes_a_batch_one_file_each_and_says_when_it_cannot() {
        let dir = std::env::temp_dir().join(format!("kanpa-mailer-{}", uuid::Uuid::new_v4()));
        let mailer = FileMailer::new(&dir);
        assert_eq!(mailer.send_many(&[message("a1"), message("b2")]).await, vec![Ok(()), Ok(())]);
        assert_eq!(names(&dir), ["a1_kanpa.example.eml", "b2_kanpa.example.eml"], "no temporary file left");
        let written = std::fs::read_to_string(dir.join("a1_kanpa.example.eml")).unwrap();
        assert!(written.contains("Message-ID: <a1@kanpa.example>"));
        // Sent again, the same message replaces its file.
        assert_eq!(mailer.send(&message("a1")).await, Ok(()));
        assert_eq!(names(&dir).len(), 2);
        // A file where the directory should be: every message of the batch
        // is reported as worth retrying, none as sent.
        let blocked = FileMailer::new(dir.join("a1_kanpa.example.eml"));
        let sent = blocked.send_many(&[message("c3"), message("d4")]).await;
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|s| matches!(s, Err(SendError::Transient(_)))), "{sent:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
