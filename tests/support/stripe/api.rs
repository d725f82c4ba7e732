//! The HTTP side: one handler for every path, so that every API request
//! goes through the same steps (record, injected fault, API key,
//! idempotency, dispatch, latency), and a listener whose connections the
//! handler can cut to drop an answer.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::serve::{IncomingStream, Listener};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::objects::{
    self, CheckoutPlan, CustomerChanges, ItemChange, Metadata, MetadataChanges, NewCheckoutSession, NewCustomer,
    NewPaymentIntent, NewRefund, NewSetupIntent, NewSubscription, PlanItem, Recurring, SubscriptionChanges,
};
use super::store::{ApiError, CreatedRange, ListQuery, SavedReply, State, random_alphanumeric};
use super::{API_VERSION, Fault, RecordedRequest, Shared};

pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let app = Router::new().fallback(handle).with_state(shared);
    let server = axum::serve(
        CuttableListener { listener, accepted: 0 },
        app.into_make_service_with_connect_info::<ConnectionCutter>(),
    )
    .with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    tokio::spawn(async move {
        if let Err(error) = server.await {
            eprintln!("fake Stripe server stopped: {error}");
        }
    });
}

// ----- connections that can be cut ------------------------------------------

/// Accepts TCP connections wrapped so that a handler can cut its own, and
/// numbers them from 1 in the order accepted.
struct CuttableListener {
    listener: TcpListener,
    accepted: u64,
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    self.accepted += 1;
                    let cutter = ConnectionCutter { cut: Arc::new(AtomicBool::new(false)), number: self.accepted };
                    return (CuttableStream { stream, cutter }, address);
                }
                // Out of file descriptors and the like: wait, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Handed to the handler (as connect info) to cut its connection: once cut,
/// every read and write fails, so hyper writes nothing of the answer and
/// closes the socket. The client sees the connection closed before any
/// answer, as when a proxy or the network loses it.
#[derive(Clone)]
pub(crate) struct ConnectionCutter {
    cut: Arc<AtomicBool>,
    /// The connection's number, from 1.
    number: u64,
}

impl ConnectionCutter {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for ConnectionCutter {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        stream.io().cutter.clone()
    }
}

struct CuttableStream {
    stream: TcpStream,
    cutter: ConnectionCutter,
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut by the fake")
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

// ----- the handler ----------------------------------------------------------

/// An answer as sent, kept whole for idempotent replays.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    replayed: bool,
}

impl Reply {
    fn json(status: u16, body: &impl Serialize) -> Reply {
        // Objects with string keys always serialise.
        let body = serde_json::to_string(body).unwrap_or_default();
        Reply { status, body, replayed: false }
    }

    fn error(error: &ApiError) -> Reply {
        Reply::json(error.status, &error.body())
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(cutter): ConnectInfo<ConnectionCutter>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if !path.starts_with("/v1/") {
        return hosted_page(&shared, &method, &path);
    }
    let raw_params: &[u8] = if method == Method::POST { &body } else { uri.query().unwrap_or_default().as_bytes() };
    let idempotency_key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let (reply, latency, drop_answer) = {
        let mut state = shared.lock();
        let form = Form::parse(raw_params);
        state.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: idempotency_key.clone(),
            params: form.as_ref().map(|form| form.pairs.clone()).unwrap_or_default(),
            connection: cutter.number,
        });
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let over_limit = state.rate_limit.is_some_and(|limit| {
            if state.rate_window.0 != second {
                state.rate_window = (second, 0);
            }
            state.rate_window.1 += 1;
            state.rate_window.1 > limit
        });
        if over_limit {
            state.rate_limited += 1;
        }
        let fault = if over_limit { Some(Fault::RateLimited) } else { state.faults.pop_front() };
        let reply = match fault {
            Some(Fault::RateLimited) => Reply::error(&ApiError::new(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
                None,
            )),
            Some(Fault::ServerError) => {
                Reply::error(&ApiError::new(500, "api_error", None, "An unknown error occurred", None))
            }
            Some(Fault::Dropped) | None => {
                process(&mut state, &method, &path, &headers, form, idempotency_key.as_deref())
            }
        };
        (reply, state.latency, fault == Some(Fault::Dropped))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if drop_answer {
        cutter.cut();
    }
    answer(reply, idempotency_key.as_deref())
}

