//! Emails as values: addresses, the templates we send, and rendering them
//! into a MIME message with plain-text and HTML parts.
//!
//! Nothing here sends; see `mailer` and `outbox`.

use askama::Template;
use kanpa_ledger::Locale;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};

/// A syntactically plausible email address: one `@`, no spaces or control
/// characters, at most 254 bytes. Whether it exists is the SMTP server's call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("not an email address")]
    InvalidAddress,
    #[error("names and subjects may not contain line breaks or control characters")]
    ControlCharacters,
    #[error("the {0} template could not be rendered: {1}")]
    Render(&'static str, String),
    #[error("the message could not be built: {0}")]
    Build(String),
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<EmailAddress, EmailError> {
        let address = input.trim();
        let valid = address.len() <= 254
            && address.split('@').count() == 2
            && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
            && address.parse::<lettre::Address>().is_ok();
        if valid { Ok(EmailAddress(address.to_owned())) } else { Err(EmailError::InvalidAddress) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(a: EmailAddress) -> String {
        a.0
    }
}

/// Refuses CR, LF and other control characters in text that becomes a
/// header (names, subjects): they are how header injection starts.
pub fn header_safe(text: &str) -> Result<&str, EmailError> {
    if text.chars().any(char::is_control) { Err(EmailError::ControlCharacters) } else { Ok(text) }
}

/// Every email kanpa sends, with the data it needs. Stored as JSON in the
/// outbox row (`template` + `data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", content = "data", rename_all = "snake_case")]
pub enum EmailTemplate {
    /// A single-use sign-in link.
    SignInLink { link: String, expires_in_minutes: u32 },
    /// A person is invited to an organisation's console: who invited them,
    /// to which organisation, with which role (and team, for a treasurer
    /// limited to one), and the one-time link with when it expires. The role
    /// and team arrive in the email's language.
    StaffInvitation {
        inviter: String,
        organisation: String,
        role: String,
        team: Option<String>,
        link: String,
        /// "2026-11-24 09:30 (JST)".
        expires_at: String,
        expires_in_hours: u32,
    },
    /// `kanpa mail test`.
    TestMessage { sent_from: String },
    /// A pledge was made (card saved, paid, or a konbini voucher issued).
    PledgeConfirmed {
        campaign: String,
        amount: String,
        team: String,
        reward: Option<String>,
        timing: PledgeTiming,
        deadline: String,
        manage_link: String,
    },
    /// Money was taken. `receipt_link` is the receipt page (empty in rows
    /// written before receipts had pages: the action then opens "my pledges").
    PaymentReceipt {
        campaign: String,
        amount: String,
        team: String,
        paid_on: String,
        manage_link: String,
        #[serde(default)]
        receipt_number: String,
        #[serde(default)]
        receipt_link: String,
    },
    /// The charge at the deadline failed; pay on-session before `pay_by`.
    PaymentFailed { campaign: String, amount: String, pay_link: String, pay_by: String, manage_link: String },
    /// Not paid within the window: the pledge is dropped.
    PledgeDropped { campaign: String, amount: String, manage_link: String },
    /// All-or-nothing goal missed: nobody is charged.
    CampaignMissed { campaign: String, goal: String, raised: String, manage_link: String },
    /// The organisers cancelled the drive before any money was taken.
    CampaignCancelled { campaign: String, manage_link: String },
    /// Money returned to the supporter.
    PledgeRefunded { campaign: String, amount: String, manage_link: String },
    /// A salon membership's monthly payment was taken.
    MembershipReceipt {
        salon: String,
        tier: String,
        amount: String,
        paid_on: String,
        manage_link: String,
        #[serde(default)]
        receipt_number: String,
        #[serde(default)]
        receipt_link: String,
    },
    /// A renewal failed; Stripe retries, access is kept until `access_until`.
    MembershipPaymentFailed { salon: String, amount: String, access_until: String, manage_link: String },
    /// Money of a membership payment returned to the patron.
    MembershipRefunded { salon: String, amount: String, manage_link: String },
    /// The bank wants the patron to confirm the payment on `pay_link`.
    MembershipActionRequired { salon: String, amount: String, pay_link: String, manage_link: String },
    /// The organiser moved the patron's tier to its current price, charged
    /// from `starts_on` (the next renewal).
    MembershipPriceChanged {
        salon: String,
        tier: String,
        old_amount: String,
        new_amount: String,
        starts_on: String,
        manage_link: String,
    },
    /// To the organiser, when a campaign settles.
    SettlementReport {
        campaign: String,
        outcome: String,
        collected: String,
        failed: String,
        dropped: String,
        teams: Vec<(String, String)>,
        report_link: String,
    },
}

/// When a pledge's money is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PledgeTiming {
    /// All-or-nothing: charged at the deadline if the goal is met.
    AtDeadline,
    /// Paid now by card.
    Now,
    /// A konbini voucher to pay within a few days.
    Konbini,
}

impl EmailTemplate {
    pub fn name(&self) -> &'static str {
        match self {
            EmailTemplate::SignInLink { .. } => "sign_in_link",
            EmailTemplate::StaffInvitation { .. } => "staff_invitation",
            EmailTemplate::TestMessage { .. } => "test_message",
            EmailTemplate::PledgeConfirmed { .. } => "pledge_confirmed",
            EmailTemplate::PaymentReceipt { .. } => "payment_receipt",
            EmailTemplate::PaymentFailed { .. } => "payment_failed",
            EmailTemplate::PledgeDropped { .. } => "pledge_dropped",
            EmailTemplate::CampaignMissed { .. } => "campaign_missed",
            EmailTemplate::CampaignCancelled { .. } => "campaign_cancelled",
            EmailTemplate::PledgeRefunded { .. } => "pledge_refunded",
            EmailTemplate::SettlementReport { .. } => "settlement_report",
            EmailTemplate::MembershipReceipt { .. } => "membership_receipt",
            EmailTemplate::MembershipPaymentFailed { .. } => "membership_payment_failed",
            EmailTemplate::MembershipRefunded { .. } => "membership_refunded",
            EmailTemplate::MembershipActionRequired { .. } => "membership_action_required",
            EmailTemplate::MembershipPriceChanged { .. } => "membership_price_changed",
        }
    }

    pub fn subject(&self, locale: Locale, site_name: &str) -> String {
        match (self, locale) {
            (EmailTemplate::SignInLink { .. }, Locale::Ja) => format!("{site_name} サインイン用リンク"),
            (EmailTemplate::SignInLink { .. }, Locale::En) => format!("Your {site_name} sign-in link"),
            (EmailTemplate::StaffInvitation { organisation, .. }, Locale::Ja) => {
                format!("{organisation} の{site_name}管理画面への招待")
            }
            (EmailTemplate::StaffInvitation { organisation, .. }, Locale::En) => {
                format!("You are invited to {organisation} on {site_name}")
            }
            (EmailTemplate::TestMessage { .. }, Locale::Ja) => format!("{site_name} テストメール"),
            (EmailTemplate::TestMessage { .. }, Locale::En) => format!("{site_name} test message"),
            (EmailTemplate::PledgeConfirmed { campaign, .. }, Locale::Ja) => {
                format!("ご支援ありがとうございます — {campaign}")
            }
            (EmailTemplate::PledgeConfirmed { campaign, .. }, Locale::En) => {
                format!("Thank you for your pledge — {campaign}")
            }
            (EmailTemplate::PaymentReceipt { campaign, .. }, Locale::Ja) => format!("お支払いの領収 — {campaign}"),
            (EmailTemplate::PaymentReceipt { campaign, .. }, Locale::En) => format!("Payment receipt — {campaign}"),
            (EmailTemplate::PaymentFailed { campaign, .. }, Locale::Ja) => {
                format!("お支払いを完了してください — {campaign}")
            }
            (EmailTemplate::PaymentFailed { campaign, .. }, Locale::En) => {
                format!("Please complete your payment — {campaign}")
            }
            (EmailTemplate::PledgeDropped { campaign, .. }, Locale::Ja) => {
                format!("ご支援を取り消しました — {campaign}")
            }
            (EmailTemplate::PledgeDropped { campaign, .. }, Locale::En) => {
                format!("Your pledge was dropped — {campaign}")
            }
            (EmailTemplate::CampaignMissed { campaign, .. }, Locale::Ja) => {
                format!("目標に届きませんでした(請求はありません) — {campaign}")
            }
            (EmailTemplate::CampaignMissed { campaign, .. }, Locale::En) => {
                format!("The goal was not reached; you will not be charged — {campaign}")
            }
            (EmailTemplate::CampaignCancelled { campaign, .. }, Locale::Ja) => {
                format!("キャンペーンは中止になりました(請求はありません) — {campaign}")
            }
            (EmailTemplate::CampaignCancelled { campaign, .. }, Locale::En) => {
                format!("The campaign was cancelled; you will not be charged — {campaign}")
            }
            (EmailTemplate::PledgeRefunded { campaign, .. }, Locale::Ja) => format!("返金しました — {campaign}"),
            (EmailTemplate::PledgeRefunded { campaign, .. }, Locale::En) => format!("Refund issued — {campaign}"),
            (EmailTemplate::MembershipReceipt { salon, .. }, Locale::Ja) => format!("月会費の領収 — {salon}"),
            (EmailTemplate::MembershipReceipt { salon, .. }, Locale::En) => format!("Membership receipt — {salon}"),
            (EmailTemplate::MembershipPaymentFailed { salon, .. }, Locale::Ja) => {
                format!("月会費のお支払いを確認できませんでした — {salon}")
            }
            (EmailTemplate::MembershipPaymentFailed { salon, .. }, Locale::En) => {
                format!("We could not take your membership payment — {salon}")
            }
            (EmailTemplate::MembershipRefunded { salon, .. }, Locale::Ja) => format!("月会費を返金しました — {salon}"),
            (EmailTemplate::MembershipRefunded { salon, .. }, Locale::En) => {
                format!("Membership payment refunded — {salon}")
            }
            (EmailTemplate::MembershipActionRequired { salon, .. }, Locale::Ja) => {
                format!("お支払いの確認をお願いします — {salon}")
            }
            (EmailTemplate::MembershipActionRequired { salon, .. }, Locale::En) => {
                format!("Please confirm your payment — {salon}")
            }
            (EmailTemplate::MembershipPriceChanged { salon, .. }, Locale::Ja) => {
                format!("月会費の改定のお知らせ — {salon}")
            }
            (EmailTemplate::MembershipPriceChanged { salon, .. }, Locale::En) => {
                format!("Your membership price is changing — {salon}")
            }
            (EmailTemplate::SettlementReport { campaign, .. }, Locale::Ja) => format!("精算レポート — {campaign}"),
            (EmailTemplate::SettlementReport { campaign, .. }, Locale::En) => format!("Settlement report — {campaign}"),
        }
    }
}

