//! Tests of the fake Stripe with the real async-stripe client and webhook
//! verifier.

use serde_json::Value;

use super::fixtures::{TEMPLATE_NAMES, template};
use super::*;

const KEY: &str = "sk_test_fake";
const METADATA: &[(&str, &str)] = &[("pledge_id", "7")];

/// Two rustls crypto providers are compiled in (mailin-embedded brings
/// aws-lc-rs); the Stripe client panics unless one is the default.
fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn fake_and_client() -> (FakeStripe, stripe::Client) {
    install_ring();
    let fake = FakeStripe::start().await.expect("start the fake Stripe");
    let client = stripe::ClientBuilder::new(KEY).url(fake.api_base()).build().expect("build the Stripe client");
    (fake, client)
}

/// Parses like async-stripe does; on failure names the top-level fields
/// whose template value would make it parse.
fn parses<T: miniserde::Deserialize>(object: &Value, template_name: &str) -> T {
    if let Ok(parsed) = miniserde::json::from_str::<T>(&object.to_string()) {
        return parsed;
    }
    let original = template(template_name);
    let culprits: Vec<String> = object
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            let mut repaired = object.clone();
            repaired[key.as_str()] = original[key.as_str()].clone();
            miniserde::json::from_str::<T>(&repaired.to_string()).is_ok()
        })
        .map(|(key, _)| key.clone())
        .collect();
    panic!("async-stripe cannot parse this {template_name} (fields at fault: {culprits:?}): {object:#}");
}

#[test]
fn the_fixture_file_has_every_template_and_the_pinned_api_version() {
    for name in TEMPLATE_NAMES {
        assert!(fixture(name).is_ok(), "missing template {name}");
    }
    assert!(fixture("no_such_thing").is_err());
    assert_eq!(API_VERSION, stripe_shared::version::VERSION.as_str());
}

