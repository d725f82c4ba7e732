//! The fake's memory: every object by id, the relations Stripe keeps without
//! showing them on the objects, and the knobs tests turn.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use super::objects::CheckoutPlan;
use super::{Fault, RecordedRequest};

pub(crate) struct State {
    /// `http://127.0.0.1:PORT`, for the URLs of hosted pages.
    pub base_url: String,
    objects: HashMap<String, Stored>,
    next_sequence: u64,
    next_invoice_number: u64,
    /// A frozen Unix time, or `None` for the real time.
    pub clock: Option<i64>,
    pub latency: Duration,
    pub faults: VecDeque<Fault>,
    pub declines: VecDeque<String>,
    /// Payment method id → the decline every charge of it gets.
    pub card_declines: HashMap<String, String>,
    /// Payment method id → how many more charges of it are declined, for a
    /// card that recovers (absent: declined until told otherwise).
    pub card_decline_limits: HashMap<String, u32>,
    /// Requests allowed per second, as Stripe's rate limiter.
    pub rate_limit: Option<u32>,
    /// The current one-second window and the requests counted in it.
    pub rate_window: (i64, u32),
    /// 429 answers given by the rate limiter.
    pub rate_limited: u64,
    pub requests: Vec<RecordedRequest>,
    pub idempotent_replies: HashMap<String, SavedReply>,
    pub webhook_url: Option<String>,
    /// Balance transaction id → the payout that paid it out.
    pub payout_of: HashMap<String, String>,
    /// Checkout Session id → what completing it creates.
    pub checkout_plans: HashMap<String, CheckoutPlan>,
    /// Whether changes make the events Stripe would send (see
    /// `FakeStripe::emit_events`), and those not yet delivered, oldest first.
    pub emit_events: bool,
    pub pending_events: Vec<Value>,
    /// Reads answered from a copy the caller keeps (see
    /// `FakeStripe::answer_reads_with`).
    pub reads: Option<Arc<ReadAnswer>>,
}

/// The text of a `GET` answer, given its path and `expand[]` values, or
/// `None` to render it from the stored objects.
pub type ReadAnswer = dyn Fn(&str, &[String]) -> Option<String> + Send + Sync;

/// An object and when it was first stored: lists order by `created`, then
/// by this, so objects created in the same second keep their order.
struct Stored {
    sequence: u64,
    object: Value,
}

/// An answer kept under an idempotency key.
#[derive(Clone)]
pub(crate) struct SavedReply {
    /// Method, path and the sorted parameters of the first request.
    pub fingerprint: (String, String, Vec<(String, String)>),
    pub status: u16,
    pub body: String,
}

impl State {
    pub fn new(base_url: String) -> State {
        State {
            base_url,
            objects: HashMap::new(),
            next_sequence: 0,
            next_invoice_number: 1,
            clock: None,
            latency: Duration::ZERO,
            faults: VecDeque::new(),
            declines: VecDeque::new(),
            card_declines: HashMap::new(),
            card_decline_limits: HashMap::new(),
            rate_limit: None,
            rate_window: (0, 0),
            rate_limited: 0,
            requests: Vec::new(),
            idempotent_replies: HashMap::new(),
            webhook_url: None,
            payout_of: HashMap::new(),
            checkout_plans: HashMap::new(),
            emit_events: false,
            pending_events: Vec::new(),
            reads: None,
        }
    }

