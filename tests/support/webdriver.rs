//! A small WebDriver client for headless Chromium: enough to click through
//! kanpa's pages like a person and save full-page screenshots.
//!
//! It starts its own `chromedriver` on a free loopback port and speaks the
//! W3C WebDriver protocol over HTTP with reqwest. Full-page screenshots go
//! through chromedriver's Chrome DevTools passthrough
//! (`/goog/cdp/execute`): the viewport is set to the wanted width (as a
//! phone, below 600 px), the page's full height is measured, and
//! `Page.captureScreenshot` captures beyond the viewport.
//!
//! `chromium`/`chromedriver` are found on `PATH` (or through
//! `KANPA_CHROMIUM` / `KANPA_CHROMEDRIVER`); when either is missing,
//! [`Browser::start`] says so and returns `None`, unless
//! `KANPA_REQUIRE_BROWSER=1` (as CI sets it) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub const INSTALL_HINT: &str =
    "The browser test needs Chromium and its driver: apt-get install chromium chromium-driver fonts-noto-cjk";

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

fn find(variable: &str, names: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => on_path(names),
    }
}

/// Chromium and chromedriver, if both are installed.
pub fn installed() -> Result<(PathBuf, PathBuf), String> {
    let chromium = find("KANPA_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no chromium on PATH (or KANPA_CHROMIUM)")?;
    let driver =
        find("KANPA_CHROMEDRIVER", &["chromedriver"]).ok_or("no chromedriver on PATH (or KANPA_CHROMEDRIVER)")?;
    Ok((chromium, driver))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9515)
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or explains why
    /// it cannot and returns `None` (a failure under `KANPA_REQUIRE_BROWSER=1`).
    pub async fn start() -> Option<Browser> {
        let (chromium, driver) = match installed() {
            Ok(found) => found,
            Err(why) => {
                if std::env::var("KANPA_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                    panic!("KANPA_REQUIRE_BROWSER=1 but {why}. {INSTALL_HINT}");
                }
                eprintln!(
                    "\n!!!!!!!! SKIPPED: headless browser test !!!!!!!!\n{why}.\n{INSTALL_HINT}\n\
                     Set KANPA_REQUIRE_BROWSER=1 to make this a failure.\n"
                );
                return None;
            }
        };
        Some(Browser::launch(&chromium, &driver).await.expect("headless Chromium starts"))
    }

    async fn launch(chromium: &Path, driver: &Path) -> anyhow::Result<Browser> {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("could not run {}: {e}", driver.display()))?;
        let driver = Driver { child };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{root}/status")).send().await.ok();
            let ready = match ready {
                Some(r) => r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                None => false,
            };
            if ready {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--window-size=390,844", "--lang=ja", "--hide-scrollbars"],
                // A Japanese phone: Accept-Language asks for Japanese.
                "prefs": { "intl.accept_languages": "ja,en" },
            },
        }}});
        let created: Value = http.post(format!("{root}/session")).json(&capabilities).send().await?.json().await?;
        let id = created["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session from chromedriver: {created}"))?;
        Ok(Browser { http, session: format!("{root}/session/{id}"), _driver: driver })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(status.is_success(), "WebDriver {path} answered {status}: {value}");
        value["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the address contains `part` (a click's navigation may
    /// still be under way when the click returns); returns the address.
    pub async fn wait_for_url(&self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.current_url().await;
            if url.contains(part) {
                return url;
            }
            assert!(Instant::now() < deadline, "still at {url}, waiting for an address containing {part}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's source contains `text`; returns the source.
    pub async fn wait_for_text(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(Instant::now() < deadline, "the page never showed {text:?}: {source}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching a CSS selector; panics if there is none.
    pub async fn find(&self, css: &str) -> Element {
        let found = self.post("/element", json!({ "using": "css selector", "value": css })).await;
        Element(found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned())
    }

    pub async fn click(&self, css: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Replaces what a text field holds.
    pub async fn fill(&self, css: &str, text: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    pub async fn is_selected(&self, css: &str) -> bool {
        let Element(id) = self.find(css).await;
        self.get(&format!("/element/{id}/selected")).await == Value::Bool(true)
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    async fn cdp(&self, command: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": command, "params": params })).await
    }

    /// A PNG of the whole page laid out `width` CSS pixels wide (as a phone
    /// below 600), written to `path`.
    pub async fn screenshot(&self, width: u32, path: &Path) {
        let mobile = width < 600;
        let metrics = json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": mobile });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics).await;
        // Let the page reflow at the new width before measuring it.
        self.execute("return document.documentElement.scrollHeight").await;
        let layout = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let height = layout["cssContentSize"]["height"].as_f64().unwrap_or(800.0).ceil().max(1.0);
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 } }),
            )
            .await;
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await;
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Sets a cookie for the current page's site (open a page of it first).
    pub async fn add_cookie(&self, name: &str, value: &str) {
        self.post("/cookie", json!({ "cookie": { "name": name, "value": value, "path": "/" } })).await;
    }

    /// Lays the page out as `media` ("print" or "screen") until set back.
    pub async fn emulate_media(&self, media: &str) {
        self.cdp("Emulation.setEmulatedMedia", json!({ "media": media })).await;
    }

    /// The page's width in CSS pixels when laid out in a viewport `width` wide
    /// (wider than `width` means it scrolls sideways).
    pub async fn layout_width(&self, width: u32) -> f64 {
        let metrics = json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600 });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics).await;
        let scroll = self.execute("return document.documentElement.scrollWidth").await;
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await;
        scroll.as_f64().unwrap_or(f64::MAX)
    }

    /// The page printed to PDF as Chromium's print dialog would (honouring the
    /// page's `@page` size), written to `path`; returns the number of pages.
    pub async fn print_to_pdf(&self, path: &Path) -> usize {
        let printed = self.cdp("Page.printToPDF", json!({ "preferCSSPageSize": true, "printBackground": true })).await;
        let pdf = base64_decode(printed["data"].as_str().expect("PDF data"));
        assert!(pdf.starts_with(b"%PDF"), "a PDF");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact directory");
        }
        std::fs::write(path, &pdf).expect("write the PDF");
        // Each page is one object of `/Type /Page` (the tree root is `/Pages`).
        let text = String::from_utf8_lossy(&pdf);
        text.matches("/Type /Page").count() - text.matches("/Type /Pages").count()
    }

    /// Ends the session; chromedriver stops when the browser is dropped.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Standard base64 (the screenshots' encoding), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }
}
