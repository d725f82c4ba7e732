//! A receipt as a page: one A4 sheet when printed (`@media print` in
//! `app.css`), in Japanese or English. With the issuer's registration number
//! it shows what a qualified invoice must: issuer and number, transaction
//! date, what was bought (reduced-rate items marked), the amounts per tax
//! rate and the consumption tax per rate, and the recipient. Rendered by the
//! payer's pages in `routes/me.rs`; any other page that shows a receipt (a
//! treasurer's manual receipt) calls [`render`] too.

use askama::Template;
use kanpa_ledger::{Locale, Money, Timestamp};
use kanpa_payments::receipt::{Receipt, TaxRate};

use crate::i18n::Tr;
use crate::pages::RenderHtml;

pub struct LineView {
    pub description: String,
    pub rate: String,
    pub amount: String,
}

pub struct Reference {
    /// The message key of the label.
    pub label: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptPage {
    tr: Tr,
    qualified: bool,
    number: String,
    issued_on: String,
    paid_on: String,
    payer: String,
    issuer: String,
    registration_number: String,
    legal_link: Option<String>,
    total: String,
    lines: Vec<LineView>,
    by_rate: Vec<String>,
    has_donation: bool,
    has_reduced: bool,
    references: Vec<Reference>,
}

/// A date as written on receipts: in Japan time, where kanpa's receipts are issued.
pub fn receipt_date(at: Timestamp, locale: Locale) -> String {
    let offset = time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = at.as_offset().to_offset(offset);
    match locale {
        Locale::Ja => format!("{}年{}月{}日", t.year(), u8::from(t.month()), t.day()),
        Locale::En => format!("{} {} {}", t.day(), t.month(), t.year()),
    }
}

fn rate_label(tr: Tr, rate: Option<TaxRate>) -> String {
    match rate {
        Some(rate) => format!("{}%", rate.percent()),
        None => tr.t("receipt-not-taxable"),
    }
}

/// The receipt page. `references` are ids that help the payer find the
/// payment (the pledge, the Stripe charge); `legal_link` is the issuer's
/// disclosure page.
pub fn render(
    tr: Tr,
    receipt: &Receipt,
    references: Vec<Reference>,
    legal_link: Option<String>,
) -> anyhow::Result<String> {
    let locale = tr.0;
    let by_rate = receipt.tax_by_rate()?;
    let total = receipt.total()?;
    let money = |m: Money| m.format(locale);
    let lines = receipt
        .lines
        .iter()
        .map(|l| LineView {
            description: if l.tax_rate == Some(TaxRate::REDUCED) {
                format!("{} ※", l.description(locale))
            } else {
                l.description(locale).to_owned()
            },
            rate: rate_label(tr, l.tax_rate),
            amount: money(l.amount),
        })
        .collect();
    let exclusive = receipt.basis == kanpa_payments::receipt::PriceBasis::TaxExclusive;
    let by_rate_text = by_rate
        .iter()
        .filter(|r| r.rate.is_some())
        .map(|r| {
            let key = if exclusive { "receipt-rate-total-exclusive" } else { "receipt-rate-total" };
            tr.t_with(key, &[("rate", &rate_label(tr, r.rate)), ("amount", &money(r.subtotal)), ("tax", &money(r.tax))])
        })
        .collect();
    let page = ReceiptPage {
        tr,
        qualified: receipt.is_qualified_invoice(),
        number: receipt.display_number(),
        issued_on: receipt_date(receipt.issued_at, locale),
        paid_on: receipt_date(receipt.paid_at, locale),
        payer: receipt.payer_name.clone(),
        issuer: receipt.issuer_name.clone(),
        registration_number: receipt.registration_number.clone().unwrap_or_default(),
        legal_link,
        total: money(total),
        lines,
        by_rate: by_rate_text,
        has_donation: receipt.lines.iter().any(|l| l.tax_rate.is_none()),
        has_reduced: receipt.lines.iter().any(|l| l.tax_rate == Some(TaxRate::REDUCED)),
        references,
    };
    Ok(page.render_html())
}
