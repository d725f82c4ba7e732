//! Page templates shared across routes. Route-specific templates live with
//! their routes.

use askama::Template;

use crate::i18n::Tr;

/// Renders a template, or a minimal page if rendering itself fails (which
/// would be a bug in a template, logged here).
pub trait RenderHtml: Template {
    fn render_html(&self) -> String {
        self.render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "template failed to render");
            "<!doctype html><title>kanpa</title><p>Internal error</p>".to_owned()
        })
    }
}

impl<T: Template> RenderHtml for T {}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub tr: Tr,
    pub heading: String,
    pub message: String,
    pub request_id: String,
    pub status: u16,
}
