//! `kanpa org settings --org SLUG [--FIELD VALUE…] [--file settings.json]`:
//! an organisation's seller details (the legal disclosure page, the
//! receipts' issuer) from the command line, the same change as
//! `PATCH /api/v1/organisation/settings`. Without changes it prints the
//! settings and the required fields still empty.

use anyhow::Context;
use clap::Args;
use kanpa_ledger::{Db, Locale, store as ledger};
use kanpa_payments::seller::{self, SellerSettings, SellerUpdate};

use crate::i18n::Tr;

#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The organisation's slug.
    #[arg(long)]
    pub org: String,
    /// A JSON file of fields to set (the API's names); flags win over it.
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
    /// The seller's legal name (販売事業者).
    #[arg(long)]
    pub seller_name: Option<String>,
    /// The responsible representative (運営統括責任者).
    #[arg(long)]
    pub representative: Option<String>,
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long)]
    pub contact_email: Option<String>,
    #[arg(long)]
    pub contact_phone: Option<String>,
    /// "T" and 13 digits; an empty value removes it.
    #[arg(long)]
    pub registration_number: Option<String>,
    /// floor, round or ceil.
    #[arg(long)]
    pub tax_rounding: Option<String>,
    #[arg(long)]
    pub extra_costs_ja: Option<String>,
    #[arg(long)]
    pub extra_costs_en: Option<String>,
    #[arg(long)]
    pub delivery_ja: Option<String>,
    #[arg(long)]
    pub delivery_en: Option<String>,
    #[arg(long)]
    pub cancellation_ja: Option<String>,
    #[arg(long)]
    pub cancellation_en: Option<String>,
}

impl SettingsArgs {
    fn update(self) -> anyhow::Result<(bool, SellerUpdate)> {
        let mut update = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{} is not a settings object", path.display()))?
            }
            None => SellerUpdate::default(),
        };
        let mut changed = self.file.is_some();
        let mut take = |slot: &mut Option<String>, value: Option<String>| {
            if value.is_some() {
                *slot = value;
                changed = true;
            }
        };
        take(&mut update.seller_name, self.seller_name);
        take(&mut update.representative, self.representative);
        take(&mut update.address, self.address);
        take(&mut update.contact_email, self.contact_email);
        take(&mut update.contact_phone, self.contact_phone);
        take(&mut update.registration_number, self.registration_number);
        take(&mut update.tax_rounding, self.tax_rounding);
        take(&mut update.extra_costs_ja, self.extra_costs_ja);
        take(&mut update.extra_costs_en, self.extra_costs_en);
        take(&mut update.delivery_ja, self.delivery_ja);
        take(&mut update.delivery_en, self.delivery_en);
        take(&mut update.cancellation_ja, self.cancellation_ja);
        take(&mut update.cancellation_en, self.cancellation_en);
        Ok((changed, update))
    }
}

fn print(settings: &SellerSettings) {
    let rows = [
        ("seller_name", settings.seller_name.as_str()),
        ("representative", &settings.representative),
        ("address", &settings.address),
        ("contact_email", &settings.contact_email),
        ("contact_phone", &settings.contact_phone),
        ("registration_number", settings.registration_number.as_ref().map_or("", |n| n.as_str())),
        ("tax_rounding", settings.tax_rounding.as_str()),
        ("extra_costs_ja", &settings.extra_costs.ja),
        ("extra_costs_en", &settings.extra_costs.en),
        ("delivery_ja", &settings.delivery.ja),
        ("delivery_en", &settings.delivery.en),
        ("cancellation_ja", &settings.cancellation.ja),
        ("cancellation_en", &settings.cancellation.en),
    ];
    for (name, value) in rows {
        println!("{name}\t{value}");
    }
    let missing = settings.missing();
    if missing.is_empty() {
        println!("complete: campaigns and salons may go live");
    } else {
        println!("missing\t{}", missing.join(", "));
    }
}

pub async fn run(db: &Db, args: SettingsArgs) -> anyhow::Result<()> {
    let org = ledger::organisation_by_slug(db, &args.org)
        .await?
        .with_context(|| format!("no organisation {:?}", args.org))?;
    let (changed, update) = args.update()?;
    let settings = if changed {
        seller::update(db, org.id, &update).await.map_err(|e| {
            let (_, _, _, message) = crate::seller_errors::explain(&e, Tr(Locale::En));
            anyhow::anyhow!("{message}")
        })?
    } else {
        seller::settings(db, org.id).await?
    };
    print(&settings);
    Ok(())
}
