//! Rendered public pages kept for one second.
//!
//! The campaign page is the page everybody opens when a drive is shared; it
//! costs four database reads and a template. Rendered once per campaign
//! and language per second, it costs neither for everyone else in that
//! second. That is the whole invalidation rule: a page is never older than
//! [`PageCache::TTL`], measured from before its data was read, so every
//! total on it was true within the last second. No event has to reach this
//! process to invalidate it (the workers that change totals may run in
//! another one).
//!
//! One request renders a stale page while the others asking for it wait for
//! that render (single flight), so an expiry under load costs one set of
//! reads, not one per waiting connection. Failed renders (an unknown or
//! hidden campaign) are not kept.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use kanpa_ledger::Locale;

#[derive(Clone)]
struct Rendered {
    at: Instant,
    html: Bytes,
}

#[derive(Default)]
struct Slot {
    current: RwLock<Option<Rendered>>,
    /// Held by the one request re-rendering this page.
    refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    fn fresh(&self, ttl: Duration) -> Option<Bytes> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|r| r.at.elapsed() < ttl).map(|r| r.html.clone())
    }
}

/// One language's pages by key (a campaign's slug).
type Slots = RwLock<HashMap<String, Arc<Slot>>>;

/// Pages by language and key.
#[derive(Clone, Default)]
pub struct PageCache {
    slots: Arc<[Slots; 2]>,
}

impl PageCache {
    pub const TTL: Duration = Duration::from_secs(1);

    fn map(&self, locale: Locale) -> &Slots {
        match locale {
            Locale::Ja => &self.slots[0],
            Locale::En => &self.slots[1],
        }
    }

    fn slot(&self, key: &str, locale: Locale) -> Arc<Slot> {
        let map = self.map(locale);
        if let Some(slot) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return slot.clone();
        }
        map.write().unwrap_or_else(|e| e.into_inner()).entry(key.to_owned()).or_default().clone()
    }

    /// The page for `key` in `locale`: at most one second old, else rendered
    /// by `render` now.
    pub async fn get_or_render<E, F>(&self, key: &str, locale: Locale, render: impl FnOnce() -> F) -> Result<Bytes, E>
    where
        F: Future<Output = Result<String, E>>,
    {
        let slot = self.slot(key, locale);
        if let Some(html) = slot.fresh(Self::TTL) {
            return Ok(html);
        }
        let _rendering = slot.refresh.lock().await;
        // Rendered by the request we waited for?
        if let Some(html) = slot.fresh(Self::TTL) {
            return Ok(html);
        }
        let at = Instant::now();
        match render().await {
            Ok(html) => {
                let html = Bytes::from(html);
                *slot.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Rendered { at, html: html.clone() });
                Ok(html)
            }
            Err(e) => {
                self.map(locale).write().unwrap_or_else(|e| e.into_inner()).remove(key);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_page_is_rendered_once_a_second_and_failures_are_not_kept() {
        let cache = PageCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let render = |n: Arc<AtomicUsize>| async move {
            let count = n.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, ()>(format!("render {count}"))
        };
        let first = cache.get_or_render("drive", Locale::Ja, || render(renders.clone())).await.unwrap();
        let second = cache.get_or_render("drive", Locale::Ja, || render(renders.clone())).await.unwrap();
        assert_eq!((first.clone(), second), (Bytes::from("render 1"), Bytes::from("render 1")));
        let english = cache.get_or_render("drive", Locale::En, || render(renders.clone())).await.unwrap();
        assert_eq!(english, Bytes::from("render 2"), "each language is its own page");

        let failed = cache.get_or_render("nothing", Locale::Ja, || async { Err::<String, _>("404") }).await;
        assert_eq!(failed, Err("404"));
        assert!(cache.map(Locale::Ja).read().unwrap().get("nothing").is_none(), "not kept");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_arriving_together_share_one_render() {
        let cache = PageCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (cache, renders) = (cache.clone(), renders.clone());
            waiting.spawn(async move {
                cache
                    .get_or_render("drive", Locale::Ja, || async move {
                        renders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>("page".to_owned())
                    })
                    .await
            });
        }
        while let Some(page) = waiting.join_next().await {
            assert_eq!(page.unwrap(), Ok(Bytes::from("page")));
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_page_older_than_a_second_is_rendered_again() {
        let slot = Slot::default();
        *slot.current.write().unwrap() =
            Some(Rendered { at: Instant::now() - Duration::from_millis(1001), html: Bytes::from("old") });
        assert_eq!(slot.fresh(PageCache::TTL), None);
        *slot.current.write().unwrap() = Some(Rendered { at: Instant::now(), html: Bytes::from("new") });
        assert_eq!(slot.fresh(PageCache::TTL), Some(Bytes::from("new")));
    }
}
