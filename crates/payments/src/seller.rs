//! The seller behind an organisation's campaigns and salons: who takes the
//! money, how to reach them, and the terms Japan's Specified Commercial
//! Transactions Act wants disclosed before anyone pays; also the issuer
//! details of receipts (the qualified-invoice registration number and how
//! consumption tax is rounded).
//!
//! Owns `seller_settings`. A campaign may not be published nor a salon
//! opened while [`SellerSettings::missing`] names a required field.

use kanpa_ledger::{Db, Locale, OrgId, Timestamp, Tx, on_db, on_tx};
use serde::{Deserialize, Serialize};

/// What can be wrong with a setting, for the field it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SellerProblem {
    #[error("is too long (at most {max} characters)")]
    TooLong { max: usize },
    #[error("is not an email address")]
    Email,
    #[error("is not a telephone number")]
    Phone,
    #[error("must be \"T\" followed by 13 digits")]
    RegistrationForm,
    #[error("has a wrong check digit")]
    RegistrationCheckDigit,
    #[error("must be floor, round or ceil")]
    Rounding,
}

impl SellerProblem {
    /// A stable machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            SellerProblem::TooLong { .. } => "too_long",
            SellerProblem::Email => "invalid_email",
            SellerProblem::Phone => "invalid_phone",
            SellerProblem::RegistrationForm => "invalid_registration_number",
            SellerProblem::RegistrationCheckDigit => "registration_number_check_digit",
            SellerProblem::Rounding => "invalid_rounding",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SellerError {
    #[error("{field} {problem}")]
    Invalid { field: &'static str, problem: SellerProblem },
    #[error("no such organisation")]
    UnknownOrganisation,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The required disclosure fields an organisation has left empty; a campaign
/// or salon of it cannot go live until they are filled in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the seller details are incomplete: {}", missing.join(", "))]
pub struct Incomplete {
    pub missing: Vec<&'static str>,
}

// ---------------------------------------------------------------- registration number

/// A qualified-invoice issuer's registration number (適格請求書発行事業者
/// 登録番号): "T" and 13 digits whose first digit checks the other twelve
/// like a corporate number's (財務省令第70号 第2条: 9 − (Σ Pn × Qn mod 9),
/// Pn the n-th digit from the right of the twelve, Qn 1 for odd n, 2 for even).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct InvoiceRegistrationNumber(String);

impl InvoiceRegistrationNumber {
    /// Accepts what people type: surrounding spaces, a lower-case "t",
    /// full-width characters and separators (`T1-2345-…`) are tolerated.
    pub fn parse(input: &str) -> Result<InvoiceRegistrationNumber, SellerProblem> {
        let normalised: String =
            input.trim().chars().map(fold_full_width).filter(|c| !matches!(c, '-' | ' ' | '\u{3000}')).collect();
        let Some(digits) = normalised.strip_prefix(['T', 't']) else {
            return Err(SellerProblem::RegistrationForm);
        };
        if digits.len() != 13 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SellerProblem::RegistrationForm);
        }
        let bytes = digits.as_bytes();
        let weighted: u32 = bytes[1..]
            .iter()
            .rev()
            .enumerate()
            .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 2 })
            .sum();
        if u32::from(bytes[0] - b'0') != 9 - weighted % 9 {
            return Err(SellerProblem::RegistrationCheckDigit);
        }
        Ok(InvoiceRegistrationNumber(format!("T{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<InvoiceRegistrationNumber> for String {
    fn from(n: InvoiceRegistrationNumber) -> String {
        n.0
    }
}

impl std::fmt::Display for InvoiceRegistrationNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fold_full_width(c: char) -> char {
    match c {
        '０'..='９' | 'Ｔ' | 'ｔ' | '－' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        'ー' | '‐' | '―' => '-',
        _ => c,
    }
}

// ---------------------------------------------------------------- tax rounding

/// How a receipt's consumption tax is brought to the currency's minor unit;
/// the law leaves the choice to the issuer, once per receipt and rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaxRounding {
    #[default]
    Floor,
    /// Half up.
    Round,
    Ceil,
}

impl TaxRounding {
    pub fn as_str(self) -> &'static str {
        match self {
            TaxRounding::Floor => "floor",
            TaxRounding::Round => "round",
            TaxRounding::Ceil => "ceil",
        }
    }

    pub fn parse(input: &str) -> Result<TaxRounding, SellerProblem> {
        match input.trim().to_ascii_lowercase().as_str() {
            "floor" => Ok(TaxRounding::Floor),
            "round" => Ok(TaxRounding::Round),
            "ceil" => Ok(TaxRounding::Ceil),
            _ => Err(SellerProblem::Rounding),
        }
    }

    /// `numerator / denominator` for a non-negative numerator and a positive
    /// denominator, rounded by this rule.
    pub fn divide(self, numerator: i128, denominator: i128) -> i128 {
        match self {
            TaxRounding::Floor => numerator / denominator,
            TaxRounding::Ceil => (numerator + denominator - 1) / denominator,
            TaxRounding::Round => (2 * numerator + denominator) / (2 * denominator),
        }
    }
}

// ---------------------------------------------------------------- the settings

/// A text the disclosure page shows in the reader's language; English falls
/// back to Japanese when it was not given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Texts {
    pub ja: String,
    pub en: String,
}

