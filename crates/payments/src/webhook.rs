//! Verifying Stripe's signed webhook payloads.

use stripe_webhook::{Webhook, WebhookError};

/// Why a webhook delivery was refused. Each is answered 400 and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("signature timestamp outside the 300 s tolerance")]
    Stale,
    #[error("body is not a Stripe event")]
    Unparsable,
    #[error("body is larger than 1 MiB")]
    TooLarge,
    #[error("body is not UTF-8")]
    NotUtf8,
}

impl Rejection {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale => "stale",
            Rejection::Unparsable => "unparsable",
            Rejection::TooLarge => "too_large",
            Rejection::NotUtf8 => "not_utf8",
        }
    }
}

/// Checks `signature` (the `Stripe-Signature` header) over `payload`
/// against each secret (two during a rotation); any valid `v1` under any
/// secret is accepted, within Stripe's 300 s tolerance. The event must also
/// parse with async-stripe's types.
pub fn verify(payload: &str, signature: Option<&str>, secrets: &[String]) -> Result<(), Rejection> {
    let signature = signature.ok_or(Rejection::MissingSignature)?;
    let mut outcome = Err(Rejection::BadSignature);
    for secret in secrets {
        match Webhook::construct_event(payload, signature, secret) {
            Ok(_) => return Ok(()),
            Err(WebhookError::BadTimestamp(_)) => outcome = Err(Rejection::Stale),
            Err(WebhookError::BadParse(_)) => outcome = Err(Rejection::Unparsable),
            Err(WebhookError::BadHeader(_)) => return Err(Rejection::BadSignature),
            Err(WebhookError::BadSignature | WebhookError::BadKey) => {}
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"evt_1","object":"event","api_version":"2017-05-25","created":1492774577,
        "livemode":false,"pending_webhooks":1,"data":{"object":{"object":"bank_account","country":"us",
        "currency":"usd","id":"ba_1","last4":"6789","status":"verified"}},"type":"account.external_account.created"}"#;

    #[test]
    fn any_of_the_configured_secrets_may_sign() {
        let header = Webhook::generate_test_header(EVENT, "whsec_new", None);
        let secrets = vec!["whsec_old".to_owned(), "whsec_new".to_owned()];
        assert_eq!(verify(EVENT, Some(&header), &secrets), Ok(()));
        assert_eq!(verify(EVENT, Some(&header), &secrets[..1]), Err(Rejection::BadSignature));
        assert_eq!(verify(EVENT, None, &secrets), Err(Rejection::MissingSignature));
    }

    #[test]
    fn stale_and_tampered_payloads_are_refused() {
        let old = Webhook::generate_test_header(EVENT, "whsec_a", Some(1_000_000_000));
        assert_eq!(verify(EVENT, Some(&old), &["whsec_a".to_owned()]), Err(Rejection::Stale));
        let header = Webhook::generate_test_header(EVENT, "whsec_a", None);
        let tampered = EVENT.replace("6789", "0000");
        assert_eq!(verify(&tampered, Some(&header), &["whsec_a".to_owned()]), Err(Rejection::BadSignature));
        assert_eq!(verify(EVENT, Some("garbage"), &["whsec_a".to_owned()]), Err(Rejection::BadSignature));
    }
}