fn answer(reply: Reply, idempotency_key: Option<&str>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("stripe-version", HeaderValue::from_static(API_VERSION));
    if let Ok(request_id) = HeaderValue::from_str(&format!("req_{}", random_alphanumeric(14))) {
        headers.insert("request-id", request_id);
    }
    if let Some(key) = idempotency_key.and_then(|key| HeaderValue::from_str(key).ok()) {
        headers.insert("idempotency-key", key);
    }
    if reply.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn process(
    state: &mut State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    form: Result<Form, ApiError>,
    idempotency_key: Option<&str>,
) -> Reply {
    let has_api_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|key| !key.trim().is_empty());
    if !has_api_key {
        return Reply::error(&ApiError::new(
            401,
            "invalid_request_error",
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            None,
        ));
    }
    let form = match form {
        Ok(form) => form,
        Err(error) => return Reply::error(&error),
    };
    let key = match idempotency_key {
        Some(key) if *method == Method::POST => key,
        _ => return run(state, method, path, &form),
    };
    let mut sorted = form.pairs.clone();
    sorted.sort();
    let fingerprint = (method.to_string(), path.to_owned(), sorted);
    if let Some(saved) = state.idempotent_replies.get(key) {
        if saved.fingerprint == fingerprint {
            return Reply { status: saved.status, body: saved.body.clone(), replayed: true };
        }
        return Reply::error(&ApiError::new(
            400,
            "idempotency_error",
            None,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
            ),
            None,
        ));
    }
    let reply = run(state, method, path, &form);
    // Stripe keeps the answer once the endpoint has started its work: a
    // success or a card decline, not a rejected request.
    if (200..300).contains(&reply.status) || reply.status == 402 {
        state
            .idempotent_replies
            .insert(key.to_owned(), SavedReply { fingerprint, status: reply.status, body: reply.body.clone() });
    }
    reply
}

fn run(state: &mut State, method: &Method, path: &str, form: &Form) -> Reply {
    if *method == Method::GET
        && let Some(body) = state.reads.as_ref().and_then(|reads| reads(path, &form.strings("expand")))
    {
        return Reply { status: 200, body, replayed: false };
    }
    match dispatch(state, method, path, form) {
        Ok(object) => {
            let expand = form.strings("expand");
            let paths: Vec<Vec<&str>> = expand.iter().map(|path| path.split('.').collect()).collect();
            let paths: Vec<&[&str]> = paths.iter().map(Vec::as_slice).collect();
            Reply::json(200, &Expanded { state, value: &object, paths })
        }
        Err(error) => Reply::error(&error),
    }
}

/// An object as Stripe answers it with the `expand[]` paths given
/// ("latest_charge", "latest_charge.balance_transaction",
/// "balance_transaction"): each id on a path replaced by the object it
/// names, written out from the store without copying either.
struct Expanded<'a> {
    state: &'a State,
    value: &'a Value,
    /// What is left of each path below `value`.
    paths: Vec<&'a [&'a str]>,
}

impl Serialize for Expanded<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match self.value {
            Value::Object(fields) if !self.paths.is_empty() => fields,
            plain => return plain.serialize(serializer),
        };
        let mut out = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            let below: Vec<&[&str]> = self
                .paths
                .iter()
                .filter_map(|path| path.split_first().filter(|(first, _)| *first == key).map(|(_, rest)| rest))
                .collect();
            if below.is_empty() {
                out.serialize_entry(key, value)?;
                continue;
            }
            let value = value.as_str().and_then(|id| self.state.get(id)).unwrap_or(value);
            let paths = below.into_iter().filter(|rest| !rest.is_empty()).collect();
            out.serialize_entry(key, &Expanded { state: self.state, value, paths })?;
        }
        out.end()
    }
}

// ----- routes ---------------------------------------------------------------