impl Texts {
    pub fn get(&self, locale: Locale) -> &str {
        match locale {
            Locale::En if !self.en.is_empty() => &self.en,
            _ => &self.ja,
        }
    }
}

/// An organisation's seller details. Empty strings are fields not filled in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SellerSettings {
    pub seller_name: String,
    pub representative: String,
    pub address: String,
    pub contact_email: String,
    pub contact_phone: String,
    pub registration_number: Option<InvoiceRegistrationNumber>,
    pub tax_rounding: TaxRounding,
    /// Costs beyond the price (shipping of rewards, bank charges…).
    pub extra_costs: Texts,
    /// When rewards are delivered or services start.
    pub delivery: Texts,
    /// Cancellations and refunds.
    pub cancellation: Texts,
}

/// The fields the disclosure page cannot do without, in the order the API
/// and the CLI name them.
pub const REQUIRED: [&str; 8] = [
    "seller_name",
    "representative",
    "address",
    "contact_email",
    "contact_phone",
    "extra_costs_ja",
    "delivery_ja",
    "cancellation_ja",
];

impl SellerSettings {
    /// The required fields still empty, named as in [`REQUIRED`].
    pub fn missing(&self) -> Vec<&'static str> {
        let values = [
            &self.seller_name,
            &self.representative,
            &self.address,
            &self.contact_email,
            &self.contact_phone,
            &self.extra_costs.ja,
            &self.delivery.ja,
            &self.cancellation.ja,
        ];
        REQUIRED.iter().zip(values).filter(|(_, v)| v.trim().is_empty()).map(|(name, _)| *name).collect()
    }

    pub fn require_complete(&self) -> Result<(), Incomplete> {
        let missing = self.missing();
        if missing.is_empty() { Ok(()) } else { Err(Incomplete { missing }) }
    }
}

/// A change to some settings, as the API and the CLI take it: absent fields
/// are kept; an empty `registration_number` removes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerUpdate {
    pub seller_name: Option<String>,
    pub representative: Option<String>,
    pub address: Option<String>,
    pub contact_email: Option<String>,
    pub contact_phone: Option<String>,
    pub registration_number: Option<String>,
    pub tax_rounding: Option<String>,
    pub extra_costs_ja: Option<String>,
    pub extra_costs_en: Option<String>,
    pub delivery_ja: Option<String>,
    pub delivery_en: Option<String>,
    pub cancellation_ja: Option<String>,
    pub cancellation_en: Option<String>,
}

const SHORT: usize = 200;
const LONG: usize = 4000;

fn text(field: &'static str, value: &str, max: usize) -> Result<String, SellerError> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(SellerError::Invalid { field, problem: SellerProblem::TooLong { max } });
    }
    Ok(value.to_owned())
}

