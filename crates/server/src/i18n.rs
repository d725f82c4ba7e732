//! Japanese and English text for everything a person reads.
//!
//! Strings live in `locales/{ja,en}/*.ftl` (Fluent). The language of a
//! request is, in order: a `lang` query parameter, a `lang` cookie, the
//! `Accept-Language` header, else Japanese.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Request};
use axum::http::header::{ACCEPT_LANGUAGE, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{LanguageIdentifier, Loader, langid, static_loader};
use kanpa_ledger::Locale;

static_loader! {
    static LOCALES = {
        locales: "./locales",
        fallback_language: "ja",
        // No Unicode isolation marks around arguments: they would end up,
        // invisible, in HTML, email subjects and CSV.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

static JA: LanguageIdentifier = langid!("ja");
static EN: LanguageIdentifier = langid!("en");

fn language(locale: Locale) -> &'static LanguageIdentifier {
    match locale {
        Locale::Ja => &JA,
        Locale::En => &EN,
    }
}

/// Translation for one locale; templates call `tr.t("key")`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tr(pub Locale);

impl Tr {
    pub fn t(&self, key: &str) -> String {
        LOCALES.lookup(language(self.0), key)
    }

    pub fn t_with(&self, key: &str, args: &[(&str, &str)]) -> String {
        let args: HashMap<std::borrow::Cow<'static, str>, FluentValue<'_>> =
            args.iter().map(|(k, v)| (std::borrow::Cow::Owned((*k).to_owned()), FluentValue::from(*v))).collect();
        LOCALES.lookup_with_args(language(self.0), key, &args)
    }

    /// A message with one number argument, so Fluent can pick the plural
    /// form ("1 day left", "3 days left").
    pub fn t_count(&self, key: &str, name: &str, n: i64) -> String {
        let mut args: HashMap<std::borrow::Cow<'static, str>, FluentValue<'_>> = HashMap::new();
        args.insert(std::borrow::Cow::Owned(name.to_owned()), FluentValue::from(n));
        LOCALES.lookup_with_args(language(self.0), key, &args)
    }

    pub fn lang(&self) -> &'static str {
        self.0.as_str()
    }

    /// The other language, for the switch link.
    pub fn other(&self) -> &'static str {
        match self.0 {
            Locale::Ja => "en",
            Locale::En => "ja",
        }
    }
}

/// The request's language, as an extractor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lang(pub Locale);

impl Lang {
    pub fn tr(self) -> Tr {
        Tr(self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Lang(negotiate(&parts.uri, &parts.headers)))
    }
}

/// Picks the locale for a request.
pub fn negotiate(uri: &Uri, headers: &axum::http::HeaderMap) -> Locale {
    if let Some(locale) = query_lang(uri) {
        return locale;
    }
    let from_cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("lang="))
        .find_map(Locale::parse);
    if let Some(locale) = from_cookie {
        return locale;
    }
    headers.get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(accept_language).unwrap_or_default()
}

fn query_lang(uri: &Uri) -> Option<Locale> {
    uri.query()?.split('&').filter_map(|kv| kv.strip_prefix("lang=")).find_map(Locale::parse)
}

/// The supported language with the highest q-value in an Accept-Language
/// header ("en-GB,en;q=0.9,ja;q=0.8").
fn accept_language(header: &str) -> Option<Locale> {
    let mut best: Option<(f32, Locale)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let Some(locale) = parts.next().and_then(Locale::parse) else {
            continue;
        };
        let q = parts.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, locale));
        }
    }
    best.map(|(_, l)| l)
}

/// Remembers a `?lang=` choice in a cookie so the next page keeps it.
pub async fn remember_language(request: Request, next: Next) -> Response {
    let chosen = query_lang(request.uri());
    let mut response = next.run(request).await;
    if let Some(locale) = chosen {
        let cookie = format!("lang={}; Path=/; Max-Age=31536000; SameSite=Lax", locale.as_str());
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_honours_q_values() {
        assert_eq!(accept_language("en-GB,en;q=0.9,ja;q=0.8"), Some(Locale::En));
        assert_eq!(accept_language("fr,ja;q=0.5,en;q=0.4"), Some(Locale::Ja));
        assert_eq!(accept_language("fr,de"), None);
        assert_eq!(accept_language("en;q=0,ja;q=0.1"), Some(Locale::Ja));
    }

    #[test]
    fn query_beats_cookie_beats_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        let plain: Uri = "/".parse().unwrap();
        assert_eq!(negotiate(&plain, &headers), Locale::En);
        headers.insert(COOKIE, HeaderValue::from_static("a=b; lang=ja"));
        assert_eq!(negotiate(&plain, &headers), Locale::Ja);
        let with_query: Uri = "/?x=1&lang=en".parse().unwrap();
        assert_eq!(negotiate(&with_query, &headers), Locale::En);
        assert_eq!(negotiate(&plain, &axum::http::HeaderMap::new()), Locale::Ja);
    }

    #[test]
    fn every_key_exists_in_both_languages() {
        let ja = include_str!("../locales/ja/main.ftl");
        let en = include_str!("../locales/en/main.ftl");
        let keys = |s: &str| -> Vec<String> {
            let mut k: Vec<String> =
                s.lines().filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_owned())).collect();
            k.sort();
            k
        };
        assert_eq!(keys(ja), keys(en));
        assert_eq!(Tr(Locale::Ja).t("error-heading"), "エラー");
        assert_eq!(Tr(Locale::En).t("error-heading"), "Error");
        assert!(Tr(Locale::En).t_with("error-request-id", &[("id", "abc")]).contains("abc"));
    }
}
