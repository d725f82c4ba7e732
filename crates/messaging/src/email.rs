//! Emails as values: addresses, the templates we send, and rendering them
//! into a MIME message with plain-text and HTML parts.
//!
//! Nothing here sends; see `mailer` and `outbox`.

use askama::Template;
use kanpa_ledger::Locale;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};

/// A syntactically plausible email address: one `@`, no spaces or control
/// characters, at most 254 bytes. Whether it exists is the SMTP server's call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("not an email address")]
    InvalidAddress,
    #[error("names and subjects may not contain line breaks or control characters")]
    ControlCharacters,
    #[error("the {0} template could not be rendered: {1}")]
    Render(&'static str, String),
    #[error("the message could not be built: {0}")]
    Build(String),
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<EmailAddress, EmailError> {
        let address = input.trim();
        let valid = address.len() <= 254
            && address.split('@').count() == 2
            && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
            && address.parse::<lettre::Address>().is_ok();
        if valid { Ok(EmailAddress(address.to_owned())) } else { Err(EmailError::InvalidAddress) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(a: EmailAddress) -> String {
        a.0
    }
}

/// Refuses CR, LF and other control characters in text that becomes a
/// header (names, subjects): they are how header injection starts.
pub fn header_safe(text: &str) -> Result<&str, EmailError> {
    if text.chars().any(char::is_control) { Err(EmailError::ControlCharacters) } else { Ok(text) }
}

/// Every email kanpa sends, with the data it needs. Stored as JSON in the
/// outbox row (`template` + `data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", content = "data", rename_all = "snake_case")]
pub enum EmailTemplate {
    /// A single-use sign-in link.
    SignInLink { link: String, expires_in_minutes: u32 },
    /// `kanpa mail test`.
    TestMessage { sent_from: String },
}

impl EmailTemplate {
    pub fn name(&self) -> &'static str {
        match self {
            EmailTemplate::SignInLink { .. } => "sign_in_link",
            EmailTemplate::TestMessage { .. } => "test_message",
        }
    }

    pub fn subject(&self, locale: Locale, site_name: &str) -> String {
        match (self, locale) {
            (EmailTemplate::SignInLink { .. }, Locale::Ja) => format!("{site_name} サインイン用リンク"),
            (EmailTemplate::SignInLink { .. }, Locale::En) => format!("Your {site_name} sign-in link"),
            (EmailTemplate::TestMessage { .. }, Locale::Ja) => format!("{site_name} テストメール"),
            (EmailTemplate::TestMessage { .. }, Locale::En) => format!("{site_name} test message"),
        }
    }
}

macro_rules! email_templates {
    ($($name:ident, $text:ident: $text_path:literal, $html:ident: $html_path:literal { $($field:ident: $ty:ty),* };)*) => {$(
        #[derive(Template)]
        #[template(path = $text_path)]
        struct $text<'a> { lang: &'a str, site_name: &'a str, $($field: $ty),* }

        #[derive(Template)]
        #[template(path = $html_path)]
        struct $html<'a> { lang: &'a str, site_name: &'a str, subject: &'a str, $($field: $ty),* }
    )*};
}

