//! A fake Stripe: an HTTP server on 127.0.0.1 that the real `async-stripe`
//! client talks to (`ClientBuilder::new(key).url(fake.api_base())`), and a
//! sender of webhooks signed the way Stripe signs them.
//!
//! What it does:
//!
//! - Serves the endpoints kanpa uses (customers, Checkout Sessions in the
//!   three modes, SetupIntents, PaymentIntents with off-session confirmation,
//!   subscriptions, invoices, refunds, balance transactions, payouts, events,
//!   billing portal sessions), keeping every object in memory. Each reply is
//!   a complete object built from Stripe's own example of it
//!   (`stripe_fixtures.json`), so async-stripe's strict parser accepts it.
//! - Moves money the way Stripe's books show it: a successful payment makes
//!   a charge and a `charge` balance transaction with a 3.6 % fee (Stripe
//!   Japan's card rate, rounded; no fixed part), a refund makes a `refund`
//!   balance transaction, and [`FakeStripe::pay_out`] sweeps the unpaid
//!   transactions of a currency into a payout, listed under
//!   `GET /v1/balance_transactions?payout=po_…`.
//! - Answers errors in Stripe's JSON shape: 404 `resource_missing` for
//!   unknown ids, 400 `parameter_missing`/`idempotency_error`, 402
//!   `card_error` with the PaymentIntent inside, 401 without an API key.
//! - Honours `Idempotency-Key` on POST like Stripe: the same key with the
//!   same parameters replays the first answer byte for byte (with
//!   `Idempotent-Replayed: true`) and does nothing else; the same key with
//!   other parameters is a 400 `idempotency_error`. Answers that did not
//!   start the work (400/401/404 validation errors, injected 429 and 500)
//!   are not kept, as on Stripe; card declines (402) are.
//! - Misbehaves on demand: latency, 429, 500, a connection closed after the
//!   work was done but before any answer ([`Fault`]), declines of the next
//!   payment ([`FakeStripe::decline_next`]).
//! - Builds events and delivers them to a webhook URL with a real
//!   `Stripe-Signature` header, one by one or as a shuffled, duplicated,
//!   concurrent storm.
//! - Runs Stripe Billing over time on request: [`FakeStripe::advance_billing_to`]
//!   moves the clock and on the way renews subscriptions (a paid invoice
//!   with its charge and fee, a declined one and past due, or one waiting
//!   for the customer's authentication), retries failed invoices (smart
//!   retries: four attempts three days apart, then the subscription is
//!   cancelled), voids the invoices of paused subscriptions, lifts pauses at
//!   `resumes_at` and ends subscriptions cancelled at period end. A change of
//!   price with `proration_behavior=always_invoice` is invoiced at once with
//!   proration lines; a credit stays on the customer's balance for the next
//!   invoice. Disputes are opened and closed by the test
//!   ([`FakeStripe::open_dispute`]).
//!
//! What it deliberately does not do:
//!
//! - No automatic events unless asked: by default API calls change objects,
//!   and a test decides which event to build ([`FakeStripe::event`]) and when
//!   to deliver it, so that ordering, loss and duplication stay under the
//!   test's control. After [`FakeStripe::emit_events`], every change records
//!   the events Stripe would send about it (the types kanpa subscribes to),
//!   and [`FakeStripe::deliver_pending`] delivers them in order.
//! - No `expand[]`: expandable fields are always ids. No search endpoints,
//!   no Connect accounts, no taxes or discounts, no test clocks (the fake
//!   has its own clock, [`FakeStripe::set_clock`]).
//! - Payments succeed at once (no `processing` state, no 3-D Secure flow
//!   beyond the error answer and [`FakeStripe::pay_invoice`]), balance
//!   transactions are `available` at once, and payouts are `paid` when made.
//! - A renewal that needs authentication sends
//!   `invoice.payment_action_required` only (Stripe may also send
//!   `invoice.payment_failed`), and smart retries leave it to the customer.
//! - Checkout in subscription mode ignores `billing_cycle_anchor`: every
//!   subscription renews on the day it started.
//! - No validation beyond what kanpa's error handling needs: unknown
//!   parameters are ignored, and unknown payment method ids are accepted.
//! - Plain HTTP only, bound to 127.0.0.1.

