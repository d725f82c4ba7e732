//! What a person is told when a salon operation refuses their input: one
//! status, field and message (in their language) per error, shared by the
//! pages, the JSON API and the CLI.

use axum::http::StatusCode;
use kanpa_patrons::PatronError;
use kanpa_patrons::model::Problem;

use crate::i18n::Tr;

/// The HTTP status of an error, and the input field it is about.
pub fn status_and_field(e: &PatronError) -> (StatusCode, Option<&'static str>) {
    use StatusCode as S;
    match e {
        PatronError::Invalid(invalid) => (S::UNPROCESSABLE_ENTITY, Some(invalid.field)),
        PatronError::NotFound("tier") => (S::UNPROCESSABLE_ENTITY, Some("tier")),
        PatronError::NotFound(_) => (S::NOT_FOUND, None),
        PatronError::SlugTaken => (S::CONFLICT, Some("slug")),
        PatronError::SalonState { .. } => (S::CONFLICT, None),
        PatronError::TierRetired | PatronError::TierFull => (S::UNPROCESSABLE_ENTITY, Some("tier")),
        PatronError::AlreadyMember => (S::CONFLICT, Some("email")),
        PatronError::MembershipState { .. } => (S::CONFLICT, None),
        PatronError::SellerIncomplete(_) => (S::CONFLICT, None),
        PatronError::Gateway(_) => (S::SERVICE_UNAVAILABLE, None),
        PatronError::Ledger(_) | PatronError::Receipt(_) | PatronError::Seller(_) | PatronError::Database(_) => {
            (S::INTERNAL_SERVER_ERROR, None)
        }
    }
}

/// The message for an error, in the reader's language.
pub fn describe(e: &PatronError, tr: Tr) -> String {
    match e {
        PatronError::Invalid(invalid) => problem(&invalid.problem, tr),
        PatronError::NotFound("tier") => tr.t("salon-error-unknown-tier"),
        PatronError::NotFound(_) => tr.t("error-not-found"),
        PatronError::SlugTaken => tr.t("campaign-error-slug-taken"),
        PatronError::SalonState { status } => tr.t_with("salon-error-wrong-state", &[("status", status.as_str())]),
        PatronError::TierRetired => tr.t("salon-error-tier-retired"),
        PatronError::TierFull => tr.t("salon-error-tier-full"),
        PatronError::AlreadyMember => tr.t("salon-error-already-member"),
        PatronError::MembershipState { status } => {
            tr.t_with("salon-error-membership-state", &[("status", status.as_str())])
        }
        PatronError::SellerIncomplete(incomplete) => crate::seller_errors::describe_incomplete(incomplete, tr),
        PatronError::Gateway(_) => tr.t("campaign-error-gateway"),
        PatronError::Ledger(_) | PatronError::Receipt(_) | PatronError::Seller(_) | PatronError::Database(_) => {
            tr.t("error-internal")
        }
    }
}

fn problem(p: &Problem, tr: Tr) -> String {
    match p {
        Problem::Required => tr.t("campaign-error-required"),
        Problem::TooLong { max } => tr.t_with("campaign-error-too-long", &[("max", &max.to_string())]),
        Problem::BelowMinimum { min } => tr.t_with("campaign-error-below-minimum", &[("min", &min.format(tr.0))]),
        Problem::AboveMaximum { max } => tr.t_with("campaign-error-above-maximum", &[("max", &max.format(tr.0))]),
        Problem::Email => tr.t("campaign-error-email"),
        Problem::Slug => tr.t("campaign-error-slug"),
        Problem::Choice => tr.t("campaign-error-choice"),
        Problem::Currency => tr.t("campaign-error-currency"),
        Problem::Url => tr.t("salon-error-url"),
        Problem::OutOfRange { min, max } => {
            tr.t_with("salon-error-out-of-range", &[("min", &min.to_string()), ("max", &max.to_string())])
        }
    }
}

#[cfg(test)]
mod tests {
    use kanpa_ledger::Locale;

    use super::*;

    #[test]
    fn every_refusal_has_words_in_both_languages() {
        let errors = [
            PatronError::NotFound("tier"),
            PatronError::TierRetired,
            PatronError::TierFull,
            PatronError::AlreadyMember,
            PatronError::SalonState { status: kanpa_patrons::SalonStatus::Draft },
            PatronError::MembershipState { status: kanpa_patrons::MembershipStatus::Ended },
            PatronError::Invalid(kanpa_patrons::model::invalid("link_url", Problem::Url)),
            PatronError::Invalid(kanpa_patrons::model::invalid("grace_days", Problem::OutOfRange { min: 0, max: 30 })),
        ];
        for e in &errors {
            for locale in [Locale::Ja, Locale::En] {
                let text = describe(e, Tr(locale));
                assert!(!text.is_empty() && !text.contains("salon-error"), "{e:?} {locale:?}: {text}");
            }
        }
        assert!(describe(&PatronError::TierFull, Tr(Locale::Ja)).contains("満席"));
    }
}