fn dispatch(state: &mut State, method: &Method, path: &str, form: &Form) -> Result<Value, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches("/v1/").trim_end_matches('/').split('/').collect();
    let get = |object_type: &str, id: &str| {
        state.get_of(object_type, id).ok_or_else(|| ApiError::missing(object_type, id, "id"))
    };
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["customers"]) => Ok(objects::create_customer(
            state,
            NewCustomer {
                email: form.text("email"),
                name: form.text("name"),
                description: form.text("description"),
                metadata: form.metadata("metadata"),
                default_payment_method: form.text_at(&["invoice_settings", "default_payment_method"]),
            },
        )),
        ("GET", ["customers"]) => {
            let email = form.text("email");
            list(state, "customer", path, form, |customer| {
                email.as_ref().is_none_or(|email| customer["email"] == email.as_str())
            })
        }
        ("GET", ["customers", id]) => get("customer", id),
        ("POST", ["customers", id]) => objects::update_customer(
            state,
            id,
            CustomerChanges {
                email: form.text("email"),
                name: form.text("name"),
                description: form.text("description"),
                metadata: form.metadata_changes("metadata"),
                default_payment_method: form.text_at(&["invoice_settings", "default_payment_method"]),
            },
        ),
        ("GET", ["payment_methods", id]) => get("payment_method", id),

        ("POST", ["checkout", "sessions"]) => create_checkout_session(state, form),
        ("GET", ["checkout", "sessions"]) => {
            let filters = form.filters(&["customer", "payment_intent", "subscription", "status"]);
            list(state, "checkout.session", path, form, |session| matches_filters(session, &filters))
        }
        ("GET", ["checkout", "sessions", id]) => get("checkout.session", id),
        ("POST", ["checkout", "sessions", id, "expire"]) => objects::expire_checkout_session(state, id),

        ("POST", ["setup_intents"]) => {
            let new = NewSetupIntent {
                customer: form.text("customer"),
                payment_method: form.text("payment_method"),
                metadata: form.metadata("metadata"),
                usage: form.text("usage"),
                payment_method_types: form.strings("payment_method_types"),
                confirm: form.boolean("confirm")?.unwrap_or(false),
            };
            check_customer(state, new.customer.as_deref())?;
            Ok(objects::create_setup_intent(state, new))
        }
        ("GET", ["setup_intents", id]) => get("setup_intent", id),
        ("POST", ["setup_intents", id, "confirm"]) => {
            objects::confirm_setup_intent(state, id, form.text("payment_method"))
        }

        ("POST", ["payment_intents"]) => create_payment_intent(state, form),
        ("GET", ["payment_intents"]) => {
            let filters = form.filters(&["customer"]);
            list(state, "payment_intent", path, form, |payment_intent| matches_filters(payment_intent, &filters))
        }
        ("GET", ["payment_intents", id]) => get("payment_intent", id),
        ("POST", ["payment_intents", id, "confirm"]) => {
            objects::confirm_payment_intent(state, id, form.text("payment_method"))
        }

        ("GET", ["charges"]) => {
            let filters = form.filters(&["customer", "payment_intent"]);
            list(state, "charge", path, form, |charge| matches_filters(charge, &filters))
        }
        ("GET", ["charges", id]) => get("charge", id),

        ("POST", ["prices"]) => create_price(state, form),
        ("GET", ["prices", id]) => get("price", id),
        ("POST", ["subscriptions"]) => create_subscription(state, form),
        ("GET", ["subscriptions"]) => {
            let customer = form.text("customer");
            let status = form.text("status");
            list(state, "subscription", path, form, |subscription| {
                customer.as_ref().is_none_or(|customer| subscription["customer"] == customer.as_str())
                    && match status.as_deref() {
                        // Stripe leaves canceled subscriptions out unless asked.
                        None => subscription["status"] != "canceled",
                        Some("all") => true,
                        Some(status) => subscription["status"] == status,
                    }
            })
        }
        ("GET", ["subscriptions", id]) => get("subscription", id),
        ("POST", ["subscriptions", id]) => update_subscription(state, id, form),
        ("DELETE", ["subscriptions", id]) => objects::cancel_subscription(state, id),

        ("GET", ["invoices"]) => {
            let filters = form.filters(&["customer", "subscription", "status"]);
            list(state, "invoice", path, form, |invoice| matches_filters(invoice, &filters))
        }
        ("GET", ["invoices", id]) => get("invoice", id),

        ("POST", ["refunds"]) => {
            let refund = objects::create_refund(
                state,
                NewRefund {
                    charge: form.text("charge"),
                    payment_intent: form.text("payment_intent"),
                    amount: form.integer("amount")?,
                    reason: form.text("reason"),
                    metadata: form.metadata("metadata"),
                },
            )?;
            // Stripe reports a refund as `charge.refunded` about its charge,
            // listed by `GET /v1/events` for the test to deliver.
            if let Some(charge) = refund["charge"].as_str().and_then(|id| state.get(id).cloned()) {
                let now = state.now();
                objects::create_event(state, "charge.refunded", charge, now);
            }
            Ok(refund)
        }
        ("GET", ["refunds"]) => {
            let filters = form.filters(&["charge", "payment_intent"]);
            list(state, "refund", path, form, |refund| matches_filters(refund, &filters))
        }
        ("GET", ["refunds", id]) => get("refund", id),

        ("GET", ["balance_transactions"]) => {
            let filters = form.filters(&["currency", "source", "type"]);
            let payout = form.text("payout");
            list(state, "balance_transaction", path, form, |transaction| {
                matches_filters(transaction, &filters)
                    && payout.as_ref().is_none_or(|payout| {
                        transaction["id"].as_str().and_then(|id| state.payout_of.get(id)) == Some(payout)
                    })
            })
        }
        ("GET", ["balance_transactions", id]) => get("balance_transaction", id),

        ("GET", ["balance"]) => Ok(objects::balance(state)),
        ("GET", ["disputes", id]) => get("dispute", id),

        ("GET", ["payouts"]) => {
            let filters = form.filters(&["status", "destination"]);
            list(state, "payout", path, form, |payout| matches_filters(payout, &filters))
        }
        ("GET", ["payouts", id]) => get("payout", id),

        ("GET", ["events"]) => {
            let single = form.text("type");
            let many = form.strings("types");
            list(state, "event", path, form, |event| {
                let event_type = event["type"].as_str().unwrap_or_default();
                single.as_deref().is_none_or(|pattern| event_type_matches(pattern, event_type))
                    && (many.is_empty() || many.iter().any(|pattern| event_type_matches(pattern, event_type)))
            })
        }
        ("GET", ["events", id]) => get("event", id),

        ("POST", ["billing_portal", "sessions"]) => {
            let customer = form.text("customer").ok_or_else(|| ApiError::parameter_missing("customer"))?;
            objects::create_portal_session(state, &customer, form.text("return_url"))
        }

        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            None,
            format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/. (The fake Stripe serves only the endpoints kanpa uses.)"
            ),
            None,
        )),
    }
}