mod api;
mod billing;
mod fixtures;
mod objects;
mod store;
mod webhooks;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::oneshot;

pub use fixtures::fixture;
/// Stripe's `Stripe-Signature` header under any secret: for forged deliveries and
/// for secrets being rotated.
pub use webhooks::signature_header;

use objects::metadata_of;
use store::State;

/// The Stripe API version async-stripe `=1.0.0-rc.10` is generated for and
/// sends as `Stripe-Version`; the fake stamps it on events. A test checks it
/// against `stripe_shared::version::VERSION`.
pub const API_VERSION: &str = "2026-09-30.endive";

/// A misbehaviour for the next requests, see [`FakeStripe::fail_next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with Stripe's rate limit error (type
    /// `invalid_request_error`, code `rate_limit`). Nothing happens.
    RateLimited,
    /// HTTP 500 with an `api_error`. Nothing happens, and nothing is kept
    /// under the idempotency key, so a retry with the same key does the work
    /// (this is the 500 Stripe sends before it starts; the other kind, which
    /// Stripe replays on retry, is not modelled).
    ServerError,
    /// The request is carried out in full (objects change, the answer is
    /// kept under its idempotency key), then the connection is closed
    /// without a byte of answer: the client sees a connection error and
    /// cannot know what happened.
    Dropped,
}

/// An API request as the fake received it, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path with its `/v1` prefix, e.g. `/v1/payment_intents`.
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The form body (POST) or query (GET, DELETE), decoded, in order:
    /// `("metadata[pledge_id]", "7")`.
    pub params: Vec<(String, String)>,
    /// Which TCP connection it came on: connections are numbered from 1 in
    /// the order the fake accepted them.
    pub connection: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    webhook_secret: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake Stripe. The server stops when this is dropped.