#[test]
fn the_unchanged_fixtures_parse_and_incomplete_objects_do_not() {
    assert!(
        miniserde::json::from_str::<stripe_shared::PaymentIntent>(r#"{"id":"pi_1"}"#).is_err(),
        "the parser must reject incomplete objects for these checks to mean anything"
    );
    parses::<stripe_shared::PaymentIntent>(&template("payment_intent"), "payment_intent");
    parses::<stripe_shared::Invoice>(&template("invoice"), "invoice");
}

#[tokio::test]
async fn every_builder_makes_objects_async_stripe_parses() {
    let fake = FakeStripe::start().await.expect("start");
    parses::<stripe_shared::Customer>(&fake.customer("patron@example.com", METADATA), "customer");
    parses::<stripe_shared::Price>(&fake.price(3000, "jpy", Some("month")), "price");
    parses::<stripe_shared::Price>(&fake.price(3000, "jpy", None), "price");
    for mode in ["payment", "setup", "subscription"] {
        let session = fake.checkout_session(mode, 3000, "jpy", METADATA).expect("checkout session");
        let parsed: stripe_shared::CheckoutSession = parses(&session, "checkout.session");
        assert_eq!(parsed.metadata.as_ref().and_then(|m| m.get("pledge_id")).map(String::as_str), Some("7"));
    }
    for status in [
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
        "canceled",
        "succeeded",
    ] {
        let payment_intent = fake.payment_intent(3000, "jpy", status, METADATA).expect("payment intent");
        let parsed: stripe_shared::PaymentIntent = parses(&payment_intent, "payment_intent");
        assert_eq!(parsed.status.as_str(), status);
    }
    assert!(fake.payment_intent(3000, "jpy", "bogus", METADATA).is_err());
    let charge = fake.charge(3000, "jpy", 1000, METADATA).expect("charge");
    let parsed: stripe_shared::Charge = parses(&charge, "charge");
    assert_eq!(parsed.amount_refunded, 1000);
    assert!(!parsed.refunded);
    for status in ["active", "trialing", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused"]
    {
        let subscription = fake.subscription(3000, "jpy", "month", status, METADATA).expect("subscription");
        parses::<stripe_shared::Subscription>(&subscription, "subscription");
    }
    let subscription = fake.subscription(3000, "jpy", "month", "active", METADATA).expect("subscription");
    let subscription_id = subscription["id"].as_str().expect("id");
    for status in ["draft", "open", "paid", "void", "uncollectible"] {
        for owner in [Some(subscription_id), None] {
            let invoice = fake.invoice(owner, 3000, "jpy", status, METADATA).expect("invoice");
            parses::<stripe_shared::Invoice>(&invoice, "invoice");
        }
    }
    let renewed = fake.renew_subscription(subscription_id).expect("renew");
    parses::<stripe_shared::Invoice>(&renewed, "invoice");
    fake.decline_next("insufficient_funds");
    let failed = fake.renew_subscription(subscription_id).expect("renew");
    assert_eq!(failed["status"], "open");
    parses::<stripe_shared::Invoice>(&failed, "invoice");
    let payout = fake.pay_out("jpy").expect("payout");
    parses::<stripe_shared::Payout>(&payout, "payout");
    for (kind, template_name) in [
        ("refund", "refund"),
        ("balance_transaction", "balance_transaction"),
        ("setup_intent", "setup_intent"),
        ("payment_method", "payment_method"),
        ("charge", "charge"),
        ("payment_intent", "payment_intent"),
        ("subscription", "subscription"),
        ("invoice", "invoice"),
    ] {
        let objects = fake.objects(kind);
        assert!(!objects.is_empty(), "no {kind} was made");
        for object in objects {
            match kind {
                "refund" => drop(parses::<stripe_shared::Refund>(&object, template_name)),
                "balance_transaction" => drop(parses::<stripe_shared::BalanceTransaction>(&object, template_name)),
                "setup_intent" => drop(parses::<stripe_shared::SetupIntent>(&object, template_name)),
                "payment_method" => drop(parses::<stripe_shared::PaymentMethod>(&object, template_name)),
                "charge" => drop(parses::<stripe_shared::Charge>(&object, template_name)),
                "payment_intent" => drop(parses::<stripe_shared::PaymentIntent>(&object, template_name)),
                "subscription" => drop(parses::<stripe_shared::Subscription>(&object, template_name)),
                _ => drop(parses::<stripe_shared::Invoice>(&object, template_name)),
            }
        }
    }
    let event = fake.event("payment_intent.succeeded", fake.objects("payment_intent")[0].clone());
    parses::<stripe_shared::Event>(&event, "event");
}

// ----- the real client against the fake --------------------------------------

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::{ListInvoice, RetrieveInvoice};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, CreateSubscriptionItemsPriceData,
    CreateSubscriptionItemsPriceDataRecurring, CreateSubscriptionItemsPriceDataRecurringInterval, RetrieveSubscription,
    UpdateSubscription,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionLineItemsPriceDataRecurring, CreateCheckoutSessionLineItemsPriceDataRecurringInterval,
    CreateCheckoutSessionPaymentIntentData, ProductData, RetrieveCheckoutSession,
};
use stripe_core::balance_transaction::{ListBalanceTransaction, RetrieveBalanceTransaction};
use stripe_core::customer::{CreateCustomer, RetrieveCustomer, RetrieveCustomerReturned};
use stripe_core::event::{ListEvent, RetrieveEvent};
use stripe_core::payment_intent::{
    ConfirmPaymentIntent, CreatePaymentIntent, CreatePaymentIntentOffSession, RetrievePaymentIntent,
};
use stripe_core::payout::{ListPayout, RetrievePayout};
use stripe_core::refund::{CreateRefund, RetrieveRefund};
use stripe_core::setup_intent::{CreateSetupIntent, RetrieveSetupIntent};
use stripe_shared::{
    ApiErrorsCode, ApiErrorsType, CheckoutSessionMode, CheckoutSessionStatus, PaymentIntentStatus, SubscriptionStatus,
};
use stripe_types::{Currency, RangeQueryTs};

fn pledge_metadata() -> HashMap<String, String> {
    HashMap::from([("pledge_id".to_owned(), "7".to_owned())])
}

fn idempotent(key: &str) -> RequestStrategy {
    RequestStrategy::Idempotent(IdempotencyKey::new(key).expect("a valid idempotency key"))
}

/// The error Stripe reported, with the HTTP status.
fn stripe_error(error: StripeError) -> (Box<stripe_shared::ApiErrors>, u16) {
    match error {
        StripeError::Stripe(error, status) => (error, status),
        other => panic!("expected an error reported by Stripe, got {other:?}"),
    }
}

async fn customer_id(client: &stripe::Client) -> String {
    CreateCustomer::new().email("patron@example.com").send(client).await.expect("create a customer").id.to_string()
}

#[tokio::test]
async fn customers_are_created_and_retrieved() {
    let (fake, client) = fake_and_client().await;
    let created = CreateCustomer::new()
        .email("patron@example.com")
        .name("山田 花子")
        .metadata(pledge_metadata())
        .send(&client)
        .await
        .expect("create a customer");
    assert!(created.id.as_str().starts_with("cus_"));
    assert_eq!(created.email.as_deref(), Some("patron@example.com"));
    assert_eq!(created.name.as_deref(), Some("山田 花子"));
    match RetrieveCustomer::new(created.id.clone()).send(&client).await.expect("retrieve the customer") {
        RetrieveCustomerReturned::Customer(customer) => {
            assert_eq!(customer.id, created.id);
            assert_eq!(customer.metadata.as_ref().map(|m| m["pledge_id"].as_str()), Some("7"));
        }
        RetrieveCustomerReturned::DeletedCustomer(_) => panic!("not deleted"),
    }
    let recorded = fake.requests();
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/v1/customers");
    assert!(recorded[0].params.contains(&("metadata[pledge_id]".to_owned(), "7".to_owned())));
    assert_eq!(recorded[1].method, "GET");
}

/// A load generator's reads answered from its own copy: only the `GET`s
/// the answer knows, after the key check, logged like any other request.
#[tokio::test]
async fn reads_can_be_answered_from_a_kept_copy() {
    let (fake, client) = fake_and_client().await;
    let stored = customer_id(&client).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = {
        let seen = Arc::clone(&seen);
        move |path: &str, expand: &[String]| {
            seen.lock().unwrap().push((path.to_owned(), expand.to_vec()));
            let id = path.strip_prefix("/v1/customers/cus_kept_")?;
            Some(format!(
                r#"{{"id":"cus_kept_{id}","object":"customer","email":"kept-{id}@example.com","created":1,"livemode":false}}"#
            ))
        }
    };
    fake.answer_reads_with(kept);

    let api = &client;
    let retrieve = |id: &str| {
        let request = RetrieveCustomer::new(id.to_owned()).expand(["invoice_settings".to_owned()]);
        async move { request.send(api).await }
    };
    let email = |returned: RetrieveCustomerReturned| match returned {
        RetrieveCustomerReturned::Customer(customer) => customer.email,
        RetrieveCustomerReturned::DeletedCustomer(_) => panic!("not deleted"),
    };
    assert_eq!(email(retrieve("cus_kept_7").await.expect("the kept copy")).as_deref(), Some("kept-7@example.com"));
    // Not known to the answer: rendered from the store.
    assert_eq!(email(retrieve(&stored).await.expect("the stored customer")).as_deref(), Some("patron@example.com"));
    let (_, status) = stripe_error(retrieve("cus_nosuchthing").await.expect_err("neither kept nor stored"));
    assert_eq!(status, 404);
    // Writes are never answered from the copy.
    CreateCustomer::new().email("second@example.com").send(&client).await.expect("create");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "asked for the three reads only: {seen:?}");
    assert_eq!(seen[0], ("/v1/customers/cus_kept_7".to_owned(), vec!["invoice_settings".to_owned()]));
    let http = reqwest::Client::new();
    let unkeyed = http.get(format!("{}v1/customers/cus_kept_7", fake.api_base())).send().await.expect("request");
    assert_eq!(unkeyed.status(), 401, "the key is checked first");
    let logged = fake.requests();
    assert_eq!(logged.iter().filter(|r| r.path == "/v1/customers/cus_kept_7").count(), 2);
}