/// `type=invoice.*` matches every invoice event, as on Stripe.
fn event_type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

fn matches_filters(object: &Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(key, value)| object[key.as_str()] == value.as_str())
}

fn list(
    state: &State,
    object_type: &str,
    path: &str,
    form: &Form,
    keep: impl Fn(&Value) -> bool,
) -> Result<Value, ApiError> {
    let limit = match form.integer("limit")? {
        None => 10,
        Some(limit) if (1..=100).contains(&limit) => usize::try_from(limit).unwrap_or(10),
        Some(_) => {
            return Err(ApiError::invalid(
                "limit",
                "This value must be greater than or equal to 1 and less than or equal to 100.",
            ));
        }
    };
    let created = match form.tree.get("created") {
        Some(Value::Object(range)) => {
            let bound =
                |key: &str| -> Result<Option<i64>, ApiError> { integer_at(range, key, &format!("created[{key}]")) };
            CreatedRange { gt: bound("gt")?, gte: bound("gte")?, lt: bound("lt")?, lte: bound("lte")? }
        }
        Some(_) => {
            let exact = form.integer("created")?;
            CreatedRange { gte: exact, lte: exact, ..Default::default() }
        }
        None => CreatedRange::default(),
    };
    let query = ListQuery {
        limit,
        starting_after: form.text("starting_after"),
        ending_before: form.text("ending_before"),
        created,
    };
    state.list(object_type, path, &query, keep)
}

fn check_customer(state: &State, customer: Option<&str>) -> Result<(), ApiError> {
    match customer {
        Some(customer) if state.get_of("customer", customer).is_none() => {
            Err(ApiError::missing("customer", customer, "customer"))
        }
        _ => Ok(()),
    }
}

