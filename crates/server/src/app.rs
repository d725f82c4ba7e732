//! Building and running the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, Request};
use axum::middleware::from_fn;
use kanpa_ledger::Db;
use kanpa_messaging::jobs::Workers;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::Config;
use crate::workers::{self, Extras};
use crate::{error, i18n, routes, telemetry};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. Handlers take it by value (axum clones it
/// for every request), so it is one `Arc` around [`Shared`]; its fields read
/// as `state.db`, `state.site`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: Db,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// Woken when a request enqueues work.
    pub workers: Workers,
    pub stripe_webhook_secrets: Arc<Vec<String>>,
    /// Stores verified webhook events, many per commit under load.
    pub intake: kanpa_messaging::intake::GroupIntake,
    pub gateway: Arc<dyn kanpa_payments::PaymentGateway>,
    pub site: kanpa_campaigns::Site,
    /// Public pages rendered in the last second.
    pub pages: crate::page_cache::PageCache,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout();
    Router::new()
        .merge(routes::health::router())
        .merge(routes::home::router())
        .merge(routes::assets::router())
        .merge(routes::webhooks::router())
        .merge(routes::api::router())
        .merge(routes::salon_api::router())
        .merge(routes::seller_api::router())
        .merge(routes::legal::router())
        .merge(routes::exports::router())
        .merge(routes::reconciliation::router())
        .merge(routes::campaigns::router())
        .merge(routes::sandbox::router())
        .merge(routes::me::router())
        .merge(routes::salons::router())
        .merge(routes::admin::router())
        .merge(routes::refund_api::router())
        .fallback(error::not_found)
        .layer(from_fn(telemetry::track_requests))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<_>| {
                            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                        })
                        // One access-log line per request, carrying the span's request id.
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(from_fn(error::render_errors))
                .layer(from_fn(i18n::remember_language))
                .layer(CompressionLayer::new())
                .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout)),
        )
}

/// A server bound to its address with its database migrated, not yet
/// serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Connects to and migrates the database, then binds.
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        Server::build_with(config, Extras::default()).await
    }

    /// As [`Server::build`], with handlers or a mailer plugged in.
    pub async fn build_with(config: Config, extras: Extras) -> anyhow::Result<Server> {
        let db = connect(&config).await?;
        let gateway = workers::gateway(&config, &db)?;
        let workers = workers::build(&config, db.clone(), extras)?;
        if config.reconcile_every().is_some() {
            crate::reconcile::arm(&db).await.context("arming the scheduled reconciliation")?;
        }
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("could not listen on {} (server.bind)", config.server.bind))?;
        let writers = match db.backend() {
            kanpa_ledger::Backend::Sqlite => 1,
            kanpa_ledger::Backend::Postgres => 2,
        };
        let state = AppState(Arc::new(Shared {
            intake: kanpa_messaging::intake::GroupIntake::start(db.clone(), writers),
            db,
            stripe_webhook_secrets: Arc::new(config.stripe.webhook_secrets()),
            gateway,
            site: config.site(),
            pages: Default::default(),
            config: Arc::new(config),
            metrics: telemetry::metrics_handle(),
            workers,
        }));
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// The configured public URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.state.site.base_url
    }

    /// Serves and runs the workers until `shutdown` resolves, then lets
    /// in-flight requests and jobs finish for up to the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let grace = self.state.config.shutdown_grace();
        let db = self.state.db.clone();
        let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
        let worker_pool = tokio::spawn(self.state.workers.clone().run(workers_stopped));
        let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
        let app = router(self.state);
        // The peer address is known to handlers (sign-in attempts are limited per address).
        let serve = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = signalled_tx.send(true);
            });
        let deadline = async move {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = serve => result.context("server failed")?,
            () = deadline => tracing::warn!("grace period over: dropping the requests still running"),
        }
        let _ = stop_workers.send(true);
        if tokio::time::timeout(grace, worker_pool).await.is_err() {
            tracing::warn!("grace period over: jobs still running will be retried after their lease");
        }
        db.close().await;
        Ok(())
    }
}

/// Opens the configured database and applies pending migrations.
pub async fn connect(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(config.database.url.expose(), &config.db_options())
        .await
        .context("could not open the database (database.url)")?;
    db.migrate().await.context("could not apply database migrations")?;
    Ok(db)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