#[tokio::test]
async fn unknown_ids_are_resource_missing_and_a_missing_key_is_refused() {
    let (fake, client) = fake_and_client().await;
    let error = RetrievePaymentIntent::new("pi_nosuchthing").send(&client).await.expect_err("no such PaymentIntent");
    let (error, status) = stripe_error(error);
    assert_eq!(status, 404);
    assert_eq!(error.type_, ApiErrorsType::InvalidRequestError);
    assert_eq!(error.code, Some(ApiErrorsCode::ResourceMissing));
    assert_eq!(error.message.as_deref(), Some("No such payment_intent: 'pi_nosuchthing'"));

    let http = reqwest::Client::new();
    let response = http.get(format!("{}v1/customers/cus_x", fake.api_base())).send().await.expect("request");
    assert_eq!(response.status(), 401);
    let response =
        http.get(format!("{}v1/no_such_endpoint", fake.api_base())).bearer_auth(KEY).send().await.expect("request");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn checkout_sessions_in_the_three_modes_are_created_and_completed() {
    let (fake, client) = fake_and_client().await;
    let customer = customer_id(&client).await;

    let mut one_off = CreateCheckoutSessionLineItemsPriceData::new(Currency::JPY);
    one_off.unit_amount = Some(3000);
    one_off.product_data = Some(ProductData::new("Pledge: 本の出版"));
    let mut line = CreateCheckoutSessionLineItems::new();
    line.price_data = Some(one_off);
    line.quantity = Some(2);
    let mut payment_intent_data = CreateCheckoutSessionPaymentIntentData::new();
    payment_intent_data.metadata = Some(pledge_metadata());
    let payment = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Payment)
        .line_items(vec![line])
        .metadata(pledge_metadata())
        .payment_intent_data(payment_intent_data)
        .success_url("https://kanpa.example/thanks?session={CHECKOUT_SESSION_ID}")
        .cancel_url("https://kanpa.example/cancel")
        .send(&client)
        .await
        .expect("payment mode session");
    assert!(payment.id.as_str().starts_with("cs_test_"));
    assert_eq!(payment.amount_total, Some(6000));
    assert_eq!(payment.status, Some(CheckoutSessionStatus::Open));
    let url = payment.url.clone().expect("an open session has a URL");
    assert_eq!(url, format!("{}checkout/{}", fake.api_base(), payment.id));

    let setup = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Setup)
        .currency(Currency::JPY)
        .customer(customer.clone())
        .success_url("https://kanpa.example/saved")
        .send(&client)
        .await
        .expect("setup mode session");
    assert_eq!(setup.mode, CheckoutSessionMode::Setup);
    assert_eq!(setup.amount_total, None);

    let mut monthly = CreateCheckoutSessionLineItemsPriceData::new(Currency::JPY);
    monthly.unit_amount = Some(1000);
    monthly.product_data = Some(ProductData::new("Membership"));
    monthly.recurring = Some(CreateCheckoutSessionLineItemsPriceDataRecurring::new(
        CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Month,
    ));
    let mut line = CreateCheckoutSessionLineItems::new();
    line.price_data = Some(monthly);
    line.quantity = Some(1);
    let subscription = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .line_items(vec![line])
        .customer(customer.clone())
        .metadata(pledge_metadata())
        .success_url("https://kanpa.example/member")
        .send(&client)
        .await
        .expect("subscription mode session");
    assert_eq!(subscription.amount_total, Some(1000));

    // A browser paying on the hosted page is sent to the success URL.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("browser");
    let page = browser.get(&url).send().await.expect("checkout page");
    assert_eq!(page.status(), 200);
    let paid = browser.post(format!("{url}/complete")).send().await.expect("pay");
    assert_eq!(paid.status(), 303);
    assert_eq!(paid.headers()["location"], format!("https://kanpa.example/thanks?session={}", payment.id).as_str());
    let payment = RetrieveCheckoutSession::new(payment.id.clone()).send(&client).await.expect("retrieve");
    assert_eq!(payment.status, Some(CheckoutSessionStatus::Complete));
    let payment_intent_id = payment.payment_intent.as_ref().expect("a paid session has a PaymentIntent").id().clone();
    let payment_intent =
        RetrievePaymentIntent::new(payment_intent_id).send(&client).await.expect("retrieve the PaymentIntent");
    assert_eq!(payment_intent.status, PaymentIntentStatus::Succeeded);
    assert_eq!(payment_intent.amount, 6000);
    assert_eq!(payment_intent.metadata["pledge_id"], "7");

    fake.complete_checkout_session(setup.id.as_str()).expect("complete setup");
    let setup = RetrieveCheckoutSession::new(setup.id.clone()).send(&client).await.expect("retrieve");
    let setup_intent = RetrieveSetupIntent::new(setup.setup_intent.expect("a SetupIntent").id().clone())
        .send(&client)
        .await
        .expect("retrieve the SetupIntent");
    assert!(setup_intent.payment_method.is_some());

    let completed = fake.complete_checkout_session(subscription.id.as_str()).expect("complete subscription");
    assert!(fake.complete_checkout_session(subscription.id.as_str()).is_err(), "once only");
    let subscription_id = completed["subscription"].as_str().expect("a subscription");
    let subscription =
        RetrieveSubscription::new(subscription_id).send(&client).await.expect("retrieve the subscription");
    assert_eq!(subscription.status, SubscriptionStatus::Active);
    assert_eq!(subscription.customer.id().as_str(), customer);
}

