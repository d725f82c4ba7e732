//! What an organiser is told about the seller settings (the legal
//! disclosure and the receipts' issuer): a wrong field, or the required
//! fields still empty when a campaign or salon is to go live.

use axum::http::StatusCode;
use kanpa_payments::seller::{Incomplete, SellerError, SellerProblem};

use crate::i18n::Tr;

/// A field's name as the legal page labels it; the API's name when it has no label.
pub fn field_label(field: &str, tr: Tr) -> String {
    const LABELLED: [&str; 10] = [
        "seller_name",
        "representative",
        "address",
        "contact_email",
        "contact_phone",
        "extra_costs_ja",
        "delivery_ja",
        "cancellation_ja",
        "registration_number",
        "tax_rounding",
    ];
    if LABELLED.contains(&field) { tr.t(&format!("seller-field-{field}")) } else { field.to_owned() }
}

pub fn describe_incomplete(incomplete: &Incomplete, tr: Tr) -> String {
    let separator = match tr.0 {
        kanpa_ledger::Locale::Ja => "、",
        kanpa_ledger::Locale::En => ", ",
    };
    let fields: Vec<String> = incomplete.missing.iter().map(|f| format!("{} ({f})", field_label(f, tr))).collect();
    tr.t_with("seller-error-incomplete", &[("fields", &fields.join(separator))])
}

pub fn describe_problem(problem: &SellerProblem, tr: Tr) -> String {
    match problem {
        SellerProblem::TooLong { max } => tr.t_with("seller-error-too-long", &[("max", &max.to_string())]),
        SellerProblem::Email => tr.t("seller-error-email"),
        SellerProblem::Phone => tr.t("seller-error-phone"),
        SellerProblem::RegistrationForm => tr.t("seller-error-registration-form"),
        SellerProblem::RegistrationCheckDigit => tr.t("seller-error-registration-check-digit"),
        SellerProblem::Rounding => tr.t("seller-error-rounding"),
    }
}

/// The status, machine code, field and message of a settings error.
pub fn explain(e: &SellerError, tr: Tr) -> (StatusCode, &'static str, Option<&'static str>, String) {
    match e {
        SellerError::Invalid { field, problem } => {
            let message = tr.t_with(
                "field-problem",
                &[("field", &field_label(field, tr)), ("problem", &describe_problem(problem, tr))],
            );
            (StatusCode::UNPROCESSABLE_ENTITY, problem.code(), Some(field), message)
        }
        SellerError::UnknownOrganisation => (StatusCode::NOT_FOUND, "not_found", None, tr.t("error-not-found")),
        SellerError::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None, tr.t("error-internal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanpa_ledger::Locale;

    #[test]
    fn every_problem_and_required_field_has_words_in_both_languages() {
        for locale in [Locale::Ja, Locale::En] {
            let tr = Tr(locale);
            for field in kanpa_payments::seller::REQUIRED {
                assert_ne!(field_label(field, tr), field, "{locale:?} {field}");
            }
            for problem in [
                SellerProblem::TooLong { max: 3 },
                SellerProblem::Email,
                SellerProblem::Phone,
                SellerProblem::RegistrationForm,
                SellerProblem::RegistrationCheckDigit,
                SellerProblem::Rounding,
            ] {
                let words = describe_problem(&problem, tr);
                assert!(!words.is_empty() && !words.contains("seller-error"), "{locale:?} {problem:?}");
            }
            let missing = describe_incomplete(&Incomplete { missing: vec!["address", "contact_phone"] }, tr);
            assert!(missing.contains("address") && missing.contains("contact_phone"), "{missing}");
        }
        assert!(describe_incomplete(&Incomplete { missing: vec!["address"] }, Tr(Locale::Ja)).contains("所在地"));
    }
}