fn create_payment_intent(state: &mut State, form: &Form) -> Result<Value, ApiError> {
    let amount = form.integer("amount")?.ok_or_else(|| ApiError::parameter_missing("amount"))?;
    let currency = form.text("currency").ok_or_else(|| ApiError::parameter_missing("currency"))?;
    if amount < 1 {
        return Err(ApiError::invalid("amount", "This value must be greater than or equal to 1."));
    }
    let new = NewPaymentIntent {
        amount,
        currency,
        customer: form.text("customer"),
        payment_method: form.text("payment_method"),
        description: form.text("description"),
        metadata: form.metadata("metadata"),
        payment_method_types: form.strings("payment_method_types"),
        setup_future_usage: form.text("setup_future_usage"),
        receipt_email: form.text("receipt_email"),
    };
    check_customer(state, new.customer.as_deref())?;
    // `off_session` (true, one_off, recurring) changes nothing here: every
    // confirmation of the fake is one the customer cannot take part in.
    let payment_intent = objects::create_payment_intent(state, new);
    if form.boolean("confirm")?.unwrap_or(false) {
        let id = objects::id_of(&payment_intent);
        objects::confirm_payment_intent(state, &id, None)
    } else {
        Ok(payment_intent)
    }
}

fn create_checkout_session(state: &mut State, form: &Form) -> Result<Value, ApiError> {
    let mut items = Vec::new();
    for (index, line) in form.array("line_items").iter().enumerate() {
        items.push(plan_item(state, line, &format!("line_items[{index}]"), form.text("currency"))?);
    }
    let trial_period_days = match form.node_at(&["subscription_data", "trial_period_days"]) {
        Some(value) => Some(parse_integer(value, "subscription_data[trial_period_days]")?),
        None => None,
    };
    let new = NewCheckoutSession {
        mode: form.text("mode").unwrap_or_else(|| "payment".to_owned()),
        currency: form.text("currency"),
        customer: form.text("customer"),
        customer_email: form.text("customer_email"),
        client_reference_id: form.text("client_reference_id"),
        success_url: form.text("success_url"),
        cancel_url: form.text("cancel_url"),
        metadata: form.metadata("metadata"),
        payment_method_types: {
            let mut types = form.strings("payment_method_types");
            if types.is_empty() {
                types = form.strings("allowed_payment_method_types");
            }
            types
        },
        expires_at: form.integer("expires_at")?,
        plan: CheckoutPlan {
            items,
            payment_intent_metadata: form.metadata_at(&["payment_intent_data", "metadata"]),
            subscription_metadata: form.metadata_at(&["subscription_data", "metadata"]),
            setup_intent_metadata: form.metadata_at(&["setup_intent_data", "metadata"]),
            trial_period_days,
        },
    };
    objects::create_checkout_session(state, new)
}

/// A line item or subscription item: `price` (a stored price) or
/// `price_data` (`currency`, `unit_amount`, `recurring`, `product` or
/// `product_data[name]`), and `quantity`.
fn plan_item(state: &State, node: &Value, param: &str, default_currency: Option<String>) -> Result<PlanItem, ApiError> {
    let quantity = match node.get("quantity") {
        Some(value) => parse_integer(value, &format!("{param}[quantity]"))?,
        None => 1,
    };
    if let Some(price_id) = node.get("price").and_then(Value::as_str) {
        let price = state
            .get_of("price", price_id)
            .ok_or_else(|| ApiError::missing("price", price_id, &format!("{param}[price]")))?;
        return Ok(PlanItem::from_price(&price, quantity));
    }
    let Some(price_data) = node.get("price_data") else {
        return Err(ApiError::parameter_missing(&format!("{param}[price]")));
    };
    let unit_amount = match (price_data.get("unit_amount"), price_data.get("unit_amount_decimal")) {
        (Some(value), _) => parse_integer(value, &format!("{param}[price_data][unit_amount]"))?,
        (None, Some(value)) => {
            value.as_str().and_then(|text| text.split('.').next()).and_then(|whole| whole.parse().ok()).ok_or_else(
                || ApiError::invalid(&format!("{param}[price_data][unit_amount_decimal]"), "Invalid decimal"),
            )?
        }
        (None, None) => {
            return Err(ApiError::parameter_missing(&format!("{param}[price_data][unit_amount]")));
        }
    };
    let currency = price_data
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(default_currency)
        .ok_or_else(|| ApiError::parameter_missing(&format!("{param}[price_data][currency]")))?;
    let recurring = match price_data.get("recurring") {
        Some(recurring) => Some(Recurring {
            interval: recurring
                .get("interval")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::parameter_missing(&format!("{param}[price_data][recurring][interval]")))?
                .to_owned(),
            interval_count: match recurring.get("interval_count") {
                Some(value) => parse_integer(value, &format!("{param}[price_data][recurring][interval_count]"))?,
                None => 1,
            },
        }),
        None => None,
    };
    Ok(PlanItem {
        unit_amount,
        quantity,
        currency,
        price: None,
        product: price_data.get("product").and_then(Value::as_str).map(str::to_owned),
        product_name: price_data.pointer("/product_data/name").and_then(Value::as_str).map(str::to_owned),
        recurring,
    })
}