    /// The decline a charge of this payment method gets now, if any; a
    /// limited one counts down and then stops.
    pub fn take_card_decline(&mut self, payment_method: &str) -> Option<String> {
        let code = self.card_declines.get(payment_method).cloned()?;
        if let Some(left) = self.card_decline_limits.get_mut(payment_method) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.card_decline_limits.remove(payment_method);
                self.card_declines.remove(payment_method);
            }
        }
        Some(code)
    }

    pub fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        })
    }

    /// A fresh Stripe-looking id: `pi_` and 24 letters and digits.
    pub fn new_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", random_alphanumeric(24))
    }

    pub fn next_invoice_number(&mut self) -> u64 {
        let number = self.next_invoice_number;
        self.next_invoice_number += 1;
        number
    }

    /// Stores an object by its `id`, replacing an earlier version (which
    /// keeps its place in lists). Returns a copy.
    pub fn put(&mut self, object: Value) -> Value {
        let id = object.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        match self.objects.get_mut(&id) {
            Some(stored) => stored.object = object.clone(),
            None => {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.objects.insert(id, Stored { sequence, object: object.clone() });
            }
        }
        object
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id).map(|stored| &stored.object)
    }

    /// The object with this id if it is of this kind.
    pub fn get_of(&self, object_type: &str, id: &str) -> Option<Value> {
        self.get(id).filter(|object| object["object"] == object_type).cloned()
    }

    /// Every object of a kind, newest first.
    pub fn all_of(&self, object_type: &str) -> Vec<&Value> {
        let mut found: Vec<&Stored> =
            self.objects.values().filter(|stored| stored.object["object"] == object_type).collect();
        found
            .sort_by_key(|stored| std::cmp::Reverse((stored.object["created"].as_i64().unwrap_or(0), stored.sequence)));
        found.into_iter().map(|stored| &stored.object).collect()
    }

    /// A Stripe list object of the objects of a kind that pass `keep`,
    /// newest first, paged as `query` asks.
    pub fn list(
        &self,
        object_type: &str,
        url: &str,
        query: &ListQuery,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Value, ApiError> {
        let matching: Vec<&Value> = self
            .all_of(object_type)
            .into_iter()
            .filter(|object| query.created.contains(object["created"].as_i64().unwrap_or(0)))
            .filter(|object| keep(object))
            .collect();
        let position_of = |id: &str, param: &str| {
            matching
                .iter()
                .position(|object| object["id"] == id)
                .ok_or_else(|| ApiError::missing(object_type, id, param))
        };
        let (page, has_more): (Vec<&Value>, bool) = if let Some(cursor) = &query.starting_after {
            let after = position_of(cursor, "starting_after")? + 1;
            let rest = &matching[after..];
            let page: Vec<&Value> = rest.iter().take(query.limit).copied().collect();
            (page, rest.len() > query.limit)
        } else if let Some(cursor) = &query.ending_before {
            let before = position_of(cursor, "ending_before")?;
            let newer = &matching[..before];
            let start = newer.len().saturating_sub(query.limit);
            (newer[start..].to_vec(), start > 0)
        } else {
            let page: Vec<&Value> = matching.iter().take(query.limit).copied().collect();
            (page, matching.len() > query.limit)
        };
        Ok(json!({
            "object": "list",
            "data": page,
            "has_more": has_more,
            "url": url,
        }))
    }
}

/// Paging and the `created` filter every list endpoint takes.
#[derive(Clone, Debug)]
pub(crate) struct ListQuery {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    pub created: CreatedRange,
}

/// `created`, `created[gt]`, `created[gte]`, `created[lt]`, `created[lte]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CreatedRange {
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
}

impl CreatedRange {
    fn contains(&self, created: i64) -> bool {
        self.gt.is_none_or(|bound| created > bound)
            && self.gte.is_none_or(|bound| created >= bound)
            && self.lt.is_none_or(|bound| created < bound)
            && self.lte.is_none_or(|bound| created <= bound)
    }
}

/// An error answer in Stripe's shape: `{"error": {"type", "code", …}}`.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub error: Map<String, Value>,
}

impl ApiError {
    pub fn new(
        status: u16,
        error_type: &str,
        code: Option<&str>,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> ApiError {
        let mut error = Map::new();
        if let Some(code) = code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))),
            );
        }
        error.insert("message".into(), json!(message.into()));
        if let Some(param) = param {
            error.insert("param".into(), json!(param));
        }
        error.insert("type".into(), json!(error_type));
        ApiError { status, error }
    }

    /// 404 `resource_missing`: "No such payment_intent: 'pi_…'".
    pub fn missing(object_type: &str, id: &str, param: &str) -> ApiError {
        let name = object_type.replace('.', "_");
        ApiError::new(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {name}: '{id}'"),
            Some(param),
        )
    }

    /// 400 `parameter_missing`.
    pub fn parameter_missing(param: &str) -> ApiError {
        ApiError::new(
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
            Some(param),
        )
    }

    /// 400 `invalid_request_error` about one parameter.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", None, message, Some(param))
    }

    /// 400 `invalid_request_error` with a code and no parameter.
    pub fn bad_request(code: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", code, message, None)
    }

    /// Adds a field to the error object (`decline_code`, `payment_intent`…).
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.error.insert(key.to_owned(), value);
        self
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.error })
    }

    pub fn message(&self) -> &str {
        self.error.get("message").and_then(Value::as_str).unwrap_or("Stripe error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message())
    }
}

impl std::error::Error for ApiError {}

pub(crate) fn random_alphanumeric(length: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect()
}