#[tokio::test]
async fn off_session_payments_succeed_or_are_declined_like_stripe() {
    let (fake, client) = fake_and_client().await;
    let customer = customer_id(&client).await;
    let setup_intent = CreateSetupIntent::new()
        .customer(customer.clone())
        .payment_method("pm_card_visa")
        .confirm(true)
        .send(&client)
        .await
        .expect("save a card");
    let payment_method = setup_intent.payment_method.expect("a saved card").id().to_string();
    let charge = |amount: i64| {
        CreatePaymentIntent::new(amount, Currency::JPY)
            .customer(customer.clone())
            .payment_method(payment_method.clone())
            .off_session(CreatePaymentIntentOffSession::Bool(true))
            .confirm(true)
            .metadata(pledge_metadata())
    };

    let succeeded = charge(3000).send(&client).await.expect("charge");
    assert_eq!(succeeded.status, PaymentIntentStatus::Succeeded);
    assert_eq!(succeeded.amount_received, 3000);
    assert!(succeeded.latest_charge.is_some());
    // Expansion replaces the ids on each path by their objects, and only
    // those: one level, then two.
    let api = &client;
    let expanded = |path: &str| {
        let request = RetrievePaymentIntent::new(succeeded.id.clone()).expand([path.to_owned()]);
        async move { request.send(api).await.expect("retrieve, expanded").latest_charge }
    };
    let one = expanded("latest_charge").await;
    let first = one.as_ref().and_then(|c| c.as_object()).expect("the charge, expanded");
    assert_eq!(first.amount, 3000);
    let fee_id = first.balance_transaction.as_ref().expect("a balance transaction");
    assert!(fee_id.as_object().is_none(), "not asked for, so left an id");
    let two = expanded("latest_charge.balance_transaction").await;
    let second = two.as_ref().and_then(|c| c.as_object()).expect("the charge, expanded");
    assert_eq!(second.id, first.id);
    let balance = second.balance_transaction.as_ref().and_then(|b| b.as_object()).expect("its balance transaction");
    assert_eq!((balance.id.as_str(), balance.amount), (fee_id.id().as_str(), 3000));
    assert!(balance.fee > 0, "the fake takes a fee");

    fake.decline_next("insufficient_funds");
    let (error, status) = stripe_error(charge(3000).send(&client).await.expect_err("declined"));
    assert_eq!(status, 402);
    assert_eq!(error.type_, ApiErrorsType::CardError);
    assert_eq!(error.code, Some(ApiErrorsCode::CardDeclined));
    assert_eq!(error.decline_code.as_deref(), Some("insufficient_funds"));
    assert!(error.charge.is_some(), "an issuer decline leaves a failed charge");
    let declined = error.payment_intent.expect("the PaymentIntent is in the error");
    assert_eq!(declined.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert_eq!(declined.metadata["pledge_id"], "7");
    let retrieved = RetrievePaymentIntent::new(declined.id.clone()).send(&client).await.expect("retrieve");
    assert_eq!(
        retrieved.last_payment_error.and_then(|error| error.decline_code),
        Some("insufficient_funds".to_owned())
    );

    fake.decline_next("authentication_required");
    let (error, status) = stripe_error(charge(3000).send(&client).await.expect_err("needs 3DS"));
    assert_eq!(status, 402);
    assert_eq!(error.code, Some(ApiErrorsCode::AuthenticationRequired));
    let waiting = error.payment_intent.expect("the PaymentIntent is in the error");
    assert_eq!(waiting.status, PaymentIntentStatus::RequiresAction);

    // The customer comes back and confirms with another card.
    let confirmed = ConfirmPaymentIntent::new(waiting.id.clone())
        .payment_method("pm_card_mastercard")
        .send(&client)
        .await
        .expect("confirm again");
    assert_eq!(confirmed.status, PaymentIntentStatus::Succeeded);
    let (error, status) =
        stripe_error(ConfirmPaymentIntent::new(waiting.id).send(&client).await.expect_err("already succeeded"));
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::PaymentIntentUnexpectedState)));
}