/// `POST /v1/prices`: a price of an existing `product`, or of a new one made
/// from `product_data[name]`.
fn create_price(state: &mut State, form: &Form) -> Result<Value, ApiError> {
    let currency = form.text("currency").ok_or_else(|| ApiError::parameter_missing("currency"))?;
    let unit_amount = form.integer("unit_amount")?.ok_or_else(|| ApiError::parameter_missing("unit_amount"))?;
    if unit_amount < 0 {
        return Err(ApiError::invalid("unit_amount", "Invalid non-negative integer"));
    }
    let product = form.text("product");
    let product_name = form.text_at(&["product_data", "name"]);
    if product.is_none() && product_name.is_none() {
        return Err(ApiError::parameter_missing("product"));
    }
    let interval = form.text_at(&["recurring", "interval"]);
    let mut item = PlanItem::new(unit_amount, &currency.to_ascii_lowercase(), interval.as_deref());
    item.product = product;
    item.product_name = product_name;
    let mut price = objects::price_object(state, &item);
    price["metadata"] = Value::Object(form.metadata("metadata"));
    Ok(state.put(price))
}

fn create_subscription(state: &mut State, form: &Form) -> Result<Value, ApiError> {
    let customer = form.text("customer").ok_or_else(|| ApiError::parameter_missing("customer"))?;
    let mut items = Vec::new();
    for (index, item) in form.array("items").iter().enumerate() {
        items.push(plan_item(state, item, &format!("items[{index}]"), form.text("currency"))?);
    }
    objects::create_subscription(
        state,
        NewSubscription {
            customer,
            items,
            metadata: form.metadata("metadata"),
            default_payment_method: form.text("default_payment_method"),
            trial_period_days: form.integer("trial_period_days")?,
            default_incomplete: form.text("payment_behavior").as_deref() == Some("default_incomplete"),
            cancel_at_period_end: form.boolean("cancel_at_period_end")?.unwrap_or(false),
            description: form.text("description"),
        },
    )
}

fn update_subscription(state: &mut State, id: &str, form: &Form) -> Result<Value, ApiError> {
    let mut items = Vec::new();
    for (index, item) in form.array("items").iter().enumerate() {
        let param = format!("items[{index}]");
        let names_price = item.get("price").is_some() || item.get("price_data").is_some();
        items.push(ItemChange {
            id: item.get("id").and_then(Value::as_str).map(str::to_owned),
            deleted: match item.get("deleted") {
                Some(value) => parse_boolean(value, &format!("{param}[deleted]"))?,
                None => false,
            },
            quantity: match item.get("quantity") {
                Some(value) => Some(parse_integer(value, &format!("{param}[quantity]"))?),
                None => None,
            },
            plan: if names_price { Some(plan_item(state, item, &param, None)?) } else { None },
        });
    }
    objects::update_subscription(
        state,
        id,
        SubscriptionChanges {
            metadata: form.metadata_changes("metadata"),
            pause_collection: match form.node_at(&["pause_collection"]) {
                None => None,
                Some(Value::String(s)) if s.is_empty() => Some(None),
                Some(_) => {
                    let behavior = form
                        .text_at(&["pause_collection", "behavior"])
                        .ok_or_else(|| ApiError::parameter_missing("pause_collection[behavior]"))?;
                    let resumes_at = match form.node_at(&["pause_collection", "resumes_at"]) {
                        Some(value) => Some(parse_integer(value, "pause_collection[resumes_at]")?),
                        None => None,
                    };
                    Some(Some((behavior, resumes_at)))
                }
            },
            cancel_at_period_end: form.boolean("cancel_at_period_end")?,
            default_payment_method: form.text("default_payment_method"),
            description: form.text("description"),
            items,
            proration_behavior: form.text("proration_behavior"),
        },
    )
}

// ----- the pages a customer's browser would see ------------------------------