email_templates! {
    SignIn, SignInText: "email/sign_in_link.txt", SignInHtml: "email/sign_in_link.html" { link: &'a str, expires_in_minutes: u32 };
    Test, TestText: "email/test_message.txt", TestHtml: "email/test_message.html" { sent_from: &'a str };
}

/// A rendered email: subject and both bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub fn render(template: &EmailTemplate, locale: Locale, site_name: &str) -> Result<Rendered, EmailError> {
    let subject = template.subject(locale, site_name).replace(|c: char| c.is_control(), " ");
    let lang = locale.as_str();
    let err = |e: askama::Error| EmailError::Render(template.name(), e.to_string());
    let (text, html) = match template {
        EmailTemplate::SignInLink { link, expires_in_minutes } => (
            SignInText { lang, site_name, link, expires_in_minutes: *expires_in_minutes }.render().map_err(err)?,
            SignInHtml { lang, site_name, subject: &subject, link, expires_in_minutes: *expires_in_minutes }
                .render()
                .map_err(err)?,
        ),
        EmailTemplate::TestMessage { sent_from } => (
            TestText { lang, site_name, sent_from }.render().map_err(err)?,
            TestHtml { lang, site_name, subject: &subject, sent_from }.render().map_err(err)?,
        ),
    };
    Ok(Rendered { subject, text, html })
}

/// The stable Message-ID of an outbox row: derived from its idempotency
/// key, so a resend after a crash carries the same id and can be recognised.
pub fn message_id(idempotency_key: &str, domain: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("<kanpa.{}@{}>", hex::encode(&digest[..16]), domain)
}

/// Builds the MIME message. The subject is RFC 2047-encoded by lettre when
/// it is not ASCII; names are refused if they carry control characters.
pub fn build_message(
    from: &Mailbox,
    to: &EmailAddress,
    to_name: Option<&str>,
    message_id: &str,
    rendered: &Rendered,
) -> Result<Message, EmailError> {
    let name = to_name.map(header_safe).transpose()?.map(str::to_owned);
    let address = to.as_str().parse::<lettre::Address>().map_err(|_| EmailError::InvalidAddress)?;
    header_safe(&rendered.subject)?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(name, address))
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(rendered.text.clone()))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(rendered.html.clone())),
        )
        .map_err(|e| EmailError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(EmailAddress::parse("hanako@example.jp").is_ok());
        for bad in ["", "no-at", "a@b@c", "a b@example.jp", "x@example.jp\r\nBcc: y@example.jp", "<a@b.jp>"] {
            assert_eq!(EmailAddress::parse(bad), Err(EmailError::InvalidAddress), "{bad:?}");
        }
    }

    #[test]
    fn both_languages_render_with_the_link() {
        let template = EmailTemplate::SignInLink { link: "https://kanpa.example/s/abc".into(), expires_in_minutes: 15 };
        let ja = render(&template, Locale::Ja, "kanpa").unwrap();
        assert!(ja.subject.contains("サインイン"));
        assert!(ja.text.contains("https://kanpa.example/s/abc") && ja.text.contains("15 分"));
        assert!(ja.html.contains(r#"lang="ja""#) && ja.html.contains("https://kanpa.example/s/abc"));
        let en = render(&template, Locale::En, "kanpa").unwrap();
        assert!(en.subject.contains("sign-in link") && en.text.contains("15 minutes"));
    }

    #[test]
    fn html_escapes_data_and_subjects_are_encoded() {
        let template = EmailTemplate::TestMessage { sent_from: "<script>x</script>".into() };
        let rendered = render(&template, Locale::Ja, "kanpa").unwrap();
        assert!(!rendered.html.contains("<script>") && rendered.html.contains("&#60;script&#62;"), "{}", rendered.html);
        let from: Mailbox = "kanpa <noreply@kanpa.invalid>".parse().unwrap();
        let to = EmailAddress::parse("hanako@example.jp").unwrap();
        let message = build_message(&from, &to, Some("山田 花子"), "<id@kanpa.invalid>", &rendered).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.lines().any(|l| l.starts_with("Subject: ") && l.contains("=?utf-8?b?")), "{raw}");
        assert!(raw.contains("Message-ID: <id@kanpa.invalid>"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
    }

    #[test]
    fn header_injection_is_refused() {
        let rendered = render(&EmailTemplate::TestMessage { sent_from: "x".into() }, Locale::En, "kanpa").unwrap();
        let from: Mailbox = "kanpa <noreply@kanpa.invalid>".parse().unwrap();
        let to = EmailAddress::parse("hanako@example.jp").unwrap();
        let injected = build_message(&from, &to, Some("Eve\r\nBcc: all@example.jp"), "<id@x>", &rendered);
        assert_eq!(injected.unwrap_err(), EmailError::ControlCharacters);
        let subject =
            render(&EmailTemplate::TestMessage { sent_from: "x".into() }, Locale::En, "kanpa\r\nBcc: a@b.jp").unwrap();
        assert!(!subject.subject.contains('\n'));
    }

    #[test]
    fn message_ids_are_stable_per_key() {
        assert_eq!(message_id("k1", "kanpa.example"), message_id("k1", "kanpa.example"));
        assert_ne!(message_id("k1", "kanpa.example"), message_id("k2", "kanpa.example"));
        assert!(message_id("k1", "kanpa.example").ends_with("@kanpa.example>"));
    }
}
