//! `/`: what this server hosts.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::app::AppState;
use crate::i18n::Lang;
use crate::pages::{HomePage, RenderHtml};

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

async fn home(lang: Lang) -> Html<String> {
    Html(HomePage { tr: lang.tr() }.render_html())
}