#[tokio::test]
async fn refunds_balance_transactions_and_payouts_page_like_stripe() {
    let (fake, client) = fake_and_client().await;
    let mut payment_intents = Vec::new();
    for amount in [1000, 2000, 3000] {
        payment_intents.push(
            CreatePaymentIntent::new(amount, Currency::JPY)
                .payment_method("pm_card_visa")
                .confirm(true)
                .send(&client)
                .await
                .expect("charge"),
        );
    }
    let refund = CreateRefund::new()
        .payment_intent(payment_intents[2].id.to_string())
        .amount(500)
        .send(&client)
        .await
        .expect("refund");
    assert_eq!(refund.amount, 500);
    let refund = RetrieveRefund::new(refund.id.clone()).send(&client).await.expect("retrieve the refund");
    let (error, status) = stripe_error(
        CreateRefund::new()
            .payment_intent(payment_intents[2].id.to_string())
            .amount(2600)
            .send(&client)
            .await
            .expect_err("more than is left"),
    );
    assert_eq!((status, error.code), (400, Some(ApiErrorsCode::AmountTooLarge)));

    // Three charges and a refund, newest first, two to a page.
    let first_page = ListBalanceTransaction::new().limit(2).send(&client).await.expect("list");
    assert!(first_page.has_more);
    assert_eq!(first_page.url, "/v1/balance_transactions");
    let kinds: Vec<&str> = first_page.data.iter().map(|t| t.type_.as_str()).collect();
    assert_eq!(kinds, ["refund", "charge"]);
    assert_eq!(first_page.data[0].amount, -500);
    assert_eq!(first_page.data[1].fee, 108, "3.6 % of ¥3,000");
    let second_page = ListBalanceTransaction::new()
        .limit(2)
        .starting_after(first_page.data[1].id.to_string())
        .send(&client)
        .await
        .expect("list");
    assert!(!second_page.has_more);
    assert_eq!(second_page.data.iter().map(|t| t.amount).collect::<Vec<_>>(), [2000, 1000]);
    let all: Vec<_> =
        ListBalanceTransaction::new().limit(1).paginate().stream(&client).try_collect().await.expect("paginate");
    assert_eq!(all.len(), 4);
    let one = RetrieveBalanceTransaction::new(refund.balance_transaction.expect("a refund transaction").id().clone())
        .send(&client)
        .await
        .expect("retrieve");
    assert_eq!(one.amount, -500);

    let payout = fake.pay_out("jpy").expect("pay out");
    let net: i64 = all.iter().map(|t| t.net).sum();
    assert_eq!(payout["amount"], net);
    let paid_out = ListBalanceTransaction::new()
        .payout(payout["id"].as_str().expect("id"))
        .limit(100)
        .send(&client)
        .await
        .expect("list the payout's transactions");
    assert_eq!(paid_out.data.len(), 5, "the four transactions and the payout's own");
    assert_eq!(paid_out.data.iter().map(|t| t.net).sum::<i64>(), 0);
    assert!(fake.pay_out("jpy").is_err(), "nothing left to pay out");

    CreatePaymentIntent::new(5000, Currency::JPY)
        .payment_method("pm_card_visa")
        .confirm(true)
        .send(&client)
        .await
        .expect("charge");
    fake.pay_out("jpy").expect("second payout");
    let payouts = ListPayout::new().limit(1).send(&client).await.expect("list payouts");
    assert!(payouts.has_more);
    assert_eq!(payouts.data[0].amount, 5000 - 180);
    let first = RetrievePayout::new(payout["id"].as_str().expect("id")).send(&client).await.expect("retrieve");
    assert_eq!(first.amount, net);
}

#[tokio::test]
async fn events_list_newest_first_with_a_created_filter_and_pages() {
    let (fake, client) = fake_and_client().await;
    let object = fake.payment_intent(3000, "jpy", "succeeded", METADATA).expect("PaymentIntent");
    let base = 1_800_000_000;
    // Built out of order on purpose.
    for (offset, event_type) in [
        (2, "payment_intent.succeeded"),
        (0, "payment_intent.created"),
        (3, "charge.succeeded"),
        (1, "payment_intent.processing"),
    ] {
        fake.event_at(event_type, object.clone(), base + offset);
    }
    let page = ListEvent::new().limit(2).send(&client).await.expect("list");
    let types: Vec<&str> = page.data.iter().map(|e| e.type_.as_str()).collect();
    assert_eq!(types, ["charge.succeeded", "payment_intent.succeeded"]);
    assert!(page.has_more);

    let recent: Vec<_> = ListEvent::new()
        .created(RangeQueryTs::gte(base + 1))
        .limit(1)
        .paginate()
        .stream(&client)
        .try_collect()
        .await
        .expect("paginate");
    let created: Vec<i64> = recent.iter().map(|e| e.created).collect();
    assert_eq!(created, [base + 3, base + 2, base + 1]);

    let newer = ListEvent::new().ending_before(page.data[1].id.to_string()).send(&client).await.expect("list");
    assert_eq!(newer.data.len(), 1);
    assert_eq!(newer.data[0].id, page.data[0].id);
    assert!(!newer.has_more);

    let payment_intent_events = ListEvent::new().type_("payment_intent.*").send(&client).await.expect("list");
    assert_eq!(payment_intent_events.data.len(), 3);
    let one = RetrieveEvent::new(page.data[0].id.clone()).send(&client).await.expect("retrieve");
    assert_eq!(one.api_version.as_deref(), Some(API_VERSION));
    let (_, status) = stripe_error(ListEvent::new().limit(101).send(&client).await.expect_err("limit above 100"));
    assert_eq!(status, 400);
}