impl SellerUpdate {
    /// The settings after this change, or the first field that is wrong.
    pub fn apply(&self, current: &SellerSettings) -> Result<SellerSettings, SellerError> {
        let mut next = current.clone();
        let set = |slot: &mut String, field: &'static str, value: &Option<String>, max| -> Result<(), SellerError> {
            if let Some(value) = value {
                *slot = text(field, value, max)?;
            }
            Ok(())
        };
        set(&mut next.seller_name, "seller_name", &self.seller_name, SHORT)?;
        set(&mut next.representative, "representative", &self.representative, SHORT)?;
        set(&mut next.address, "address", &self.address, 500)?;
        set(&mut next.contact_email, "contact_email", &self.contact_email, 254)?;
        set(&mut next.contact_phone, "contact_phone", &self.contact_phone, 40)?;
        set(&mut next.extra_costs.ja, "extra_costs_ja", &self.extra_costs_ja, LONG)?;
        set(&mut next.extra_costs.en, "extra_costs_en", &self.extra_costs_en, LONG)?;
        set(&mut next.delivery.ja, "delivery_ja", &self.delivery_ja, LONG)?;
        set(&mut next.delivery.en, "delivery_en", &self.delivery_en, LONG)?;
        set(&mut next.cancellation.ja, "cancellation_ja", &self.cancellation_ja, LONG)?;
        set(&mut next.cancellation.en, "cancellation_en", &self.cancellation_en, LONG)?;
        if !next.contact_email.is_empty() && !looks_like_email(&next.contact_email) {
            return Err(SellerError::Invalid { field: "contact_email", problem: SellerProblem::Email });
        }
        if !next.contact_phone.is_empty() && !looks_like_phone(&next.contact_phone) {
            return Err(SellerError::Invalid { field: "contact_phone", problem: SellerProblem::Phone });
        }
        if let Some(number) = &self.registration_number {
            next.registration_number = if number.trim().is_empty() {
                None
            } else {
                Some(
                    InvoiceRegistrationNumber::parse(number)
                        .map_err(|problem| SellerError::Invalid { field: "registration_number", problem })?,
                )
            };
        }
        if let Some(rounding) = &self.tax_rounding {
            next.tax_rounding = TaxRounding::parse(rounding)
                .map_err(|problem| SellerError::Invalid { field: "tax_rounding", problem })?;
        }
        Ok(next)
    }
}

fn looks_like_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !value.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Digits with the separators people write (`03-1234-5678`, `+81 3 …`, `(03)`).
fn looks_like_phone(value: &str) -> bool {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    (6..=15).contains(&digits) && value.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | ' ' | '+' | '(' | ')'))
}

// ---------------------------------------------------------------- storage

#[derive(sqlx::FromRow)]
struct SellerRow {
    seller_name: String,
    representative: String,
    address: String,
    contact_email: String,
    contact_phone: String,
    registration_number: Option<String>,
    tax_rounding: String,
    extra_costs_ja: String,
    extra_costs_en: String,
    delivery_ja: String,
    delivery_en: String,
    cancellation_ja: String,
    cancellation_en: String,
}

impl From<SellerRow> for SellerSettings {
    fn from(r: SellerRow) -> SellerSettings {
        SellerSettings {
            seller_name: r.seller_name,
            representative: r.representative,
            address: r.address,
            contact_email: r.contact_email,
            contact_phone: r.contact_phone,
            // Stored values were parsed on the way in.
            registration_number: r.registration_number.map(InvoiceRegistrationNumber),
            tax_rounding: TaxRounding::parse(&r.tax_rounding).unwrap_or_default(),
            extra_costs: Texts { ja: r.extra_costs_ja, en: r.extra_costs_en },
            delivery: Texts { ja: r.delivery_ja, en: r.delivery_en },
            cancellation: Texts { ja: r.cancellation_ja, en: r.cancellation_en },
        }
    }
}

const SELECT: &str = "SELECT seller_name, representative, address, contact_email, contact_phone, registration_number,
        tax_rounding, extra_costs_ja, extra_costs_en, delivery_ja, delivery_en, cancellation_ja, cancellation_en
    FROM seller_settings WHERE organisation_id = $1";

/// An organisation's settings; all empty when never set.
pub async fn settings(db: &Db, org: OrgId) -> Result<SellerSettings, SellerError> {
    let row: Option<SellerRow> = on_db!(db, p => sqlx::query_as(SELECT).bind(org.0).fetch_optional(p).await?);
    Ok(row.map(SellerSettings::from).unwrap_or_default())
}

