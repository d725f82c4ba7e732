//! Verifying Stripe's signed webhook payloads.
//!
//! Stripe signs `"{t}.{body}"` with HMAC-SHA256 under the endpoint's secret
//! and sends `Stripe-Signature: t=…,v1=…[,v1=…]`. A delivery is accepted
//! when any `v1` matches under any configured secret and `t` is within 300
//! seconds of now. The body itself is read afterwards, once, by the inbox
//! (`IncomingEvent::from_json`), which needs only its envelope.

use hmac::Mac;
use kanpa_messaging::hooks;

/// Stripe's tolerance for the signature's timestamp.
const TOLERANCE_SECS: i64 = 300;

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
/// secret is accepted, within Stripe's 300 s tolerance.
pub fn verify(payload: &str, signature: Option<&str>, secrets: &[String]) -> Result<(), Rejection> {
    verify_at(payload, signature, secrets, time::OffsetDateTime::now_utc().unix_timestamp())
}

fn verify_at(payload: &str, signature: Option<&str>, secrets: &[String], now: i64) -> Result<(), Rejection> {
    let header = signature.ok_or(Rejection::MissingSignature)?;
    let (signed_at, candidates) = parse_header(header).ok_or(Rejection::BadSignature)?;
    let candidates: Vec<Vec<u8>> = candidates.iter().filter_map(|c| hex::decode(c).ok()).collect();
    let signs = |secret: &String| {
        let mac = hooks::signature_mac(secret, signed_at, payload);
        // verify_slice compares in constant time.
        candidates.iter().any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    };
    if !secrets.iter().any(signs) {
        return Err(Rejection::BadSignature);
    }
    if (now - signed_at).abs() > TOLERANCE_SECS {
        return Err(Rejection::Stale);
    }
    Ok(())
}

/// `t` and the `v1` signatures of a `Stripe-Signature` header (other
/// schemes are ignored); `None` when it has no `t` or no `v1`, or a part is
/// not `key=value`.
fn parse_header(header: &str) -> Option<(i64, Vec<&str>)> {
    let mut signed_at = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=')? {
            ("t", t) => signed_at = Some(t.parse().ok()?),
            ("v1", signature) => v1.push(signature),
            _ => {}
        }
    }
    (!v1.is_empty()).then_some((signed_at?, v1))
}

#[cfg(test)]
mod tests {
    use stripe_webhook::Webhook;

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

    #[test]
    fn the_timestamp_is_signed_and_may_be_early_or_late_by_five_minutes() {
        let secrets = ["whsec_a".to_owned()];
        let header = Webhook::generate_test_header(EVENT, "whsec_a", Some(1_700_000_000));
        for now in [1_700_000_000 - 300, 1_700_000_000, 1_700_000_000 + 300] {
            assert_eq!(verify_at(EVENT, Some(&header), &secrets, now), Ok(()));
        }
        for now in [1_700_000_000 - 301, 1_700_000_000 + 301] {
            assert_eq!(verify_at(EVENT, Some(&header), &secrets, now), Err(Rejection::Stale));
        }
        // Moving the timestamp breaks the signature, so a stale delivery
        // cannot be made fresh.
        let moved = header.replace("t=1700000000", "t=1700000600");
        assert_eq!(verify_at(EVENT, Some(&moved), &secrets, 1_700_000_600), Err(Rejection::BadSignature));
        // Any v1 may match; other schemes are ignored.
        let signature = header.split_once("v1=").unwrap().1;
        let several = format!("t=1700000000,v0=abc,v1=00ff,v1={signature}");
        assert_eq!(verify_at(EVENT, Some(&several), &secrets, 1_700_000_000), Ok(()));
        assert_eq!(verify_at(EVENT, Some("t=1700000000"), &secrets, 1_700_000_000), Err(Rejection::BadSignature));
        assert_eq!(
            verify_at(EVENT, Some(&format!("v1={signature}")), &secrets, 1_700_000_000),
            Err(Rejection::BadSignature)
        );
    }
}