#[tokio::test]
async fn subscriptions_are_created_updated_canceled_and_invoiced() {
    let (fake, client) = fake_and_client().await;
    let customer = customer_id(&client).await;
    let mut price = CreateSubscriptionItemsPriceData::new(
        Currency::JPY,
        "prod_membership",
        CreateSubscriptionItemsPriceDataRecurring::new(CreateSubscriptionItemsPriceDataRecurringInterval::Month),
    );
    price.unit_amount = Some(1000);
    let mut item = CreateSubscriptionItems::new();
    item.price_data = Some(price);
    let created = CreateSubscription::new()
        .customer(customer.clone())
        .items(vec![item])
        .metadata(pledge_metadata())
        .send(&client)
        .await
        .expect("create a subscription");
    assert_eq!(created.status, SubscriptionStatus::Active);
    let first_item = &created.items.data[0];
    assert!(first_item.current_period_end > first_item.current_period_start);

    let subscription = RetrieveSubscription::new(created.id.clone()).send(&client).await.expect("retrieve");
    let invoice_id = subscription.latest_invoice.expect("a first invoice").id().clone().expect("an invoice id");
    let invoice = RetrieveInvoice::new(invoice_id.clone()).send(&client).await.expect("retrieve the invoice");
    assert_eq!(invoice.amount_paid, 1000);
    assert_eq!(invoice.status, Some(stripe_shared::InvoiceStatus::Paid));

    let updated = UpdateSubscription::new(created.id.clone())
        .cancel_at_period_end(true)
        .metadata(HashMap::from([("pledge_id".to_owned(), String::new()), ("tier".to_owned(), "gold".to_owned())]))
        .send(&client)
        .await
        .expect("update");
    assert!(updated.cancel_at_period_end);
    assert_eq!(updated.cancel_at, Some(first_item.current_period_end));
    assert_eq!(updated.metadata, HashMap::from([("tier".to_owned(), "gold".to_owned())]));

    let renewal = fake.renew_subscription(created.id.as_str()).expect("renew");
    let invoices = ListInvoice::new().subscription(created.id.to_string()).send(&client).await.expect("list invoices");
    let ids: Vec<String> =
        invoices.data.iter().filter_map(|invoice| invoice.id.as_ref().map(ToString::to_string)).collect();
    assert_eq!(ids, [renewal["id"].as_str().expect("id").to_owned(), invoice_id.to_string()]);

    let canceled = CancelSubscription::new(created.id.clone()).send(&client).await.expect("cancel");
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    assert!(canceled.canceled_at.is_some());

    let portal = CreateBillingPortalSession::new()
        .customer(customer)
        .return_url("https://kanpa.example/account")
        .send(&client)
        .await
        .expect("portal session");
    assert!(portal.url.starts_with(&fake.api_base()));
}

#[tokio::test]
async fn the_same_idempotency_key_replays_and_other_parameters_conflict() {
    let (fake, client) = fake_and_client().await;
    let create = |amount: i64| {
        CreatePaymentIntent::new(amount, Currency::JPY)
            .payment_method("pm_card_visa")
            .confirm(true)
            .metadata(pledge_metadata())
    };
    let first =
        create(3000).customize().request_strategy(idempotent("pledge-7-charge-1")).send(&client).await.expect("charge");
    let again =
        create(3000).customize().request_strategy(idempotent("pledge-7-charge-1")).send(&client).await.expect("replay");
    assert_eq!(first.id, again.id);
    assert_eq!(fake.objects("payment_intent").len(), 1, "charged once");
    assert_eq!(fake.objects("charge").len(), 1);
    assert_eq!(fake.requests()[1].idempotency_key.as_deref(), Some("pledge-7-charge-1"));

    let (error, status) = stripe_error(
        create(4000)
            .customize()
            .request_strategy(idempotent("pledge-7-charge-1"))
            .send(&client)
            .await
            .expect_err("other parameters"),
    );
    assert_eq!(status, 400);
    assert_eq!(error.type_, ApiErrorsType::IdempotencyError);

    // A declined attempt is kept too: retrying it does not charge again.
    fake.decline_next("card_declined");
    let declined = create(5000)
        .customize()
        .request_strategy(idempotent("pledge-7-charge-2"))
        .send(&client)
        .await
        .expect_err("declined");
    let replayed = create(5000)
        .customize()
        .request_strategy(idempotent("pledge-7-charge-2"))
        .send(&client)
        .await
        .expect_err("the same decline");
    let (declined, replayed) = (stripe_error(declined).0, stripe_error(replayed).0);
    assert_eq!(declined.payment_intent.map(|p| p.id), replayed.payment_intent.map(|p| p.id));

    // Replays are marked and byte for byte the same.
    let http = reqwest::Client::new();
    let send = || {
        http.post(format!("{}v1/customers", fake.api_base()))
            .bearer_auth(KEY)
            .header("idempotency-key", "raw-1")
            .form(&[("email", "raw@example.com")])
            .send()
    };
    let original = send().await.expect("request");
    assert!(original.headers().get("idempotent-replayed").is_none());
    let original = original.text().await.expect("body");
    let replay = send().await.expect("request");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.expect("body"), original);
}

#[tokio::test]
async fn injected_rate_limits_and_server_errors_reach_the_client_and_its_retries() {
    let (fake, client) = fake_and_client().await;
    fake.fail_next(1, Fault::RateLimited);
    let (error, status) = stripe_error(CreateCustomer::new().send(&client).await.expect_err("rate limited"));
    assert_eq!(status, 429);
    assert_eq!(error.code, Some(ApiErrorsCode::RateLimit));

    fake.fail_next(1, Fault::ServerError);
    let (error, status) = stripe_error(CreateCustomer::new().send(&client).await.expect_err("server error"));
    assert_eq!((status, error.type_), (500, ApiErrorsType::ApiError));
    assert!(fake.objects("customer").is_empty(), "nothing happened");

    // async-stripe's retry strategy retries 429 and 500 with one key.
    fake.fail_next(1, Fault::RateLimited);
    fake.fail_next(1, Fault::ServerError);
    let customer = CreateCustomer::new()
        .email("patient@example.com")
        .customize()
        .request_strategy(RequestStrategy::Retry(3))
        .send(&client)
        .await
        .expect("the third attempt succeeds");
    assert_eq!(customer.email.as_deref(), Some("patient@example.com"));
    let attempts: Vec<RecordedRequest> = fake.requests().into_iter().skip(2).collect();
    assert_eq!(attempts.len(), 3);
    assert!(attempts[0].idempotency_key.is_some());
    assert!(
        attempts.iter().all(|attempt| attempt.idempotency_key == attempts[0].idempotency_key),
        "one key for every attempt"
    );
    assert_eq!(fake.objects("customer").len(), 1);
}