fn hosted_page(shared: &Shared, method: &Method, path: &str) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut state = shared.lock();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["checkout", id]) => match state.get_of("checkout.session", id) {
            Some(session) => Html(format!(
                "<!doctype html><title>Fake Stripe Checkout</title>\
                 <h1>Fake Stripe Checkout</h1>\
                 <p>Session {id}, mode {mode}, status {status}, amount {amount} {currency}.</p>\
                 <form method=post action=\"/checkout/{id}/complete\"><button>Pay</button></form>\
                 <p><a href=\"{cancel}\">Cancel</a></p>",
                mode = session["mode"].as_str().unwrap_or_default(),
                status = session["status"].as_str().unwrap_or_default(),
                amount = session["amount_total"],
                currency = session["currency"].as_str().unwrap_or_default(),
                cancel = session["cancel_url"].as_str().unwrap_or("/"),
            ))
            .into_response(),
            None => (StatusCode::NOT_FOUND, "no such Checkout Session").into_response(),
        },
        ("POST", ["checkout", id, "complete"]) => match objects::complete_checkout_session(&mut state, id) {
            Ok(session) => {
                let target = session["success_url"].as_str().unwrap_or("/").replace("{CHECKOUT_SESSION_ID}", id);
                Redirect::to(&target).into_response()
            }
            Err(error) => (StatusCode::BAD_REQUEST, error.message().to_owned()).into_response(),
        },
        ("GET", ["billing_portal", id]) => match state.get_of("billing_portal.session", id) {
            Some(session) => Html(format!(
                "<!doctype html><title>Fake Stripe billing portal</title>\
                 <h1>Fake Stripe billing portal</h1><p>Customer {customer}.</p>\
                 <p><a href=\"{back}\">Return</a></p>",
                customer = session["customer"].as_str().unwrap_or_default(),
                back = session["return_url"].as_str().unwrap_or("/"),
            ))
            .into_response(),
            None => (StatusCode::NOT_FOUND, "no such portal session").into_response(),
        },
        _ => (StatusCode::NOT_FOUND, "not a page of the fake Stripe").into_response(),
    }
}

// ----- form parameters ------------------------------------------------------

/// A decoded form body or query: the flat pairs as sent, and the same as a
/// tree (`line_items[0][price_data][unit_amount]=3000` becomes
/// `{"line_items": [{"price_data": {"unit_amount": "3000"}}]}`), every leaf
/// a string.
pub(crate) struct Form {
    pub pairs: Vec<(String, String)>,
    pub tree: Map<String, Value>,
}

impl Form {
    pub fn parse(raw: &[u8]) -> Result<Form, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
            .map_err(|error| ApiError::bad_request(None, format!("Invalid form-encoded parameters: {error}")))?;
        let tree = nest(&pairs);
        Ok(Form { pairs, tree })
    }

    pub fn text(&self, key: &str) -> Option<String> {
        self.tree.get(key).and_then(Value::as_str).map(str::to_owned)
    }

    fn node_at(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        rest.iter().try_fold(self.tree.get(*first)?, |node, key| node.get(*key))
    }

    pub fn text_at(&self, path: &[&str]) -> Option<String> {
        self.node_at(path).and_then(Value::as_str).map(str::to_owned)
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        integer_at(&self.tree, key, key)
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.tree.get(key) {
            Some(value) => parse_boolean(value, key).map(Some),
            None => Ok(None),
        }
    }

    /// `key[0]=a&key[1]=b` (or `key[]=a`) as a list.
    pub fn strings(&self, key: &str) -> Vec<String> {
        match self.tree.get(key) {
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(value)) if !value.is_empty() => vec![value.clone()],
            _ => Vec::new(),
        }
    }

    pub fn array(&self, key: &str) -> Vec<Value> {
        match self.tree.get(key) {
            Some(Value::Array(values)) => values.clone(),
            _ => Vec::new(),
        }
    }

    /// `key[name]=value` pairs of a create request (empty values dropped).
    pub fn metadata(&self, key: &str) -> Metadata {
        self.metadata_at(&[key])
    }

    pub fn metadata_at(&self, path: &[&str]) -> Metadata {
        match self.node_at(path) {
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, value)| value.as_str().is_some_and(|text| !text.is_empty()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            _ => Metadata::new(),
        }
    }

    /// Metadata edits of an update request, if any were sent.
    pub fn metadata_changes(&self, key: &str) -> Option<MetadataChanges> {
        match self.tree.get(key)? {
            Value::Object(map) => Some(MetadataChanges {
                clear_all: false,
                set: map
                    .iter()
                    .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                    .collect(),
            }),
            _ => Some(MetadataChanges { clear_all: true, set: Vec::new() }),
        }
    }

    /// Equality filters of a list request, for the keys that were sent.
    pub fn filters(&self, keys: &[&str]) -> Vec<(String, String)> {
        keys.iter().filter_map(|key| self.text(key).map(|value| ((*key).to_owned(), value))).collect()
    }
}

