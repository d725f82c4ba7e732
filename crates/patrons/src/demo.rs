//! The demonstration salon `kanpa serve --demo` seeds once, in the demo
//! salon organisation: three tiers and about sixty-five fictional patrons
//! with a year of monthly payments. Seeding again finds it and does
//! nothing.
//!
//! The history goes through the same posting as a paid invoice
//! ([`events::post_payment`], keyed by the charge), so the roster, MRR and
//! churn and the fund agree. Every Stripe id is a sandbox id, and each live
//! subscription is reported to the inbox as the sandbox reports its own, so
//! the sandbox gateway can cancel, pause and resume demo patrons.
//!
//! The sandbox processor keeps the same history on its side: each payment
//! is recorded as the sandbox records its own (so it can be refunded), and
//! the sandbox pays out twice, about five weeks and one week ago, so
//! reconciling the demo against the sandbox ties out to the yen.

use kanpa_ledger::store as ledger;
use kanpa_ledger::{Currency, Db, LedgerError, Locale, Money, Timestamp, Tx, on_tx};
use kanpa_messaging::inbox::{self, IncomingEvent, Via};
use kanpa_payments::Collected;
use kanpa_payments::sandbox::sandbox_fee;
use serde_json::json;
use time::Duration;

use crate::error::PatronError;
use crate::model::{MembershipStatus, SalonStatus, Tier};
use crate::store::{self, PostInput, SalonInput, TierInput};
use crate::{Membership, events};

/// The organisation the campaigns demo opens for the salon.
pub const DEMO_SALON_ORG: &str = "salon-demo";
pub const DEMO_SALON: &str = "kenko-salon";

const NAMES: [&str; 65] = [
    "Aoi", "Haruto", "Yui", "Sota", "Hina", "Riku", "Mei", "Yuto", "Sakura", "Kaito", "Rin", "Hayato", "Mio", "Ren",
    "Saki", "Daiki", "Nanami", "Kenta", "Airi", "Takumi", "Yuna", "Shota", "Kokoro", "Ryota", "Akari", "Yuki", "Hana",
    "Sora", "Miyu", "Kazuki", "Ayaka", "Naoki", "Emi", "Tsubasa", "Chihiro", "Haruka", "Kenji", "Misaki", "Yusuke",
    "Honoka", "Taiga", "Kaede", "Shun", "Nozomi", "Itsuki", "Asuka", "Minato", "Ririka", "Koki", "Wakana", "Hiroto",
    "Kanon", "Yamato", "Shiori", "Arata", "Fuka", "Eita", "Madoka", "Tomoya", "Sayaka", "Genki", "Natsumi", "Kohei",
    "Maho", "Jun",
];

/// What became of a demo patron: months paid, and the status now.
fn story(n: usize) -> (i64, MembershipStatus) {
    // Joined between one and twelve months ago, spread evenly.
    let months = 1 + ((n * 7) % 12) as i64;
    let status = match n {
        _ if n % 11 == 9 => MembershipStatus::Ended,
        _ if n % 13 == 5 => MembershipStatus::Canceling,
        _ if n % 17 == 3 => MembershipStatus::PastDue,
        _ if n % 19 == 7 => MembershipStatus::Paused,
        _ => MembershipStatus::Active,
    };
    (months, status)
}