/// The same, inside a transaction.
pub async fn settings_in(tx: &mut Tx, org: OrgId) -> Result<SellerSettings, SellerError> {
    let row: Option<SellerRow> = on_tx!(tx, c => sqlx::query_as(SELECT).bind(org.0).fetch_optional(c).await?);
    Ok(row.map(SellerSettings::from).unwrap_or_default())
}

/// Refuses, naming the empty fields, unless the organisation's disclosure
/// is complete. Called by publishing a campaign and opening a salon.
pub async fn require_complete(tx: &mut Tx, org: OrgId) -> Result<Result<(), Incomplete>, SellerError> {
    Ok(settings_in(tx, org).await?.require_complete())
}

/// Applies a change to an organisation's settings and returns them. Nothing
/// is written when a field is wrong.
pub async fn update(db: &Db, org: OrgId, change: &SellerUpdate) -> Result<SellerSettings, SellerError> {
    let mut tx = db.begin().await?;
    let exists: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar("SELECT id FROM organisations WHERE id = $1")
        .bind(org.0).fetch_optional(c).await?);
    if exists.is_none() {
        return Err(SellerError::UnknownOrganisation);
    }
    let next = change.apply(&settings_in(&mut tx, org).await?)?;
    let sql = "INSERT INTO seller_settings (organisation_id, seller_name, representative, address, contact_email,
                   contact_phone, registration_number, tax_rounding, extra_costs_ja, extra_costs_en, delivery_ja,
                   delivery_en, cancellation_ja, cancellation_en, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               ON CONFLICT (organisation_id) DO UPDATE SET seller_name = excluded.seller_name,
                   representative = excluded.representative, address = excluded.address,
                   contact_email = excluded.contact_email, contact_phone = excluded.contact_phone,
                   registration_number = excluded.registration_number, tax_rounding = excluded.tax_rounding,
                   extra_costs_ja = excluded.extra_costs_ja, extra_costs_en = excluded.extra_costs_en,
                   delivery_ja = excluded.delivery_ja, delivery_en = excluded.delivery_en,
                   cancellation_ja = excluded.cancellation_ja, cancellation_en = excluded.cancellation_en,
                   updated_at = excluded.updated_at";
    let n = &next;
    on_tx!(&mut tx, c => sqlx::query(sql).bind(org.0).bind(&n.seller_name).bind(&n.representative)
        .bind(&n.address).bind(&n.contact_email).bind(&n.contact_phone)
        .bind(n.registration_number.as_ref().map(InvoiceRegistrationNumber::as_str))
        .bind(n.tax_rounding.as_str()).bind(&n.extra_costs.ja).bind(&n.extra_costs.en).bind(&n.delivery.ja)
        .bind(&n.delivery.en).bind(&n.cancellation.ja).bind(&n.cancellation.en).bind(Timestamp::now())
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(next)
}

