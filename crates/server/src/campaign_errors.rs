//! What a person is told when a campaign operation refuses their input:
//! one status, field and message (in their language) per error, shared by
//! the pages and the JSON API.

use axum::http::StatusCode;
use kanpa_campaigns::CampaignError;
use kanpa_campaigns::model::Problem;
use kanpa_ledger::ParseMoneyError;

use crate::i18n::Tr;

/// The HTTP status of an error, and the input field it is about.
pub fn status_and_field(e: &CampaignError) -> (StatusCode, Option<&'static str>) {
    use StatusCode as S;
    match e {
        CampaignError::Invalid(invalid) => (S::UNPROCESSABLE_ENTITY, Some(invalid.field)),
        CampaignError::NotFound("team") => (S::UNPROCESSABLE_ENTITY, Some("team")),
        CampaignError::NotFound("reward") => (S::UNPROCESSABLE_ENTITY, Some("reward")),
        CampaignError::NotFound(_) => (S::NOT_FOUND, None),
        CampaignError::SlugTaken => (S::CONFLICT, Some("slug")),
        CampaignError::WrongState { .. } | CampaignError::PledgeLocked | CampaignError::MoneyTaken { .. } => {
            (S::CONFLICT, None)
        }
        CampaignError::NotOpen => (S::UNPROCESSABLE_ENTITY, None),
        CampaignError::SoldOut | CampaignError::RewardUnavailable => (S::UNPROCESSABLE_ENTITY, Some("reward")),
        CampaignError::LinkExpired => (S::GONE, None),
        CampaignError::SellerIncomplete(_) => (S::CONFLICT, None),
        CampaignError::Gateway(_) => (S::SERVICE_UNAVAILABLE, None),
        CampaignError::Ledger(_)
        | CampaignError::Receipt(_)
        | CampaignError::Seller(_)
        | CampaignError::Database(_) => (S::INTERNAL_SERVER_ERROR, None),
    }
}

/// The message for an error, in the reader's language.
pub fn describe(e: &CampaignError, tr: Tr) -> String {
    match e {
        CampaignError::Invalid(invalid) => problem(&invalid.problem, tr),
        CampaignError::NotFound("team") => tr.t("campaign-error-unknown-team"),
        CampaignError::NotFound("reward") => tr.t("campaign-error-unknown-reward"),
        CampaignError::NotFound(_) => tr.t("error-not-found"),
        CampaignError::SlugTaken => tr.t("campaign-error-slug-taken"),
        CampaignError::WrongState { status } => tr.t_with("campaign-error-wrong-state", &[("status", status.as_str())]),
        CampaignError::MoneyTaken { collected, on_their_way } => tr.t_with(
            "campaign-error-money-taken",
            &[("collected", &collected.format(tr.0)), ("count", &on_their_way.to_string())],
        ),
        CampaignError::NotOpen => tr.t("campaign-error-closed"),
        CampaignError::SoldOut => tr.t("campaign-error-sold-out"),
        CampaignError::RewardUnavailable => tr.t("campaign-error-reward-unavailable"),
        CampaignError::PledgeLocked => tr.t("campaign-error-pledge-locked"),
        CampaignError::LinkExpired => tr.t("campaign-error-link-expired"),
        CampaignError::SellerIncomplete(incomplete) => crate::seller_errors::describe_incomplete(incomplete, tr),
        CampaignError::Gateway(_) => tr.t("campaign-error-gateway"),
        CampaignError::Ledger(_)
        | CampaignError::Receipt(_)
        | CampaignError::Seller(_)
        | CampaignError::Database(_) => tr.t("error-internal"),
    }
}

fn problem(p: &Problem, tr: Tr) -> String {
    match p {
        Problem::Required => tr.t("campaign-error-required"),
        Problem::TooLong { max } => tr.t_with("campaign-error-too-long", &[("max", &max.to_string())]),
        Problem::Amount(ParseMoneyError::Negative) => tr.t("campaign-error-amount-negative"),
        Problem::FullWidthDigits => tr.t("campaign-error-amount-full-width"),
        Problem::Amount(ParseMoneyError::Overflow) => tr.t("campaign-error-amount-huge"),
        Problem::Amount(ParseMoneyError::TooManyDecimals { .. }) => tr.t("campaign-error-amount-decimal"),
        Problem::Amount(_) => tr.t("campaign-error-amount"),
        Problem::BelowMinimum { min } => tr.t_with("campaign-error-below-minimum", &[("min", &min.format(tr.0))]),
        Problem::AboveMaximum { max } => tr.t_with("campaign-error-above-maximum", &[("max", &max.format(tr.0))]),
        Problem::Email => tr.t("campaign-error-email"),
        Problem::Slug => tr.t("campaign-error-slug"),
        Problem::DateTime => tr.t("campaign-error-datetime"),
        Problem::DeadlineBeforeStart => tr.t("campaign-error-deadline-before-start"),
        Problem::Choice => tr.t("campaign-error-choice"),
        Problem::Currency => tr.t("campaign-error-currency"),
    }
}
