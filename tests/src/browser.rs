//! A real headless Chromium driven over WebDriver (`chromedriver` and the `fantoccini` client),
//! for the tests of the portal and the operator console: they click and type in the pages the
//! way a person does, with the console's CSP, cookies and redirects in force.
//!
//! Each [`Browser`] starts its own `chromedriver` on a free port, in a process group of its
//! own with a fresh profile directory, and kills the whole group (the driver and every Chromium
//! process it started) when dropped, panicking tests included. Screenshots go to
//! `target/screenshots/<name>.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`make test` installs them); the binaries
//! are looked up on `PATH`, or taken from `HERALD_CHROMEDRIVER` and `HERALD_CHROMIUM`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::free_addr;

/// Window size of every test browser (a desktop page; tests resize for the phone layout).
pub const WINDOW: (u32, u32) = (1280, 900);

/// How long a page element is waited for.
const WAIT: Duration = Duration::from_secs(10);

/// A headless Chromium session and the `chromedriver` serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

/// Where screenshots are written: `<target>/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    /// Starts `chromedriver` and opens a headless Chromium session on it.
    pub async fn start() -> Browser {
        let addr = free_addr();
        let profile =
            std::env::temp_dir().join(format!("herald-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("chromium profile directory");
        let driver = Command::new(program("HERALD_CHROMEDRIVER", "chromedriver"))
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own: dropping the browser kills the driver and its Chromium.
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; `make test` installs it)");
        let mut caps = serde_json::Map::new();
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if let Ok(binary) = std::env::var("HERALD_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        caps.insert("goog:chromeOptions".into(), options);
        let mut browser = Browser {
            client: connect(addr, caps).await,
            driver,
            profile,
        };
        browser.check_driver();
        browser
    }

    fn check_driver(&mut self) {
        if let Ok(Some(status)) = self.driver.try_wait() {
            panic!("chromedriver exited ({status})");
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path of the current page (`/portal/endpoints/…`).
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_owned()
    }

    /// The rendered text of the whole page (what a reader sees, markup excluded).
    pub async fn text(&self) -> String {
        self.find("body").await.text().await.expect("page text")
    }

    /// The page's markup as the browser holds it.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The first element matching a CSS selector, waited for.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no element {css:?} on {}: {e}\npage text: {}",
                self.where_am_i().await,
                self.page_text().await
            ),
        }
    }

    /// Every element matching a CSS selector now (none is fine).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
    }

    /// The element with `data-testid="<id>"`, waited for.
    pub async fn testid(&self, id: &str) -> Element {
        self.find(&format!("[data-testid=\"{id}\"]")).await
    }

    /// The text of the element with `data-testid="<id>"`.
    pub async fn testid_text(&self, id: &str) -> String {
        self.testid(id).await.text().await.expect("element text")
    }

    /// Whether an element with `data-testid="<id>"` is on the page now.
    pub async fn has_testid(&self, id: &str) -> bool {
        !self
            .all(&format!("[data-testid=\"{id}\"]"))
            .await
            .is_empty()
    }

    /// Types `value` into the form control named `name` (inside `scope`, a CSS selector),
    /// replacing what it held.
    pub async fn fill(&self, scope: &str, name: &str, value: &str) {
        let field = self.find(&format!("{scope} [name=\"{name}\"]")).await;
        field.clear().await.expect("clear field");
        if !value.is_empty() {
            field.send_keys(value).await.expect("type into field");
        }
    }

    /// Sets a checkbox named `name` (inside `scope`) to `on` by clicking it as needed.
    pub async fn check(&self, scope: &str, name: &str, value: &str, on: bool) {
        let css = format!("{scope} input[name=\"{name}\"][value=\"{value}\"]");
        let field = self.find(&css).await;
        if field.is_selected().await.expect("checkbox state") != on {
            field.click().await.expect("click checkbox");
        }
    }

    /// Picks the option with `value` in the `<select name=…>` inside `scope`.
    pub async fn select(&self, scope: &str, name: &str, value: &str) {
        let field = self.find(&format!("{scope} select[name=\"{name}\"]")).await;
        field.select_by_value(value).await.expect("select option");
    }

    /// Clicks the element matching `css` (a link, or a button that submits its form) and waits
    /// until the next page has replaced this one and loaded.
    pub async fn click(&self, css: &str) {
        let old = self.find("html").await;
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
        let deadline = Instant::now() + WAIT;
        // The old document's root goes stale once the new page is in.
        while old.tag_name().await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "clicking {css:?} did not lead to another page: {}",
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while self
            .client
            .execute("return document.readyState", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
            != Some("complete")
        {
            assert!(
                Instant::now() < deadline,
                "the page after {css:?} did not load"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Saves a PNG of the viewport as `target/screenshots/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Saves a PNG of the whole page from its top, as tall as its content (at most 4,000 px),
    /// then restores the window.
    pub async fn full_screenshot(&self, name: &str) -> PathBuf {
        // The page's height plus the window's own (outer minus inner) height.
        let dims = self
            .client
            .execute(
                "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); \
                 return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await
            .ok();
        let px = |i: usize| {
            dims.as_ref()
                .and_then(|d| d.get(i))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let height = (px(0) + px(1)).clamp(u64::from(WINDOW.1), 4000) as u32;
        let _ = self.client.set_window_size(WINDOW.0, height).await;
        let path = self.screenshot(name).await;
        let _ = self.client.set_window_size(WINDOW.0, WINDOW.1).await;
        path
    }

    /// Removes every cookie of the current site (a fresh visitor).
    pub async fn forget_cookies(&self) {
        self.client
            .delete_all_cookies()
            .await
            .expect("delete cookies");
    }

    /// The value of cookie `name` on the current site, if set.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    /// The page's text for a failure message (without waiting, at most 2,000 characters).
    async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(2000)
                .collect(),
            Err(_) => "<no body>".into(),
        }
    }

    async fn where_am_i(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(_) => "<unknown page>".into(),
        }
    }

    /// Ends the session (Chromium quits); dropping the browser then kills the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Connects to the driver at `addr` once it listens (at most 20 s).
async fn connect(
    addr: std::net::SocketAddr,
    caps: serde_json::Map<String, serde_json::Value>,
) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&format!("http://{addr}"))
        .await
        .expect("a Chromium session (is the chromium package installed?)")
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGKILL to the group: chromedriver and the Chromium processes it started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper drives a real Chromium, and dropping it leaves no driver or browser behind.
    #[tokio::test]
    async fn drives_chromium_and_cleans_up() {
        let browser = Browser::start().await;
        let group = browser.driver.id();
        browser
            .goto("data:text/html,<title>t</title><p data-testid=\"hello\">a &lt;b&gt;</p>")
            .await;
        assert_eq!(browser.testid_text("hello").await, "a <b>");
        let shot = browser.screenshot("browser-helper-smoke").await;
        assert!(std::fs::metadata(&shot).expect("screenshot").len() > 100);
        std::fs::remove_file(shot).ok();
        drop(browser);
        // Killed processes linger as zombies until init reaps them: wait for that.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive = Command::new("pgrep")
                .args(["-g", &group.to_string()])
                .output()
                .expect("pgrep");
            if alive.stdout.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes of the browser's group still run: {}",
                String::from_utf8_lossy(&alive.stdout)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