/// Complete fictional settings, for demonstrations and tests.
pub fn fictional(seller_name: &str) -> SellerUpdate {
    SellerUpdate {
        seller_name: Some(seller_name.to_owned()),
        representative: Some("代表理事 架空 一郎".to_owned()),
        address: Some("〒100-0000 東京都千代田区架空町1-2-3".to_owned()),
        contact_email: Some("contact@example.jp".to_owned()),
        contact_phone: Some("03-0000-0000".to_owned()),
        registration_number: Some("T7123456789012".to_owned()),
        tax_rounding: Some("floor".to_owned()),
        extra_costs_ja: Some("リターンの送料は価格に含まれます。振込手数料はご負担ください。".to_owned()),
        extra_costs_en: Some("Shipping of rewards is included. Bank transfer fees are yours.".to_owned()),
        delivery_ja: Some("リターンはキャンペーン終了後3か月以内に発送します。".to_owned()),
        delivery_en: Some("Rewards ship within three months after the campaign ends.".to_owned()),
        cancellation_ja: Some("締切前の支援はマイページから取り消せます。決済後の返金は応じかねます。".to_owned()),
        cancellation_en: Some(
            "Pledges can be cancelled from My pledges before the deadline; payments taken are not refunded.".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_number_is_t_and_thirteen_digits_with_a_check_digit() {
        // The worked example of the check digit rule: base 123456789012 → 7.
        assert_eq!(InvoiceRegistrationNumber::parse("T7123456789012").unwrap().as_str(), "T7123456789012");
        assert_eq!(InvoiceRegistrationNumber::parse(" t7-1234-5678-9012 ").unwrap().as_str(), "T7123456789012");
        assert_eq!(
            InvoiceRegistrationNumber::parse("Ｔ７１２３４５６７８９０１２").unwrap().as_str(),
            "T7123456789012"
        );
        assert_eq!(InvoiceRegistrationNumber::parse("T8000000000001").unwrap().as_str(), "T8000000000001");
        assert_eq!(InvoiceRegistrationNumber::parse("T6123456789012"), Err(SellerProblem::RegistrationCheckDigit));
        assert_eq!(InvoiceRegistrationNumber::parse("7123456789012"), Err(SellerProblem::RegistrationForm));
        assert_eq!(InvoiceRegistrationNumber::parse("T712345678901"), Err(SellerProblem::RegistrationForm));
        assert_eq!(InvoiceRegistrationNumber::parse("T71234567890123"), Err(SellerProblem::RegistrationForm));
        assert_eq!(InvoiceRegistrationNumber::parse("T71234567890AB"), Err(SellerProblem::RegistrationForm));
        assert_eq!(InvoiceRegistrationNumber::parse(""), Err(SellerProblem::RegistrationForm));
    }

    #[test]
    fn rounding_rules_divide_as_named() {
        assert_eq!(TaxRounding::Floor.divide(315, 10), 31);
        assert_eq!(TaxRounding::Round.divide(315, 10), 32);
        assert_eq!(TaxRounding::Ceil.divide(315, 10), 32);
        assert_eq!(TaxRounding::Round.divide(314, 10), 31);
        assert_eq!(TaxRounding::Ceil.divide(310, 10), 31);
        assert_eq!(TaxRounding::parse(" CEIL "), Ok(TaxRounding::Ceil));
        assert_eq!(TaxRounding::parse("half"), Err(SellerProblem::Rounding));
    }

    #[test]
    fn empty_settings_name_every_required_field_and_fictional_ones_none() {
        assert_eq!(SellerSettings::default().missing(), REQUIRED.to_vec());
        let complete = fictional("架空の会").apply(&SellerSettings::default()).unwrap();
        assert_eq!(complete.missing(), Vec::<&str>::new());
        let blanked = SellerUpdate { address: Some("  ".into()), ..Default::default() }.apply(&complete).unwrap();
        assert_eq!(blanked.require_complete(), Err(Incomplete { missing: vec!["address"] }));
    }

    #[test]
    fn a_wrong_field_is_named_and_absent_fields_are_kept() {
        let complete = fictional("架空の会").apply(&SellerSettings::default()).unwrap();
        let wrong = |u: SellerUpdate| match u.apply(&complete) {
            Err(SellerError::Invalid { field, problem }) => (field, problem),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            wrong(SellerUpdate { registration_number: Some("T1234".into()), ..Default::default() }),
            ("registration_number", SellerProblem::RegistrationForm)
        );
        assert_eq!(
            wrong(SellerUpdate { contact_email: Some("nobody".into()), ..Default::default() }),
            ("contact_email", SellerProblem::Email)
        );
        assert_eq!(
            wrong(SellerUpdate { contact_phone: Some("call me".into()), ..Default::default() }),
            ("contact_phone", SellerProblem::Phone)
        );
        assert_eq!(
            wrong(SellerUpdate { tax_rounding: Some("bankers".into()), ..Default::default() }),
            ("tax_rounding", SellerProblem::Rounding)
        );
        let removed =
            SellerUpdate { registration_number: Some(String::new()), ..Default::default() }.apply(&complete).unwrap();
        assert_eq!(removed.registration_number, None);
        assert_eq!(removed.seller_name, "架空の会");
        assert_eq!(Texts { ja: "日本語".into(), en: String::new() }.get(Locale::En), "日本語");
    }
}