/// Seeds the demo salon if it is not there yet. Returns true if it seeded.
pub async fn seed(db: &Db, now: Timestamp) -> Result<bool, PatronError> {
    if store::salon_by_slug(db, DEMO_SALON).await.is_ok() {
        return Ok(false);
    }
    let org = match ledger::organisation_by_slug(db, DEMO_SALON_ORG).await? {
        Some(org) => org,
        None => {
            let mut tx = db.begin().await?;
            match ledger::create_organisation(&mut tx, DEMO_SALON_ORG, "オンラインサロン(デモ)").await {
                Ok(org) => {
                    tx.commit().await?;
                    org
                }
                Err(LedgerError::DuplicateOrganisation(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let input = SalonInput {
        slug: DEMO_SALON.into(),
        name_ja: "からだとこころの健康サロン(デモ)".into(),
        name_en: "Body and mind health salon (demo)".into(),
        description_ja: "医療職の仲間と、毎月の勉強会・相談会・コラムで健康を学ぶオンラインサロンです。".into(),
        description_en: "An online salon where healthcare professionals share monthly study sessions, \
                         consultations and columns."
            .into(),
        currency: "JPY".into(),
        contact_email: "salon@salon-demo.example.jp".into(),
        ..SalonInput::default()
    };
    let salon = match store::create_salon(db, org.id, &input).await {
        Ok(salon) => salon,
        // Another process seeded at the same moment.
        Err(PatronError::SlugTaken) => return Ok(false),
        Err(e) => return Err(e),
    };
    let tiers = [
        (
            "reader",
            "読者",
            "Reader",
            "月1回のコラムと勉強会の録画",
            "A monthly column and study-session recordings",
            500,
            None,
        ),
        (
            "regular",
            "レギュラー",
            "Regular",
            "読者の特典に加え、毎月のオンライン勉強会に参加",
            "Everything for readers, and the monthly live study session",
            1_500,
            None,
        ),
        (
            "inner",
            "インナー",
            "Inner circle",
            "レギュラーの特典に加え、少人数の個別相談会(定員20名)",
            "Everything for regulars, and small-group consultations (20 seats)",
            5_000,
            Some(20),
        ),
    ];
    let mut added: Vec<Tier> = Vec::new();
    for (position, (slug, name_ja, name_en, benefits_ja, benefits_en, price, seats)) in tiers.into_iter().enumerate() {
        let tier = TierInput {
            slug: slug.into(),
            name_ja: name_ja.into(),
            name_en: name_en.into(),
            benefits_ja: benefits_ja.into(),
            benefits_en: benefits_en.into(),
            monthly_price: price,
            seat_limit: seats,
            position: Some(position as i32 + 1),
        };
        added.push(store::add_tier(db, salon.id, &tier).await?);
    }
    let post = PostInput {
        title_ja: "今月の勉強会の録画".into(),
        title_en: "This month's study session, recorded".into(),
        body_ja: "睡眠と食事のリズムについて、看護師と管理栄養士が話しました。".into(),
        body_en: "A nurse and a dietitian on the rhythm of sleep and meals.".into(),
        link_url: Some("https://example.jp/salon/recording".into()),
    };
    store::add_post(db, salon.id, &post).await?;
    // The legal disclosure must be complete before the salon opens.
    let seller = kanpa_payments::seller::settings(db, org.id).await?;
    if !seller.missing().is_empty() {
        kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("オンラインサロン(デモ)"))
            .await?;
    }
    let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await?;

    for (n, name) in NAMES.iter().enumerate() {
        let tier = &added[match n % 10 {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        }];
        let mut tx = db.begin().await?;
        seed_patron(&mut tx, &salon.slug, salon.id, tier, n, name, now).await?;
        tx.commit().await?;
    }
    // The sandbox pays out what it held, as Stripe would on its schedule.
    for (n, days_ago) in [(1, 37), (2, 7)] {
        let until = now.saturating_add(Duration::days(-days_ago));
        kanpa_payments::sandbox::pay_out(db, Currency::Jpy, until, &format!("demo:payout:{n}")).await.map_err(|e| {
            match e {
                kanpa_payments::balance::BalanceError::Database(e) => PatronError::Database(e),
                other => PatronError::Gateway(kanpa_payments::GatewayError::Transient(other.to_string())),
            }
        })?;
    }
    tracing::info!(salon = DEMO_SALON, "demo salon seeded");
    Ok(true)
}

fn month(at: Timestamp, k: i64) -> Timestamp {
    at.saturating_add(Duration::days(30 * k))
}

async fn seed_patron(
    tx: &mut Tx,
    salon_slug: &str,
    salon_id: i64,
    tier: &Tier,
    n: usize,
    name: &str,
    now: Timestamp,
) -> Result<(), PatronError> {
    let (months, status) = story(n);
    let since = now.saturating_add(Duration::days(-30 * months - (n % 28) as i64));
    // Months of payments: an ended patron stopped a while ago, a past-due
    // one's last renewal failed, a paused one stopped being charged.
    let paid = match status {
        MembershipStatus::Ended | MembershipStatus::Paused => (months / 2).max(1),
        MembershipStatus::PastDue => months.max(1),
        _ => months + 1,
    };
    let public_id = format!("demo{n:020}");
    let suffix = format!("demo{n:04}");
    let (customer, subscription) = (format!("cus_sandbox_{suffix}"), format!("sub_sandbox_{suffix}"));
    let period_end = month(since, paid);
    let ended_at = (status == MembershipStatus::Ended).then_some(period_end);
    let cancel_at = (status == MembershipStatus::Canceling).then_some(period_end);
    let paused_until = (status == MembershipStatus::Paused).then(|| now.saturating_add(Duration::days(20)));
    let past_due_since = (status == MembershipStatus::PastDue).then(|| month(since, paid));
    let locale = if n % 4 == 3 { Locale::En } else { Locale::Ja };
    let price = format!("price_sandbox_demo_{}", tier.slug);
    if status.holds_seat() {
        store::claim_seat(tx, tier.id).await?;
    }
    let sql = "INSERT INTO memberships (public_id, salon_id, tier_id, email, locale, amount, stripe_price_id,
                   stripe_customer_id, stripe_subscription_id, status, current_period_end, cancel_at, paused_until,
                   past_due_since, since, ended_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15, $15)";
    on_tx!(tx, c => sqlx::query(sql).bind(&public_id).bind(salon_id).bind(tier.id)
        .bind(format!("{}{n}@example.jp", name.to_lowercase())).bind(locale.as_str()).bind(tier.monthly_price)
        .bind(&price).bind(&customer).bind(&subscription).bind(status.as_str()).bind(period_end).bind(cancel_at)
        .bind(paused_until).bind(past_due_since).bind(since).bind(ended_at).execute(c).await?.rows_affected());
    let membership = store::membership_in(tx, &public_id).await?.ok_or(PatronError::NotFound("membership"))?;
    for k in 0..paid {
        let at = month(since, k);
        let invoice = format!("in_sandbox_{suffix}m{k:02}");
        record_invoice(tx, &membership, &invoice, "paid", at).await?;
        let gross = Money::new(tier.monthly_price, Currency::Jpy);
        let collected = Collected {
            payment_intent: format!("pi_sandbox_{suffix}m{k:02}"),
            charge: format!("ch_sandbox_{suffix}m{k:02}"),
            balance_transaction: Some(format!("txn_sandbox_{suffix}m{k:02}")),
            gross,
            fee: sandbox_fee(gross),
            created: at,
        };
        events::post_payment(tx, &membership, &invoice, &collected).await?;
        kanpa_payments::sandbox::record_payment(tx, &collected.payment_intent, &membership.public_id, gross, at)
            .await?;
    }
    if status == MembershipStatus::PastDue {
        record_invoice(tx, &membership, &format!("in_sandbox_{suffix}m{paid:02}"), "failed", month(since, paid))
            .await?;
    }
    if status != MembershipStatus::Ended {
        report_subscription(tx, &membership, salon_slug, &price, status, period_end, now).await?;
    }
    Ok(())
}

async fn record_invoice(
    tx: &mut Tx,
    membership: &Membership,
    invoice: &str,
    status: &str,
    at: Timestamp,
) -> Result<(), PatronError> {
    let sql = "INSERT INTO membership_invoices (membership_id, stripe_invoice_id, stripe_payment_intent_id, status,
                   amount_due, period_start, period_end, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6)";
    let intent = invoice.replace("in_", "pi_");
    on_tx!(tx, c => sqlx::query(sql).bind(membership.id).bind(invoice).bind(&intent).bind(status)
        .bind(membership.amount).bind(at).bind(month(at, 1)).execute(c).await?.rows_affected());
    Ok(())
}

/// Tells the inbox about a live demo subscription in the shape the sandbox
/// reports its own, so the sandbox can change it later.
async fn report_subscription(
    tx: &mut Tx,
    membership: &Membership,
    salon_slug: &str,
    price: &str,
    status: MembershipStatus,
    period_end: Timestamp,
    now: Timestamp,
) -> Result<(), PatronError> {
    let id = membership.stripe_subscription_id.clone().unwrap_or_default();
    let stripe_status = match status {
        MembershipStatus::PastDue => "past_due",
        _ => "active",
    };
    let start = membership.since.unwrap_or(now).unix_seconds();
    let meta = json!({ "kanpa_kind": "membership", "kanpa_ref": membership.public_id, "salon": salon_slug });
    let subscription = json!({
        "id": id, "object": "subscription", "status": stripe_status, "customer": membership.stripe_customer_id,
        "metadata": meta, "currency": "jpy", "created": start, "start_date": start,
        "cancel_at_period_end": status == MembershipStatus::Canceling, "cancel_at": null, "canceled_at": null,
        "ended_at": null,
        "pause_collection": if status == MembershipStatus::Paused {
            json!({ "behavior": "void", "resumes_at": membership.paused_until.map(Timestamp::unix_seconds) })
        } else { json!(null) },
        "livemode": false,
        "items": { "object": "list", "data": [{
            "id": id.replace("sub_", "si_"), "object": "subscription_item", "quantity": 1,
            "current_period_start": month(period_end, -1).unix_seconds(),
            "current_period_end": period_end.unix_seconds(),
            "price": { "id": price, "object": "price", "unit_amount": membership.amount, "currency": "jpy",
                       "recurring": { "interval": "month", "interval_count": 1 }, "type": "recurring" },
        }] },
    });
    let event = json!({
        "id": format!("evt_sandbox_{}", membership.public_id), "object": "event",
        "type": "customer.subscription.updated", "created": now.unix_seconds(), "livemode": false,
        "api_version": "2025-09-30.clover", "pending_webhooks": 0,
        "request": { "id": null, "idempotency_key": null }, "data": { "object": subscription },
    });
    let incoming = IncomingEvent::from_json(&event.to_string())
        .map_err(|e| PatronError::Database(sqlx::Error::Protocol(e.to_string())))?;
    inbox::store(tx, &incoming, Via::Webhook).await?;
    Ok(())
}
