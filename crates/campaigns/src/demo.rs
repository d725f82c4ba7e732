//! The demonstration data `kanpa serve --demo` seeds once: the
//! seven-profession licence drive with fictional supporters, and an
//! organisation for the salon. Seeding again finds it and does nothing.
//!
//! Demo supporters' cards are sandbox cards, so the drive can be settled in
//! the sandbox too.

use kanpa_ledger::store as ledger;
use kanpa_ledger::{Db, LedgerError, Timestamp, on_tx};

use crate::error::CampaignError;
use crate::model::PledgeStatus;
use crate::pledge::change_status;
use crate::store::{self, CampaignInput, RewardInput, TeamInput};

pub const DEMO_ORG: &str = "iryo-rengo";
pub const DEMO_CAMPAIGN: &str = "licence-drive-2026";
pub const SALON_ORG: &str = "salon-demo";

const TEAMS: [(&str, &str, &str); 7] = [
    ("nurses", "看護師", "Nurses"),
    ("pharmacists", "薬剤師", "Pharmacists"),
    ("physiotherapists", "理学療法士", "Physiotherapists"),
    ("occupational-therapists", "作業療法士", "Occupational therapists"),
    ("lab-technicians", "臨床検査技師", "Clinical laboratory technicians"),
    ("radiographers", "診療放射線技師", "Radiographers"),
    ("dietitians", "管理栄養士", "Dietitians"),
];

/// (display name, team index or none for the pool, amount, message)
const SUPPORTERS: [(&str, Option<usize>, i64, &str); 16] = [
    ("さくら", Some(0), 10_000, "夜勤明けの皆さんを応援しています!"),
    ("", Some(0), 5_000, ""),
    ("Kenta", Some(1), 30_000, "Good luck to every pharmacist."),
    ("みどり薬局スタッフ一同", Some(1), 50_000, "地域のためにがんばりましょう。"),
    ("たける", Some(2), 3_000, "リハビリでお世話になりました。"),
    ("", Some(3), 8_000, ""),
    ("はるか", Some(4), 12_000, "検査室から応援!"),
    ("Alex", Some(5), 20_000, ""),
    ("ひなた", Some(6), 7_000, "食事指導に感謝しています。"),
    ("そら", None, 100_000, "7職種みんなに。"),
    ("", None, 15_000, ""),
    ("ゆい", Some(0), 4_000, "母が看護師です。"),
    ("Mika", Some(2), 9_000, "Thank you for helping my father walk again."),
    ("つばさ", Some(5), 6_000, ""),
    ("あおい", Some(6), 25_000, "健康は食事から!"),
    ("こはる", None, 3_500, "少しですが。"),
];