#[tokio::test]
async fn a_dropped_answer_is_a_connection_error_after_the_work_was_done() {
    let (fake, client) = fake_and_client().await;
    fake.fail_next(1, Fault::Dropped);
    let strategy = idempotent("pledge-9-charge-1");
    let create = CreatePaymentIntent::new(3000, Currency::JPY).payment_method("pm_card_visa").confirm(true);
    let error = create.customize().request_strategy(strategy.clone()).send(&client).await.expect_err("no answer");
    assert!(matches!(error, StripeError::ClientError(_)), "a connection error, got {error:?}");
    let charged = fake.objects("payment_intent");
    assert_eq!(charged.len(), 1, "the payment was made all the same");
    let retried =
        create.customize().request_strategy(strategy).send(&client).await.expect("the retry gets the kept answer");
    assert_eq!(retried.id.as_str(), charged[0]["id"]);
    assert_eq!(fake.objects("payment_intent").len(), 1, "and nothing more");

    // Not a byte of the answer goes out: the socket just closes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fake.fail_next(1, Fault::Dropped);
    let mut socket = tokio::net::TcpStream::connect(fake.address()).await.expect("connect");
    socket
        .write_all(
            format!(
                "POST /v1/customers HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
                fake.address()
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "got {:?}", String::from_utf8_lossy(&answer));
    assert_eq!(fake.objects("customer").len(), 1, "the customer was made");
}

#[tokio::test]
async fn latency_delays_answers_but_not_the_work() {
    let (fake, client) = fake_and_client().await;
    fake.set_latency(Duration::from_secs(3));
    let impatient = stripe::ClientBuilder::new(KEY)
        .url(fake.api_base())
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let started = Instant::now();
    let error = CreateCustomer::new().send(&impatient).await.expect_err("times out");
    assert!(matches!(error, StripeError::Timeout), "got {error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "it did not wait");
    assert_eq!(fake.objects("customer").len(), 1, "the work was done");

    fake.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    CreateCustomer::new().send(&client).await.expect("a patient client gets the answer");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_fake_clock_dates_objects_and_events() {
    let fake = FakeStripe::start().await.expect("start");
    fake.set_clock(1_900_000_000);
    let customer = fake.customer("patron@example.com", METADATA);
    assert_eq!(customer["created"], 1_900_000_000);
    fake.advance_clock(Duration::from_secs(60));
    assert_eq!(fake.event("customer.created", customer)["created"], 1_900_000_060);
    let subscription = fake.subscription(1000, "jpy", "month", "active", METADATA).expect("subscription");
    // 2030-03-17T17:47:40Z plus one month.
    assert_eq!(subscription["items"]["data"][0]["current_period_end"], 1_900_000_060 + 31 * 86_400);
    fake.use_real_clock();
    assert!(fake.now() < 1_900_000_000);
}

// ----- webhooks ----------------------------------------------------------------

/// A webhook endpoint like kanpa's: verifies with async-stripe and records
/// the event types it accepted.
async fn start_receiver(secret: String) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode};

    let accepted = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&accepted);
    let app = axum::Router::new().route(
        "/webhooks/stripe",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let recorded = Arc::clone(&recorded);
            let secret = secret.clone();
            async move {
                let signature =
                    headers.get("stripe-signature").and_then(|value| value.to_str().ok()).unwrap_or_default();
                match stripe_webhook::Webhook::construct_event(&body, signature, &secret) {
                    Ok(event) => {
                        if matches!(event.data.object, stripe_webhook::EventObject::Unknown(_)) {
                            return (StatusCode::UNPROCESSABLE_ENTITY, "unknown object".to_owned());
                        }
                        recorded.lock().expect("lock").push(event.type_.as_str().to_owned());
                        (StatusCode::OK, event.id.to_string())
                    }
                    Err(error) => (StatusCode::BAD_REQUEST, error.to_string()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/webhooks/stripe"), accepted)
}

#[tokio::test]
async fn delivered_events_pass_async_stripe_verification() {
    let fake = FakeStripe::start().await.expect("start");
    let (url, accepted) = start_receiver(fake.webhook_secret()).await;
    fake.set_webhook_url(url);
    assert!(fake.webhook_secret().starts_with("whsec_"));

    let subscription = fake.subscription(1000, "jpy", "month", "active", METADATA).expect("subscription");
    let events = [
        fake.event(
            "checkout.session.completed",
            fake.checkout_session("payment", 3000, "jpy", METADATA).expect("session"),
        ),
        fake.event(
            "payment_intent.succeeded",
            fake.payment_intent(3000, "jpy", "succeeded", METADATA).expect("PaymentIntent"),
        ),
        fake.event(
            "invoice.paid",
            fake.invoice(subscription["id"].as_str(), 1000, "jpy", "paid", &[]).expect("invoice"),
        ),
        fake.event("customer.subscription.updated", subscription),
        fake.event("charge.refunded", fake.charge(3000, "jpy", 3000, METADATA).expect("charge")),
        fake.event("invoice.payment_failed", fake.invoice(None, 1000, "jpy", "open", METADATA).expect("invoice")),
    ];
    for event in &events {
        assert_eq!(fake.deliver(event).await.expect("deliver"), 200, "{event:#}");
    }
    assert_eq!(
        *accepted.lock().expect("lock"),
        [
            "checkout.session.completed",
            "payment_intent.succeeded",
            "invoice.paid",
            "customer.subscription.updated",
            "charge.refunded",
            "invoice.payment_failed",
        ]
    );

    // Forged, unsigned and stale deliveries are refused.
    let body = serde_json::to_string(&events[0]).expect("json");
    let now = webhooks::unix_now();
    let forged = webhooks::signature_header("whsec_someoneelse", &body, now);
    let (status, answer) = fake.deliver_raw(&body, Some(&forged)).await.expect("deliver");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(fake.deliver_raw(&body, None).await.expect("deliver").0, 400);
    let stale = fake.sign(&body, now - 600);
    let (status, answer) = fake.deliver_raw(&body, Some(&stale)).await.expect("deliver");
    assert_eq!((status, answer.contains("tolerance")), (400, true), "{answer}");
    let tampered = body.replace("\"livemode\":false", "\"livemode\":true");
    let signature = fake.sign(&body, now);
    assert_eq!(fake.deliver_raw(&tampered, Some(&signature)).await.expect("deliver").0, 400);
}

#[tokio::test]
async fn a_storm_of_shuffled_duplicates_arrives_whole() {
    let fake = FakeStripe::start().await.expect("start");
    let (url, accepted) = start_receiver(fake.webhook_secret()).await;
    fake.set_webhook_url(url);
    let events: Vec<Value> = (0..5)
        .map(|_| {
            fake.event(
                "payment_intent.succeeded",
                fake.payment_intent(3000, "jpy", "succeeded", METADATA).expect("PaymentIntent"),
            )
        })
        .collect();
    let statuses = fake.deliver_many(&events, 3, true, 4).await.expect("deliver");
    assert_eq!(statuses, vec![200; 15]);
    assert_eq!(accepted.lock().expect("lock").len(), 15);
}

#[tokio::test]
async fn billing_over_time_prorates_credits_retries_and_ends_like_stripe_with_its_events() {
    install_ring();
    let fake = FakeStripe::start().await.expect("start the fake Stripe");
    let http = reqwest::Client::new();
    fake.set_clock(1_767_225_600);
    fake.emit_events(true);
    let kinds =
        |events: &[Value]| events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>();
    let session = fake.checkout_session("subscription", 3000, "jpy", &[]).expect("a completed session");
    let id = session["subscription"].as_str().expect("a subscription").to_owned();
    let joined = fake.take_pending_events();
    assert_eq!(kinds(&joined), ["customer.subscription.created", "invoice.paid", "checkout.session.completed"]);
    parses::<stripe_shared::Subscription>(&joined[0]["data"]["object"], "subscription");
    parses::<stripe_shared::Invoice>(&joined[1]["data"]["object"], "invoice");

    // Half way through the month, a prorated move to a ¥1,000 price: ¥1,500
    // of unused time credited, ¥500 charged, ¥1,000 left on the balance.
    let subscription = fake.object(&id).expect("stored");
    let item = &subscription["items"]["data"][0];
    let (start, end) = (item["current_period_start"].as_i64().unwrap(), item["current_period_end"].as_i64().unwrap());
    let length = end - start;
    assert_eq!(length % 2, 0);
    fake.set_clock(start + length / 2);
    let cheaper = fake.price(1000, "jpy", Some("month"));
    let item_id = item["id"].as_str().unwrap().to_owned();
    let answer = http
        .post(format!("{}v1/subscriptions/{id}", fake.api_base()))
        .bearer_auth(KEY)
        .form(&[
            ("items[0][id]", item_id.as_str()),
            ("items[0][price]", cheaper["id"].as_str().unwrap()),
            ("proration_behavior", "always_invoice"),
        ])
        .send()
        .await
        .expect("update");
    assert_eq!(answer.status(), 200);
    let changed = fake.take_pending_events();
    assert_eq!(kinds(&changed), ["customer.subscription.updated", "invoice.paid"]);
    let proration = &changed[1]["data"]["object"];
    parses::<stripe_shared::Invoice>(proration, "invoice");
    let lines: Vec<i64> =
        proration["lines"]["data"].as_array().unwrap().iter().map(|l| l["amount"].as_i64().unwrap()).collect();
    assert_eq!(lines, [-1500, 500]);
    assert_eq!((proration["amount_due"].as_i64(), proration["ending_balance"].as_i64()), (Some(0), Some(-1000)));
    let customer = subscription["customer"].as_str().unwrap().to_owned();
    assert_eq!(fake.object(&customer).unwrap()["balance"], -1000);

    // The renewal uses the credit: nothing is charged.
    fake.advance_billing_to(end + 60).expect("advance");
    let renewed = fake.take_pending_events();
    assert_eq!(kinds(&renewed), ["invoice.paid", "customer.subscription.updated"]);
    let invoice = &renewed[0]["data"]["object"];
    assert_eq!((invoice["total"].as_i64(), invoice["amount_due"].as_i64()), (Some(1000), Some(0)));
    assert_eq!(invoice["billing_reason"], "subscription_cycle");
    assert_eq!(fake.object(&customer).unwrap()["balance"], 0);

    // A card that keeps failing: four attempts three days apart, then the end.
    let card = subscription["default_payment_method"].as_str().unwrap().to_owned();
    fake.decline_payment_method(&card, "insufficient_funds");
    let next_end = fake.object(&id).unwrap()["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    fake.advance_billing_to(next_end + 20 * 86_400).expect("advance");
    let failing = fake.take_pending_events();
    assert_eq!(
        kinds(&failing),
        [
            "invoice.payment_failed",
            "customer.subscription.updated",
            "invoice.payment_failed",
            "invoice.payment_failed",
            "invoice.payment_failed",
            "customer.subscription.deleted",
        ]
    );
    let attempts: Vec<i64> = failing
        .iter()
        .filter(|e| e["type"] == "invoice.payment_failed")
        .map(|e| e["data"]["object"]["attempt_count"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    assert_eq!(failing[1]["data"]["object"]["status"], "past_due");
    let ended = &failing[5]["data"]["object"];
    parses::<stripe_shared::Subscription>(ended, "subscription");
    assert_eq!(
        (ended["status"].as_str(), ended["cancellation_details"]["reason"].as_str()),
        (Some("canceled"), Some("payment_failed"))
    );
    assert!(failing.windows(2).all(|w| w[0]["created"].as_i64() <= w[1]["created"].as_i64()), "in time order");
}