macro_rules! email_templates {
    ($($name:ident, $text:ident: $text_path:literal, $html:ident: $html_path:literal { $($field:ident: $ty:ty),* };)*) => {$(
        #[derive(Template)]
        #[template(path = $text_path)]
        struct $text<'a> { lang: &'a str, site_name: &'a str, $($field: $ty),* }

        #[derive(Template)]
        #[template(path = $html_path)]
        struct $html<'a> { lang: &'a str, site_name: &'a str, subject: &'a str, $($field: $ty),* }
    )*};
}

email_templates! {
    SignIn, SignInText: "email/sign_in_link.txt", SignInHtml: "email/sign_in_link.html" { link: &'a str, expires_in_minutes: u32 };
    Test, TestText: "email/test_message.txt", TestHtml: "email/test_message.html" { sent_from: &'a str };
    Notice, NoticeText: "email/notice.txt", NoticeHtml: "email/notice.html" {
        heading: &'a str,
        paragraphs: &'a [String],
        facts: &'a [(String, String)],
        action: Option<(String, String)>,
        manage_link: Option<&'a str>
    };
}

/// The content of an email rendered through the shared notice template.
struct Notice {
    heading: String,
    paragraphs: Vec<String>,
    facts: Vec<(String, String)>,
    action: Option<(String, String)>,
    manage_link: Option<String>,
}

/// The receipt page when there is one; "my pledges" otherwise.
fn receipt_action(t: &dyn Fn(&str, &str) -> String, receipt_link: &str, manage_link: &str) -> (String, String) {
    if receipt_link.is_empty() {
        (t("領収書を見る", "View your receipts"), manage_link.to_owned())
    } else {
        (t("領収書を表示・印刷する", "View and print the receipt"), receipt_link.to_owned())
    }
}

fn fact(label: &str, value: &str) -> (String, String) {
    (label.to_owned(), value.to_owned())
}

/// Words for the notice emails, in one language.
fn notice(template: &EmailTemplate, ja: bool) -> Option<Notice> {
    let t = |j: &str, e: &str| if ja { j.to_owned() } else { e.to_owned() };
    Some(match template {
        EmailTemplate::SignInLink { .. } | EmailTemplate::TestMessage { .. } => return None,
        EmailTemplate::StaffInvitation { inviter, organisation, role, team, link, expires_at, expires_in_hours } => {
            let mut facts = vec![
                fact(&t("招待した人", "Invited by"), inviter),
                fact(&t("団体", "Organisation"), organisation),
                fact(&t("役割", "Role"), role),
            ];
            if let Some(team) = team {
                facts.push(fact(&t("担当チーム", "Team"), team));
            }
            facts.push(fact(&t("リンクの有効期限", "The link expires"), expires_at));
            Notice {
                heading: t("管理画面へのご招待", "An invitation to the console"),
                paragraphs: vec![
                    if ja {
                        format!("{inviter} さんが、あなたを {organisation} の管理画面に招待しました。")
                    } else {
                        format!("{inviter} invited you to the console of {organisation}.")
                    },
                    if ja {
                        format!(
                            "下のボタンから一度だけサインインできます。リンクは{expires_in_hours}時間有効です。サインイン後、パスワードを設定してください。心当たりがない場合は、このメールを無視してください。"
                        )
                    } else {
                        format!(
                            "The button below signs you in once; the link works for {expires_in_hours} hours. Once signed in, set a password. If you did not expect this, ignore this email."
                        )
                    },
                ],
                facts,
                action: Some((t("サインインする", "Sign in"), link.clone())),
                manage_link: None,
            }
        }
        EmailTemplate::PledgeConfirmed { campaign, amount, team, reward, timing, deadline, manage_link } => {
            let when = match (timing, ja) {
                (PledgeTiming::AtDeadline, true) => format!(
                    "カードを登録しました。締切({deadline})までに目標額に達した場合に限り、締切後に請求します。届かなかった場合の請求はありません。"
                ),
                (PledgeTiming::AtDeadline, false) => format!(
                    "Your card is saved. It will be charged after the deadline ({deadline}) only if the goal is reached; otherwise nothing is charged."
                ),
                (PledgeTiming::Now, true) => "お支払いを受け付けました。領収メールを別にお送りします。".to_owned(),
                (PledgeTiming::Now, false) => "Your payment is being processed; a receipt follows in a separate email.".to_owned(),
                (PledgeTiming::Konbini, true) => "コンビニ払いの番号を発行しました。期限までにお支払いください。お支払いの確認後に領収メールをお送りします。".to_owned(),
                (PledgeTiming::Konbini, false) => "Your convenience-store payment slip is issued. Please pay before it expires; a receipt follows once it is paid.".to_owned(),
            };
            let mut facts = vec![
                fact(&t("キャンペーン", "Campaign"), campaign),
                fact(&t("金額", "Amount"), amount),
                fact(&t("支援先", "Supporting"), team),
            ];
            if let Some(reward) = reward {
                facts.push(fact(&t("リターン", "Reward"), reward));
            }
            Notice {
                heading: t("ご支援ありがとうございます", "Thank you for your pledge"),
                paragraphs: vec![when],
                facts,
                action: None,
                manage_link: Some(manage_link.clone()),
            }
        }
        EmailTemplate::PaymentReceipt {
            campaign,
            amount,
            team,
            paid_on,
            manage_link,
            receipt_number,
            receipt_link,
        } => {
            let mut facts = vec![
                fact(&t("キャンペーン", "Campaign"), campaign),
                fact(&t("金額", "Amount"), amount),
                fact(&t("支援先", "Supporting"), team),
                fact(&t("お支払日", "Paid on"), paid_on),
            ];
            if !receipt_number.is_empty() {
                facts.push(fact(&t("領収書番号", "Receipt number"), receipt_number));
            }
            Notice {
                heading: t("お支払いありがとうございました", "Thank you for your payment"),
                paragraphs: vec![t("次の金額をお受け取りしました。", "We have received the following payment.")],
                facts,
                action: Some(receipt_action(&t, receipt_link, manage_link)),
                manage_link: (!receipt_link.is_empty()).then(|| manage_link.clone()),
            }
        }
        EmailTemplate::PaymentFailed { campaign, amount, pay_link, pay_by, manage_link } => Notice {
            heading: t("お支払いを完了できませんでした", "We could not complete your payment"),
            paragraphs: vec![
                t(
                    "目標額に達したため、ご登録のカードに請求しましたが、カード会社に承認されませんでした(または本人認証が必要でした)。",
                    "The goal was reached, so we charged your saved card, but the card issuer declined it (or asked for authentication).",
                ),
                if ja {
                    format!("{pay_by} までに下のボタンからお支払いください。期限を過ぎるとご支援は取り消されます。")
                } else {
                    format!("Please pay with the button below by {pay_by}. After that the pledge is dropped.")
                },
            ],
            facts: vec![fact(&t("キャンペーン", "Campaign"), campaign), fact(&t("金額", "Amount"), amount)],
            action: Some((t("支払う", "Pay now"), pay_link.clone())),
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::PledgeDropped { campaign, amount, manage_link } => Notice {
            heading: t("ご支援を取り消しました", "Your pledge was dropped"),
            paragraphs: vec![t(
                "お支払いの期限を過ぎたため、ご支援を取り消しました。請求はありません。",
                "The payment window has closed, so your pledge was dropped. Nothing was charged.",
            )],
            facts: vec![fact(&t("キャンペーン", "Campaign"), campaign), fact(&t("金額", "Amount"), amount)],
            action: None,
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::CampaignCancelled { campaign, manage_link } => Notice {
            heading: t("キャンペーンは中止になりました", "The campaign was cancelled"),
            paragraphs: vec![t(
                "ご支援ありがとうございました。主催者がキャンペーンを中止したため、どなたにも請求しません。保存されたカードに請求されることはありません。",
                "Thank you for your support. The organisers cancelled the campaign, so nobody will be charged; your saved card will not be used.",
            )],
            facts: vec![fact(&t("キャンペーン", "Campaign"), campaign)],
            action: None,
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::CampaignMissed { campaign, goal, raised, manage_link } => Notice {
            heading: t("目標額に届きませんでした", "The goal was not reached"),
            paragraphs: vec![t(
                "ご支援ありがとうございました。目標額に届かなかったため、どなたにも請求しません。",
                "Thank you for your support. The goal was not reached, so nobody will be charged.",
            )],
            facts: vec![
                fact(&t("キャンペーン", "Campaign"), campaign),
                fact(&t("目標額", "Goal"), goal),
                fact(&t("集まった額", "Pledged"), raised),
            ],
            action: None,
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::PledgeRefunded { campaign, amount, manage_link } => Notice {
            heading: t("返金しました", "Refund issued"),
            paragraphs: vec![t(
                "次の金額をご登録の支払い方法に返金しました。反映まで数日かかることがあります。",
                "We refunded the following amount to your payment method. It can take a few days to appear.",
            )],
            facts: vec![fact(&t("キャンペーン", "Campaign"), campaign), fact(&t("返金額", "Refunded"), amount)],
            action: None,
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::MembershipReceipt {
            salon,
            tier,
            amount,
            paid_on,
            manage_link,
            receipt_number,
            receipt_link,
        } => {
            let mut facts = vec![
                fact(&t("サロン", "Salon"), salon),
                fact(&t("プラン", "Tier"), tier),
                fact(&t("金額", "Amount"), amount),
                fact(&t("お支払日", "Paid on"), paid_on),
            ];
            if !receipt_number.is_empty() {
                facts.push(fact(&t("領収書番号", "Receipt number"), receipt_number));
            }
            Notice {
                heading: t("月会費をお受け取りしました", "Thank you for your membership payment"),
                paragraphs: vec![t(
                    "次の金額をお受け取りしました。プランの変更・一時停止・退会はいつでも会員ページからできます。",
                    "We have received the following payment. You can change, pause or cancel your membership at any time from your page.",
                )],
                facts,
                action: Some(receipt_action(&t, receipt_link, manage_link)),
                manage_link: (!receipt_link.is_empty()).then(|| manage_link.clone()),
            }
        }
        EmailTemplate::MembershipRefunded { salon, amount, manage_link } => Notice {
            heading: t("返金しました", "Refund issued"),
            paragraphs: vec![t(
                "月会費のうち次の金額をご登録の支払い方法に返金しました。反映まで数日かかることがあります。",
                "We refunded the following amount of your membership payment to your payment method. It can take a few days to appear.",
            )],
            facts: vec![fact(&t("サロン", "Salon"), salon), fact(&t("返金額", "Refunded"), amount)],
            action: None,
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::MembershipPaymentFailed { salon, amount, access_until, manage_link } => Notice {
            heading: t("お支払いを確認できませんでした", "We could not take your payment"),
            paragraphs: vec![
                t(
                    "今月の会費をご登録のカードに請求しましたが、カード会社に承認されませんでした。カードの有効期限や利用枠をご確認ください。",
                    "We tried to charge this month's fee to your card, but the card issuer declined it. Please check the card's expiry date and limit.",
                ),
                if ja {
                    format!(
                        "下のボタンからカードを更新していただければ、自動でもう一度請求します。{access_until} までは会員ページを引き続きご覧いただけます。"
                    )
                } else {
                    format!(
                        "Update your card with the button below and we will try again automatically. You keep access to the members' area until {access_until}."
                    )
                },
            ],
            facts: vec![fact(&t("サロン", "Salon"), salon), fact(&t("金額", "Amount"), amount)],
            action: Some((t("カードを更新する", "Update your card"), manage_link.clone())),
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::MembershipActionRequired { salon, amount, pay_link, manage_link } => Notice {
            heading: t("お支払いの確認が必要です", "Your bank asks you to confirm the payment"),
            paragraphs: vec![t(
                "カード会社が本人確認(3Dセキュア)を求めています。下のボタンから確認すると、お支払いが完了します。",
                "Your card issuer wants you to confirm this payment (3-D Secure). Confirm it with the button below to complete the payment.",
            )],
            facts: vec![fact(&t("サロン", "Salon"), salon), fact(&t("金額", "Amount"), amount)],
            action: Some((t("お支払いを確認する", "Confirm the payment"), pay_link.clone())),
            manage_link: Some(manage_link.clone()),
        },
        EmailTemplate::MembershipPriceChanged { salon, tier, old_amount, new_amount, starts_on, manage_link } => {
            Notice {
                heading: t("月会費が改定されます", "Your monthly fee is changing"),
                paragraphs: vec![
                    if ja {
                        format!(
                            "ご利用のプランの月会費を {old_amount} から {new_amount} に改定します。{starts_on} の更新分から新しい金額でご請求します。それまでのご請求は変わりません。"
                        )
                    } else {
                        format!(
                            "The monthly fee of your tier changes from {old_amount} to {new_amount}. You will be charged the new amount from the renewal on {starts_on}; nothing changes before then."
                        )
                    },
                    t(
                        "プランの変更・一時停止・退会はいつでも会員ページからできます。",
                        "You can change, pause or cancel your membership at any time from your page.",
                    ),
                ],
                facts: vec![
                    fact(&t("サロン", "Salon"), salon),
                    fact(&t("プラン", "Tier"), tier),
                    fact(&t("新しい月会費", "New monthly fee"), new_amount),
                    fact(&t("適用開始", "From"), starts_on),
                ],
                action: None,
                manage_link: Some(manage_link.clone()),
            }
        }
        EmailTemplate::SettlementReport { campaign, outcome, collected, failed, dropped, teams, report_link } => {
            let mut facts = vec![
                fact(&t("キャンペーン", "Campaign"), campaign),
                fact(&t("結果", "Outcome"), outcome),
                fact(&t("集金済み", "Collected"), collected),
                fact(&t("支払い待ち", "Awaiting payment"), failed),
                fact(&t("取り消し", "Dropped"), dropped),
            ];
            facts.extend(teams.iter().cloned());
            Notice {
                heading: t("精算レポート", "Settlement report"),
                paragraphs: vec![t(
                    "キャンペーンの精算結果です。チームごとの金額はプール分配後の基金残高です。",
                    "Here is how the campaign settled. Team amounts are fund balances after the pool was shared.",
                )],
                facts,
                action: Some((t("詳しく見る", "See the full report"), report_link.clone())),
                manage_link: None,
            }
        }
    })
}

/// A rendered email: subject and both bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub fn render(template: &EmailTemplate, locale: Locale, site_name: &str) -> Result<Rendered, EmailError> {
    let subject = template.subject(locale, site_name).replace(|c: char| c.is_control(), " ");
    let lang = locale.as_str();
    let err = |e: askama::Error| EmailError::Render(template.name(), e.to_string());
    let (text, html) = match template {
        EmailTemplate::SignInLink { link, expires_in_minutes } => (
            SignInText { lang, site_name, link, expires_in_minutes: *expires_in_minutes }.render().map_err(err)?,
            SignInHtml { lang, site_name, subject: &subject, link, expires_in_minutes: *expires_in_minutes }
                .render()
                .map_err(err)?,
        ),
        EmailTemplate::TestMessage { sent_from } => (
            TestText { lang, site_name, sent_from }.render().map_err(err)?,
            TestHtml { lang, site_name, subject: &subject, sent_from }.render().map_err(err)?,
        ),
        other => {
            let n = notice(other, locale == Locale::Ja)
                .ok_or_else(|| EmailError::Render(template.name(), "no notice text for this template".into()))?;
            let (heading, paragraphs, facts) = (n.heading.as_str(), n.paragraphs.as_slice(), n.facts.as_slice());
            let manage_link = n.manage_link.as_deref();
            (
                NoticeText { lang, site_name, heading, paragraphs, facts, action: n.action.clone(), manage_link }
                    .render()
                    .map_err(err)?,
                NoticeHtml {
                    lang,
                    site_name,
                    subject: &subject,
                    heading,
                    paragraphs,
                    facts,
                    action: n.action,
                    manage_link,
                }
                .render()
                .map_err(err)?,
            )
        }
    };
    Ok(Rendered { subject, text, html })
}

/// The stable Message-ID of an outbox row: derived from its idempotency
/// key, so a resend after a crash carries the same id and can be recognised.
pub fn message_id(idempotency_key: &str, domain: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("<kanpa.{}@{}>", hex::encode(&digest[..16]), domain)
}

/// Builds the MIME message. The subject is RFC 2047-encoded by lettre when
/// it is not ASCII; names are refused if they carry control characters.
pub fn build_message(
    from: &Mailbox,
    to: &EmailAddress,
    to_name: Option<&str>,
    message_id: &str,
    rendered: &Rendered,
) -> Result<Message, EmailError> {
    let name = to_name.map(header_safe).transpose()?.map(str::to_owned);
    let address = to.as_str().parse::<lettre::Address>().map_err(|_| EmailError::InvalidAddress)?;
    header_safe(&rendered.subject)?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(name, address))
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(body(&rendered.text)))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(body(&rendered.html))),
        )
        .map_err(|e| EmailError::Build(e.to_string()))
}

/// A body part's text, encoded for transport. Text with any non-ASCII
/// character (every Japanese email, and English ones with a ¥) is sent as
/// base64: quoted-printable would triple each byte of Japanese text and
/// takes several times longer to write. ASCII text gets lettre's choice.
fn body(text: &str) -> lettre::message::Body {
    if text.is_ascii() {
        lettre::message::Body::new(text.to_owned())
    } else {
        lettre::message::Body::new_with_encoding(
            text.to_owned(),
            lettre::message::header::ContentTransferEncoding::Base64,
        )
        .unwrap_or_else(|_| lettre::message::Body::new(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(EmailAddress::parse("hanako@example.jp").is_ok());
        for bad in ["", "no-at", "a@b@c", "a b@example.jp", "x@example.jp\r\nBcc: y@example.jp", "<a@b.jp>"] {
            assert_eq!(EmailAddress::parse(bad), Err(EmailError::InvalidAddress), "{bad:?}");
        }
    }

    #[test]
    fn both_languages_render_with_the_link() {
        let template = EmailTemplate::SignInLink { link: "https://kanpa.example/s/abc".into(), expires_in_minutes: 15 };
        let ja = render(&template, Locale::Ja, "kanpa").unwrap();
        assert!(ja.subject.contains("サインイン"));
        assert!(ja.text.contains("https://kanpa.example/s/abc") && ja.text.contains("15 分"));
        assert!(ja.html.contains(r#"lang="ja""#) && ja.html.contains("https://kanpa.example/s/abc"));
        let en = render(&template, Locale::En, "kanpa").unwrap();
        assert!(en.subject.contains("sign-in link") && en.text.contains("15 minutes"));
    }

    #[test]
    fn membership_emails_render_in_both_languages_with_the_patrons_page() {
        let link = "https://kanpa.example/me".to_owned();
        let templates = [
            EmailTemplate::MembershipReceipt {
                salon: "サロン".into(),
                tier: "インナー".into(),
                amount: "¥5,000".into(),
                paid_on: "2026年5月1日".into(),
                manage_link: link.clone(),
                receipt_number: "00000001".into(),
                receipt_link: format!("{link}/receipts/rc_test"),
            },
            EmailTemplate::MembershipPaymentFailed {
                salon: "サロン".into(),
                amount: "¥5,000".into(),
                access_until: "2026年5月8日".into(),
                manage_link: link.clone(),
            },
            EmailTemplate::MembershipActionRequired {
                salon: "サロン".into(),
                amount: "¥5,000".into(),
                pay_link: "https://invoice.stripe.com/i/x".into(),
                manage_link: link.clone(),
            },
            EmailTemplate::MembershipPriceChanged {
                salon: "サロン".into(),
                tier: "インナー".into(),
                old_amount: "¥4,000".into(),
                new_amount: "¥5,000".into(),
                starts_on: "2026年6月1日".into(),
                manage_link: link.clone(),
            },
            EmailTemplate::MembershipRefunded {
                salon: "サロン".into(),
                amount: "¥5,000".into(),
                manage_link: link.clone(),
            },
        ];
        for template in &templates {
            let ja = render(template, Locale::Ja, "kanpa").unwrap();
            let en = render(template, Locale::En, "kanpa").unwrap();
            assert!(ja.subject.contains("サロン") && en.subject.contains("サロン"), "{}", template.name());
            assert!(ja.text.contains(&link) && en.html.contains(&link), "{}", template.name());
            assert!(ja.text.contains("¥5,000") && en.text.contains("¥5,000"));
            assert_ne!(ja.text, en.text);
        }
        let failed = render(&templates[1], Locale::Ja, "kanpa").unwrap();
        assert!(failed.text.contains("2026年5月8日"), "{}", failed.text);
        let action = render(&templates[2], Locale::En, "kanpa").unwrap();
        assert!(action.text.contains("https://invoice.stripe.com/i/x"));
        let price = render(&templates[3], Locale::Ja, "kanpa").unwrap();
        assert!(price.text.contains("¥4,000") && price.text.contains("2026年6月1日"), "{}", price.text);
        let refunded = render(&templates[4], Locale::En, "kanpa").unwrap();
        assert!(refunded.subject.contains("refunded") && refunded.text.contains("Refunded"), "{}", refunded.text);
    }

    #[test]
    fn an_invitation_names_who_invited_whom_to_what_with_the_link_and_its_expiry_in_both_languages() {
        let template = EmailTemplate::StaffInvitation {
            inviter: "owner@example.jp".into(),
            organisation: "医療職連合".into(),
            role: "会計".into(),
            team: Some("看護師".into()),
            link: "https://kanpa.example/admin/sign-in/tok".into(),
            expires_at: "2026-11-24 09:30 (JST)".into(),
            expires_in_hours: 72,
        };
        let ja = render(&template, Locale::Ja, "kanpa").unwrap();
        assert!(ja.subject.contains("医療職連合") && ja.subject.contains("招待"), "{}", ja.subject);
        for part in ["owner@example.jp", "医療職連合", "会計", "看護師", "https://kanpa.example/admin/sign-in/tok"]
        {
            assert!(ja.text.contains(part) && ja.html.contains(part), "{part}: {}", ja.text);
        }
        assert!(ja.text.contains("2026-11-24 09:30 (JST)") && ja.text.contains("72時間"), "{}", ja.text);
        let en = render(&template, Locale::En, "kanpa").unwrap();
        assert!(en.subject.contains("invited") && en.text.contains("72 hours") && en.text.contains("Invited by"));
        let owner = EmailTemplate::StaffInvitation {
            inviter: "owner@example.jp".into(),
            organisation: "Iryo".into(),
            role: "Owner".into(),
            team: None,
            link: "https://kanpa.example/admin/sign-in/tok".into(),
            expires_at: "2026-11-24 09:30 (JST)".into(),
            expires_in_hours: 72,
        };
        let en = render(&owner, Locale::En, "kanpa").unwrap();
        assert!(!en.text.contains("Team") && en.text.contains("Owner"), "{}", en.text);
    }

    #[test]
    fn html_escapes_data_and_subjects_are_encoded() {
        let template = EmailTemplate::TestMessage { sent_from: "<script>x</script>".into() };
        let rendered = render(&template, Locale::Ja, "kanpa").unwrap();
        assert!(!rendered.html.contains("<script>") && rendered.html.contains("&#60;script&#62;"), "{}", rendered.html);
        let from: Mailbox = "kanpa <noreply@kanpa.invalid>".parse().unwrap();
        let to = EmailAddress::parse("hanako@example.jp").unwrap();
        let message = build_message(&from, &to, Some("山田 花子"), "<id@kanpa.invalid>", &rendered).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.lines().any(|l| l.starts_with("Subject: ") && l.contains("=?utf-8?b?")), "{raw}");
        assert!(raw.contains("Message-ID: <id@kanpa.invalid>"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
    }

    #[test]
    fn header_injection_is_refused() {
        let rendered = render(&EmailTemplate::TestMessage { sent_from: "x".into() }, Locale::En, "kanpa").unwrap();
        let from: Mailbox = "kanpa <noreply@kanpa.invalid>".parse().unwrap();
        let to = EmailAddress::parse("hanako@example.jp").unwrap();
        let injected = build_message(&from, &to, Some("Eve\r\nBcc: all@example.jp"), "<id@x>", &rendered);
        assert_eq!(injected.unwrap_err(), EmailError::ControlCharacters);
        let subject =
            render(&EmailTemplate::TestMessage { sent_from: "x".into() }, Locale::En, "kanpa\r\nBcc: a@b.jp").unwrap();
        assert!(!subject.subject.contains('\n'));
    }

    #[test]
    fn message_ids_are_stable_per_key() {
        assert_eq!(message_id("k1", "kanpa.example"), message_id("k1", "kanpa.example"));
        assert_ne!(message_id("k1", "kanpa.example"), message_id("k2", "kanpa.example"));
        assert!(message_id("k1", "kanpa.example").ends_with("@kanpa.example>"));
    }

    #[test]
    fn japanese_bodies_are_base64_and_ascii_ones_are_not() {
        let from: Mailbox = "kanpa <noreply@kanpa.invalid>".parse().unwrap();
        let to = EmailAddress::parse("hanako@example.jp").unwrap();
        let template = EmailTemplate::SignInLink { link: "https://kanpa.example/s/abc".into(), expires_in_minutes: 15 };
        let parts = |locale: Locale| {
            let rendered = render(&template, locale, "kanpa").unwrap();
            let message = build_message(&from, &to, None, "<m@kanpa.example>", &rendered).unwrap();
            let raw = String::from_utf8(message.formatted()).unwrap();
            (rendered, raw.matches("Content-Transfer-Encoding: base64").count())
        };
        let (ja, encoded) = parts(Locale::Ja);
        assert!(!ja.text.is_ascii());
        assert_eq!(encoded, 2, "the text and the HTML part");
        let (en, encoded) = parts(Locale::En);
        assert!(en.text.is_ascii() && en.html.is_ascii());
        assert_eq!(encoded, 0);
        let sent = String::from_utf8(body(&ja.text).into_vec()).unwrap();
        assert!(!sent.contains("https://kanpa.example/s/abc"), "sent encoded, not as it reads");
    }
}