/// Seeds the demo if it is not there yet. Returns true if it seeded.
pub async fn seed(db: &Db, now: Timestamp) -> Result<bool, CampaignError> {
    if ledger::organisation_by_slug(db, DEMO_ORG).await?.is_some() {
        return Ok(false);
    }
    let mut tx = db.begin().await?;
    let org = match ledger::create_organisation(&mut tx, DEMO_ORG, "医療職連合(デモ)").await {
        Ok(org) => org,
        // Another process seeded at the same moment.
        Err(LedgerError::DuplicateOrganisation(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if ledger::organisation_by_slug(db, SALON_ORG).await?.is_none() {
        ledger::create_organisation(&mut tx, SALON_ORG, "オンラインサロン(デモ)").await?;
    }
    tx.commit().await?;

    let rfc = |t: Timestamp| {
        t.as_offset()
            .to_offset(time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let input = CampaignInput {
        slug: DEMO_CAMPAIGN.into(),
        title_ja: "7職種 免許更新応援キャンペーン 2026".into(),
        title_en: "Seven professions, one licence drive 2026".into(),
        story_ja: "医療を支える7つの職種が、それぞれの免許・研修費用 50万円を集めます。\n\n\
                   チームを選んで応援することも、全体を応援することもできます。全体への支援は締切後にルールに沿って各チームへ分配します。\n\n\
                   目標額(350万円)に届いた場合だけ、締切後にカードへ請求します。"
            .into(),
        story_en: "Seven professions that keep healthcare running are each raising ¥500,000 for their licence and \
                   training fees.\n\nSupport one team, or the whole drive: money for the whole drive is shared among \
                   the teams after the deadline.\n\nCards are charged after the deadline only if the ¥3,500,000 goal \
                   is reached."
            .into(),
        currency: "JPY".into(),
        goal: 3_500_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-7))),
        deadline: rfc(now.saturating_add(time::Duration::days(30))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "all_or_nothing".into(),
        pool_rule: "equal".into(),
        contact_email: "organisers@iryo-rengo.example".into(),
    };
    let campaign = store::create_campaign(db, org.id, &input).await?;
    let mut teams = Vec::new();
    for (position, (slug, ja, en)) in TEAMS.iter().enumerate() {
        let team = TeamInput {
            slug: (*slug).into(),
            name_ja: (*ja).into(),
            name_en: (*en).into(),
            goal: 500_000,
            position: Some(position as i32 + 1),
            pool_weight: 1,
        };
        teams.push(store::add_team(db, campaign.id, &team).await?);
    }
    let rewards = [
        RewardInput {
            title_ja: "お礼のメール".into(),
            title_en: "A thank-you email".into(),
            description_ja: "チームから心を込めたお礼をお送りします。".into(),
            description_en: "A heartfelt thank-you from the team.".into(),
            min_amount: 3_000,
            ..RewardInput::default()
        },
        RewardInput {
            title_ja: "オンライン報告会へのご招待".into(),
            title_en: "An invitation to the online report".into(),
            description_ja: "締切後の報告会(オンライン)にご招待します。".into(),
            description_en: "Join the online report meeting after the deadline.".into(),
            min_amount: 10_000,
            quantity: Some(50),
            ..RewardInput::default()
        },
        RewardInput {
            title_ja: "看護師チーム 記念ワッペン".into(),
            title_en: "Nurses team commemorative patch".into(),
            description_ja: "看護師チームを支援した方だけの限定ワッペン。".into(),
            description_en: "A patch only for supporters of the nurses team.".into(),
            min_amount: 5_000,
            quantity: Some(100),
            team: Some("nurses".into()),
            ..RewardInput::default()
        },
    ];
    for reward in &rewards {
        store::add_reward(db, campaign.id, reward).await?;
    }
    // The legal disclosure must be complete before the drive is published.
    kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("医療職連合(デモ)")).await?;
    store::publish(db, campaign.id).await?;

    for (n, (name, team, amount, message)) in SUPPORTERS.iter().enumerate() {
        let public_id = format!("demo{n:016}");
        let team_id = team.map(|i| teams[i].id);
        let committed_at = now.saturating_add(time::Duration::hours(-(n as i64) * 7 - 1));
        let mut tx = db.begin().await?;
        let sql = "INSERT INTO pledges (public_id, campaign_id, team_id, amount, currency, email, display_name,
                       anonymous, message, locale, status, customer_id, payment_method_id, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, 'JPY', $5, $6, $7, $8, 'ja', 'pending', $9, $10, $11, $11)";
        let pm = format!("pm_sandbox_demo{n}");
        on_tx!(&mut tx, c => sqlx::query(sql)
            .bind(&public_id).bind(campaign.id).bind(team_id).bind(amount)
            .bind(format!("supporter{n}@example.jp")).bind(*name).bind(name.is_empty()).bind(*message)
            .bind(format!("cus_sandbox_demo{n}")).bind(&pm).bind(committed_at)
            .execute(c).await?.rows_affected());
        let card = "INSERT INTO sandbox_payments (id, idempotency_key, kind, reference, behaviour, amount, currency,
                        status, created_at) VALUES ($1, $2, 'payment_method', $3, 'succeeds', 0, 'JPY', 'saved', $4)";
        on_tx!(&mut tx, c => sqlx::query(card).bind(&pm).bind(format!("demo:{pm}")).bind(&public_id).bind(committed_at)
            .execute(c).await?.rows_affected());
        let pledge = store::pledge_in(&mut tx, &public_id).await?.ok_or(CampaignError::NotFound("pledge"))?;
        change_status(&mut tx, &pledge, PledgeStatus::Committed).await?;
        let backdate = "UPDATE pledges SET committed_at = $1 WHERE id = $2";
        on_tx!(&mut tx, c => sqlx::query(backdate).bind(committed_at).bind(pledge.id).execute(c).await?.rows_affected());
        tx.commit().await?;
    }
    tracing::info!(campaign = DEMO_CAMPAIGN, "demo data seeded");
    Ok(true)
}