pub struct FakeStripe {
    shared: Arc<Shared>,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl FakeStripe {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeStripe> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the fake Stripe to 127.0.0.1")?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(format!("http://{address}"))),
            webhook_secret: format!("whsec_{}", store::random_alphanumeric(32)),
        });
        let (stop, stopped) = oneshot::channel();
        api::serve(listener, Arc::clone(&shared), stopped);
        let http = reqwest::Client::builder().build().context("build the webhook sender's HTTP client")?;
        Ok(FakeStripe { shared, address, stop: Some(stop), http })
    }

    /// The base URL for `stripe::ClientBuilder::url`, with the trailing
    /// slash async-stripe needs: `http://127.0.0.1:PORT/`.
    pub fn api_base(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// The server's address, for raw HTTP or TCP checks.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server now rather than at drop. Requests under way finish.
    pub fn shutdown(mut self) {
        self.stop_server();
    }

    fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    // ----- misbehaviour -------------------------------------------------

    /// Delays every answer by `latency`. The work is done at once; only the
    /// answer is late, so a client that gives up still finds the effects.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Makes the next `count` API requests (of any kind) fail with `fault`.
    /// Calls queue up behind each other.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        let mut state = self.shared.lock();
        state.faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Makes the next PaymentIntent confirmation (create with
    /// `confirm=true`, `POST /v1/payment_intents/{id}/confirm`, or a
    /// subscription renewal by [`FakeStripe::renew_subscription`]) fail the
    /// way Stripe declines a card: HTTP 402 `card_error` with the
    /// PaymentIntent inside. `code` is `card_declined` (decline code
    /// `generic_decline`), `insufficient_funds` (code `card_declined`),
    /// `authentication_required` (code and decline code
    /// `authentication_required`, PaymentIntent left in `requires_action`),
    /// or any other decline code, reported under code `card_declined`.
    /// Calls queue up.
    ///
    /// Stripe's guide to off-session charges says a failed attempt leaves
    /// the PaymentIntent in `requires_payment_method`, while its subscription
    /// guide shows `requires_action` for authentication failures; the fake
    /// uses `requires_action` for `authentication_required`. Code under test
    /// should decide on the error code, not on that status.
    pub fn decline_next(&self, code: &str) {
        self.shared.lock().declines.push_back(code.to_owned());
    }

    /// Makes every charge of one saved payment method fail with `code`
    /// (e.g. `insufficient_funds`, `authentication_required`), as a test
    /// card number does on Stripe.
    pub fn decline_payment_method(&self, payment_method: &str, code: &str) {
        self.shared.lock().card_declines.insert(payment_method.to_owned(), code.to_owned());
    }

    /// Answers the `GET` requests `answer` knows (given the path, such as
    /// `/v1/payment_intents/pi_…`, and the `expand[]` values) with the text
    /// it returns, instead of rendering them from the stored objects. For a
    /// load generator whose objects are copies of one template: it keeps
    /// the template's answer, checked against the fake's own, and fills in
    /// the ids. Keys, faults, rate limits and the request log apply as to
    /// any request.
    pub fn answer_reads_with(&self, answer: impl Fn(&str, &[String]) -> Option<String> + Send + Sync + 'static) {
        self.shared.lock().reads = Some(Arc::new(answer));
    }

    /// Answers 429 `rate_limit` to requests beyond `per_second` in any one
    /// second, as Stripe's rate limiter does.
    pub fn set_rate_limit(&self, per_second: u32) {
        self.shared.lock().rate_limit = Some(per_second);
    }

    /// How many requests the rate limiter refused.
    pub fn rate_limited(&self) -> u64 {
        self.shared.lock().rate_limited
    }

    // ----- clock ---------------------------------------------------------

    /// Freezes the fake's clock (used for `created` and periods) at a Unix
    /// time. Webhook signatures always use the real time.
    pub fn set_clock(&self, unix_seconds: i64) {
        self.shared.lock().clock = Some(unix_seconds);
    }

    /// Moves the fake's clock forward, freezing it if it was real.
    pub fn advance_clock(&self, by: Duration) {
        let mut state = self.shared.lock();
        let now = state.now();
        state.clock = Some(now.saturating_add(i64::try_from(by.as_secs()).unwrap_or(i64::MAX)));
    }

    /// Back to the real time.
    pub fn use_real_clock(&self) {
        self.shared.lock().clock = None;
    }

    /// The fake's current Unix time.
    pub fn now(&self) -> i64 {
        self.shared.lock().now()
    }

    // ----- looking inside -----------------------------------------------

    /// Every API request received so far, in arrival order, including those
    /// answered with an injected fault.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The current state of any object, by id.
    pub fn object(&self, id: &str) -> Option<Value> {
        self.shared.lock().get(id).cloned()
    }

    /// Every object of a kind (`"payment_intent"`, `"event"`, …), newest
    /// first, as the list endpoints order them.
    pub fn objects(&self, object_type: &str) -> Vec<Value> {
        self.shared.lock().all_of(object_type).into_iter().cloned().collect()
    }

    /// Stores an object (with string `id` and `object` fields) as the API
    /// will serve it, replacing one with the same id: the way to make the
    /// fake serve a builder's output after a test edited it.
    pub fn insert_object(&self, object: Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            object.get("id").and_then(Value::as_str).is_some()
                && object.get("object").and_then(Value::as_str).is_some(),
            "a Stripe object needs string \"id\" and \"object\" fields"
        );
        self.shared.lock().put(object);
        Ok(())
    }

    // ----- what a customer or Stripe would do -----------------------------

    /// Completes an open Checkout Session as if the customer paid (or saved
    /// a card) on Stripe's page: payment mode gets a succeeded
    /// PaymentIntent, setup mode a succeeded SetupIntent, subscription mode
    /// an active subscription with a paid first invoice; a customer is
    /// created where Stripe would. Returns the completed session. The hosted
    /// page at the session's `url` does the same from a browser.
    pub fn complete_checkout_session(&self, id: &str) -> anyhow::Result<Value> {
        Ok(objects::complete_checkout_session(&mut self.shared.lock(), id)?)
    }

    /// Bills the next period of a subscription: moves its period on and
    /// makes a `subscription_cycle` invoice, paid, or, after
    /// [`FakeStripe::decline_next`], open with a failed payment and the
    /// subscription `past_due`. Returns the invoice.
    pub fn renew_subscription(&self, id: &str) -> anyhow::Result<Value> {
        Ok(objects::renew_subscription(&mut self.shared.lock(), id)?)
    }

    /// Moves the clock to `unix_seconds`, doing on the way, in time order,
    /// what Stripe Billing does to every subscription (see the module's
    /// notes): renewals, smart retries, pauses ending, cancellations at
    /// period end.
    pub fn advance_billing_to(&self, unix_seconds: i64) -> anyhow::Result<()> {
        Ok(billing::advance_to(&mut self.shared.lock(), unix_seconds)?)
    }

    /// The customer pays an open invoice on its hosted page (confirming a
    /// payment their bank wanted authenticated). Returns the paid invoice.
    pub fn pay_invoice(&self, id: &str) -> anyhow::Result<Value> {
        Ok(billing::pay_invoice(&mut self.shared.lock(), id)?)
    }

    /// Declines the next `times` charges of one saved payment method with
    /// `code`, then lets them through: a card that recovers (its holder
    /// raised the limit) while Stripe retries.
    pub fn decline_payment_method_times(&self, payment_method: &str, code: &str, times: u32) {
        let mut state = self.shared.lock();
        state.card_declines.insert(payment_method.to_owned(), code.to_owned());
        state.card_decline_limits.insert(payment_method.to_owned(), times);
    }

    /// Charges of this payment method succeed again (after
    /// [`FakeStripe::decline_payment_method`]).
    pub fn accept_payment_method(&self, payment_method: &str) {
        let mut state = self.shared.lock();
        state.card_declines.remove(payment_method);
        state.card_decline_limits.remove(payment_method);
    }

    /// The card holder's bank disputes a charge: a dispute in
    /// `needs_response` whose balance transaction takes the charge's
    /// unrefunded amount and Stripe's dispute fee (¥1,500) out of the balance.
    pub fn open_dispute(&self, charge: &str) -> anyhow::Result<Value> {
        Ok(billing::open_dispute(&mut self.shared.lock(), charge)?)
    }

    /// The dispute is decided: won gives the amount back (not the fee), lost
    /// leaves it with the card holder.
    pub fn close_dispute(&self, dispute: &str, won: bool) -> anyhow::Result<Value> {
        Ok(billing::close_dispute(&mut self.shared.lock(), dispute, won)?)
    }

    /// Pays out every balance transaction of `currency` not yet paid out, as
    /// an automatic payout does. Returns the payout.
    pub fn pay_out(&self, currency: &str) -> anyhow::Result<Value> {
        Ok(objects::create_payout(&mut self.shared.lock(), currency)?)
    }

    // ----- builders -------------------------------------------------------
    //
    // Each builder makes a complete object, with the objects it implies
    // (a succeeded PaymentIntent has its charge and balance transaction),
    // stores them so the API serves them, and returns the main one.

    /// A customer.
    pub fn customer(&self, email: &str, metadata: &[(&str, &str)]) -> Value {
        objects::create_customer(
            &mut self.shared.lock(),
            objects::NewCustomer {
                email: Some(email.to_owned()),
                metadata: metadata_of(metadata),
                ..Default::default()
            },
        )
    }

    /// A price of `amount` in `currency`, recurring every `interval`
    /// (`day`, `week`, `month`, `year`) or one-time when `None`.
    pub fn price(&self, amount: i64, currency: &str, interval: Option<&str>) -> Value {
        let item = objects::PlanItem::new(amount, currency, interval);
        objects::price_object(&mut self.shared.lock(), &item)
    }

    /// A completed Checkout Session of `mode` (`payment`, `setup`,
    /// `subscription`) for one line item of `amount` (monthly in
    /// subscription mode), with `metadata` on the session only (as on
    /// Stripe, the PaymentIntent or subscription it made has its own,
    /// empty, metadata).
    pub fn checkout_session(
        &self,
        mode: &str,
        amount: i64,
        currency: &str,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut state = self.shared.lock();
        let interval = (mode == "subscription").then_some("month");
        let items = if mode == "setup" { Vec::new() } else { vec![objects::PlanItem::new(amount, currency, interval)] };
        let session = objects::create_checkout_session(
            &mut state,
            objects::NewCheckoutSession {
                mode: mode.to_owned(),
                currency: Some(currency.to_owned()),
                customer_email: Some("patron@example.com".to_owned()),
                success_url: Some("https://example.com/success".to_owned()),
                cancel_url: Some("https://example.com/cancel".to_owned()),
                metadata: metadata_of(metadata),
                plan: objects::CheckoutPlan { items, ..Default::default() },
                ..Default::default()
            },
        )?;
        let id = objects::id_of(&session);
        Ok(objects::complete_checkout_session(&mut state, &id)?)
    }

    /// A PaymentIntent in `status` (`requires_payment_method`,
    /// `requires_confirmation`, `requires_action`, `processing`,
    /// `requires_capture`, `canceled`, `succeeded`).
    pub fn payment_intent(
        &self,
        amount: i64,
        currency: &str,
        status: &str,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        Ok(objects::payment_intent_in_status(&mut self.shared.lock(), amount, currency, status, metadata_of(metadata))?)
    }

    /// A succeeded charge of a succeeded PaymentIntent carrying `metadata`
    /// (Stripe copies it to the charge), with `amount_refunded` of it
    /// refunded through real refund objects (`charge.refunded` material).
    pub fn charge(
        &self,
        amount: i64,
        currency: &str,
        amount_refunded: i64,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut state = self.shared.lock();
        let payment_intent =
            objects::payment_intent_in_status(&mut state, amount, currency, "succeeded", metadata_of(metadata))?;
        let charge_id =
            payment_intent["latest_charge"].as_str().context("a succeeded PaymentIntent has a charge")?.to_owned();
        if amount_refunded > 0 {
            objects::create_refund(
                &mut state,
                objects::NewRefund {
                    charge: Some(charge_id.clone()),
                    amount: Some(amount_refunded),
                    ..Default::default()
                },
            )?;
        }
        state.get(&charge_id).cloned().context("the charge was just stored")
    }

    /// An invoice of `amount` in `status` (`draft`, `open`, `paid`, `void`,
    /// `uncollectible`). With a subscription id, the invoice belongs to that
    /// subscription (its customer, `parent.subscription_details` with the
    /// subscription's metadata, a `subscription_cycle` line); otherwise it is
    /// a one-off invoice for a new customer. A paid invoice has a succeeded
    /// PaymentIntent in its `payments`.
    pub fn invoice(
        &self,
        subscription: Option<&str>,
        amount: i64,
        currency: &str,
        status: &str,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        Ok(objects::invoice_for_builder(
            &mut self.shared.lock(),
            subscription,
            amount,
            currency,
            status,
            metadata_of(metadata),
        )?)
    }

    /// A subscription of one item of `amount` every `interval`, for a new
    /// customer, in `status` (`active`, `trialing`, `past_due`, `unpaid`,
    /// `canceled`, `incomplete`, `incomplete_expired`, `paused`), with its
    /// paid first invoice.
    pub fn subscription(
        &self,
        amount: i64,
        currency: &str,
        interval: &str,
        status: &str,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        Ok(objects::subscription_for_builder(
            &mut self.shared.lock(),
            amount,
            currency,
            interval,
            status,
            metadata_of(metadata),
        )?)
    }

    // ----- events and webhooks ---------------------------------------------

    /// A complete event of `event_type` about `object`, created now (by the
    /// fake's clock), stored so `GET /v1/events` lists it.
    pub fn event(&self, event_type: &str, object: Value) -> Value {
        let mut state = self.shared.lock();
        let created = state.now();
        objects::create_event(&mut state, event_type, object, created)
    }

    /// Like [`FakeStripe::event`], created at a given Unix time, for events
    /// that arrive out of order.
    pub fn event_at(&self, event_type: &str, object: Value, created: i64) -> Value {
        objects::create_event(&mut self.shared.lock(), event_type, object, created)
    }

    /// From now on (`true`), every change records the events Stripe would
    /// send about it, waiting for [`FakeStripe::deliver_pending`]:
    /// `checkout.session.completed`, `customer.subscription.*`,
    /// `invoice.paid`, `invoice.payment_failed`,
    /// `invoice.payment_action_required`, `charge.refunded` and
    /// `charge.dispute.*`.
    pub fn emit_events(&self, on: bool) {
        self.shared.lock().emit_events = on;
    }

    /// The recorded events not delivered yet, oldest first, taken out.
    pub fn take_pending_events(&self) -> Vec<Value> {
        std::mem::take(&mut self.shared.lock().pending_events)
    }

    /// Delivers the recorded events one by one in the order they happened,
    /// each freshly signed; fails on an answer other than 2xx. Returns them.
    pub async fn deliver_pending(&self) -> anyhow::Result<Vec<Value>> {
        let events = self.take_pending_events();
        for event in &events {
            let status = self.deliver(event).await?;
            anyhow::ensure!((200..300).contains(&status), "the endpoint answered {status} to {}", event["type"]);
        }
        Ok(events)
    }

    /// The signing secret of the webhook endpoint (`whsec_…`).
    pub fn webhook_secret(&self) -> String {
        self.shared.webhook_secret.clone()
    }

    /// Where [`FakeStripe::deliver`] sends events.
    pub fn set_webhook_url(&self, url: impl Into<String>) {
        self.shared.lock().webhook_url = Some(url.into());
    }

    /// Stripe's `Stripe-Signature` header for `body` sent at `timestamp`:
    /// `t=…,v1=hex(HMAC-SHA256(secret, "{t}.{body}"))`.
    pub fn sign(&self, body: &str, timestamp: i64) -> String {
        webhooks::signature_header(&self.shared.webhook_secret, body, timestamp)
    }

    /// POSTs an event to the webhook URL with a fresh signature, as Stripe
    /// does, and returns the HTTP status the endpoint answered.
    pub async fn deliver(&self, event: &Value) -> anyhow::Result<u16> {
        let body = serde_json::to_string(event)?;
        let signature = self.sign(&body, webhooks::unix_now());
        let (status, _) = self.post_to_webhook(body, Some(signature)).await?;
        Ok(status)
    }

    /// POSTs any body with any (or no) `Stripe-Signature` header, for forged,
    /// stale or malformed deliveries. Returns the status and the answer.
    pub async fn deliver_raw(&self, body: &str, signature: Option<&str>) -> anyhow::Result<(u16, String)> {
        self.post_to_webhook(body.to_owned(), signature.map(str::to_owned)).await
    }

    /// Delivers each event `copies` times, in a shuffled order if asked, by
    /// `concurrency` senders at once (at least one), each delivery freshly
    /// signed. Returns the statuses in the order the deliveries were queued.
    pub async fn deliver_many(
        &self,
        events: &[Value],
        copies: usize,
        shuffle: bool,
        concurrency: usize,
    ) -> anyhow::Result<Vec<u16>> {
        let url = self.webhook_url()?;
        webhooks::deliver_many(&self.http, &url, &self.shared.webhook_secret, events, copies, shuffle, concurrency)
            .await
    }

    fn webhook_url(&self) -> anyhow::Result<String> {
        self.shared.lock().webhook_url.clone().context("no webhook URL: call set_webhook_url first")
    }

    async fn post_to_webhook(&self, body: String, signature: Option<String>) -> anyhow::Result<(u16, String)> {
        let url = self.webhook_url()?;
        webhooks::post(&self.http, &url, body, signature).await
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.stop_server();
    }
}

impl std::fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStripe").field("address", &self.address).finish_non_exhaustive()
    }
}