fn integer_at(map: &Map<String, Value>, key: &str, param: &str) -> Result<Option<i64>, ApiError> {
    match map.get(key) {
        Some(value) => parse_integer(value, param).map(Some),
        None => Ok(None),
    }
}

fn parse_integer(value: &Value, param: &str) -> Result<i64, ApiError> {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ApiError::invalid(param, format!("Invalid integer: {value}")))
}

fn parse_boolean(value: &Value, param: &str) -> Result<bool, ApiError> {
    match value.as_str() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(ApiError::invalid(param, format!("Invalid boolean: {value}"))),
    }
}

/// Turns bracketed keys into a tree; maps whose keys are all indexes become
/// arrays in index order.
fn nest(pairs: &[(String, String)]) -> Map<String, Value> {
    #[derive(Default)]
    struct Node {
        value: Option<String>,
        children: BTreeMap<String, Node>,
        order: Vec<String>,
    }

    fn insert(node: &mut Node, segments: &[String], value: &str) {
        let Some((first, rest)) = segments.split_first() else {
            node.value = Some(value.to_owned());
            return;
        };
        // `key[]` appends.
        let key = if first.is_empty() { node.children.len().to_string() } else { first.clone() };
        if !node.children.contains_key(&key) {
            node.order.push(key.clone());
        }
        insert(node.children.entry(key).or_default(), rest, value);
    }

    fn to_value(node: Node) -> Value {
        if node.children.is_empty() {
            return Value::String(node.value.unwrap_or_default());
        }
        let all_indexes =
            node.children.keys().all(|key| !key.is_empty() && key.bytes().all(|byte| byte.is_ascii_digit()));
        let mut children = node.children;
        if all_indexes {
            let mut indexed: Vec<(u64, Node)> =
                children.into_iter().map(|(key, child)| (key.parse().unwrap_or(u64::MAX), child)).collect();
            indexed.sort_by_key(|(index, _)| *index);
            Value::Array(indexed.into_iter().map(|(_, child)| to_value(child)).collect())
        } else {
            let mut map = Map::new();
            for key in node.order {
                if let Some(child) = children.remove(&key) {
                    map.insert(key, to_value(child));
                }
            }
            Value::Object(map)
        }
    }

    let mut root = Node::default();
    for (key, value) in pairs {
        let segments: Vec<String> = match key.find('[') {
            Some(open) => {
                let mut segments = vec![key[..open].to_owned()];
                segments.extend(key[open..].split('[').skip(1).map(|segment| segment.trim_end_matches(']').to_owned()));
                segments
            }
            None => vec![key.clone()],
        };
        insert(&mut root, &segments, value);
    }
    match to_value(root) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod form_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_keys_become_a_tree() {
        let form = Form::parse(
            b"mode=payment&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=3000\
              &line_items[0][quantity]=2&line_items[1][price]=price_x\
              &metadata[pledge_id]=7&payment_method_types[0]=card&payment_method_types[1]=konbini\
              &expand[]=a&expand[]=b",
        )
        .expect("valid form");
        assert_eq!(
            Value::Object(form.tree.clone()),
            json!({
                "mode": "payment",
                "line_items": [
                    {"price_data": {"unit_amount": "3000"}, "quantity": "2"},
                    {"price": "price_x"},
                ],
                "metadata": {"pledge_id": "7"},
                "payment_method_types": ["card", "konbini"],
                "expand": ["a", "b"],
            })
        );
        assert_eq!(form.pairs[0], ("mode".to_owned(), "payment".to_owned()));
        assert_eq!(form.pairs[1].0, "line_items[0][price_data][unit_amount]", "pairs are kept decoded, as sent");
        assert_eq!(form.strings("payment_method_types"), ["card", "konbini"]);
        assert_eq!(form.metadata("metadata")["pledge_id"], "7");
    }
}
