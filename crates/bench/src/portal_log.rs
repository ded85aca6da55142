//! portal-log: how fast the portal's delivery log renders over a tenant with a million
//! deliveries (issue 25: ≤ 100 ms p95 server-side).
//!
//! Publishing a million events through Herald would take this machine minutes and measure the
//! pipeline again, so the tenant's history is generated straight into PostgreSQL instead: one
//! `INSERT … SELECT generate_series` per slice into the real `events` and `deliveries` tables
//! of a fresh installation (its migrations ran first), spread over the last seven days with
//! UUIDv7 ids made from each row's time (ids order by creation, as Herald's do), a realistic mix
//! of statuses (94 % success, 3 % failed, 2 % retrying, 1 % pending) and four endpoints that
//! exist in `endpoints`. Then `ANALYZE`, as autovacuum would have done by then.
//!
//! ingest, the ledger and `herald-console` run as release processes; a portal session is
//! opened the way a platform does (CreatePortalSession with the operator token, then the link
//! in the console), and the delivery-log page is fetched one request at a time, over loopback,
//! as four kinds of request: the first page, filtered by status (failed), filtered by endpoint,
//! and later pages reached through the "next" cursor link. The figure of a fetch is the
//! console's own `Server-Timing: app;dur=…` (request in to response out: the render, the gRPC
//! calls to ingest and the ledger, the ledger's query), the server-side time the issue bounds;
//! the time the client saw, to the page's last byte over loopback, is reported beside it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use herald_proto::v1 as pb;
use serde::Serialize;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::cli::Settings;
use crate::grpc::{self, authed};
use crate::load;
use crate::procs::Herald;

/// The issue's bound on the delivery log's p95.
pub const TARGET_P95_MS: f64 = 100.0;
/// Deliveries generated before `--scale`, and the floor.
const DELIVERIES: u64 = 1_000_000;
const MIN_DELIVERIES: u64 = 10_000;
/// Every event fans out to every endpoint.
const ENDPOINTS: usize = 4;
/// Events generated per INSERT statement.
const SLICE_EVENTS: u64 = 50_000;
/// Fetches of each kind of page, and unmeasured fetches before them.
const FETCHES: usize = 200;
const WARMUP: usize = 20;
/// The portal's delivery log (crates/console/PAGES.md): its path, its query parameters and
/// the `data-testid` of a row and of the "next page" link.
const LOG_PATH: &str = "/portal/deliveries";
const ROW_TESTID: &str = "delivery-row";
const NEXT_TESTID: &str = "next-page";

/// The sizes of a portal-log run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub deliveries: u64,
    pub endpoints: usize,
    pub fetches_per_kind: usize,
    pub warmup: usize,
    pub target_p95_ms: f64,
}

impl Plan {
    /// A million deliveries times `scale` (not below 10,000).
    pub fn new(scale: f64) -> Self {
        let deliveries = ((DELIVERIES as f64 * scale).round() as u64).max(MIN_DELIVERIES);
        Self {
            deliveries,
            endpoints: ENDPOINTS,
            fetches_per_kind: FETCHES,
            warmup: WARMUP,
            target_p95_ms: TARGET_P95_MS,
        }
    }
}

/// Fetch times of one kind of page, in milliseconds: server-side (`Server-Timing`), and the
/// client's p95 to the last byte.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PageFigures {
    pub kind: String,
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub client_p95_ms: f64,
    /// Rows on the last page fetched (a page of the log that lists nothing measures nothing).
    pub rows: usize,
}

/// What a portal-log run measured.
#[derive(Clone, Debug, Serialize)]
pub struct PortalLogReport {
    pub plan: Plan,
    /// Rows in `deliveries` after the generation, counted.
    pub deliveries: u64,
    pub generate_secs: f64,
    pub pages: Vec<PageFigures>,
    /// Every measured fetch together.
    pub overall: PageFigures,
    pub log_dir: String,
}

impl PortalLogReport {
    /// Why the run does not meet the target: one line per miss.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.overall.p95_ms > self.plan.target_p95_ms {
            out.push(format!(
                "delivery log p95 {:.1} ms is above the {} ms target",
                self.overall.p95_ms, self.plan.target_p95_ms
            ));
        }
        out.extend(
            self.pages
                .iter()
                .filter(|p| p.rows == 0)
                .map(|p| format!("{}: the page listed no deliveries", p.kind)),
        );
        out
    }
}

/// The portal-log run in the output: its report or why it failed.
#[derive(Clone, Debug, Serialize)]
pub struct PortalLogEntry {
    pub report: Option<PortalLogReport>,
    pub error: Option<String>,
}

impl PortalLogEntry {
    pub fn name(&self) -> String {
        "portal-log".to_owned()
    }
}

/// Runs the scenario and prints it as it ends.
pub async fn run(settings: &Settings, plan: &Plan) -> PortalLogEntry {
    let entry = match run_once(settings, plan).await {
        Ok(report) => PortalLogEntry {
            report: Some(report),
            error: None,
        },
        Err(e) => PortalLogEntry {
            report: None,
            error: Some(format!("{e:#}")),
        },
    };
    print(&entry);
    entry
}

fn progress(what: &str) {
    eprintln!("bench: portal-log: {what}");
}

async fn run_once(settings: &Settings, plan: &Plan) -> Result<PortalLogReport> {
    let deadline = Instant::now() + Duration::from_secs(settings.timeout);
    // Nothing is delivered: no dispatcher.
    let quiet = Settings {
        dispatchers: 0,
        ..settings.clone()
    };
    progress("starting Herald and the console");
    let mut herald = Herald::start(&quiet, "1m", deadline).await?;
    let result = async {
        let console = herald.start_console(deadline).await?;
        measure(settings, plan, &herald, console).await
    }
    .await;
    progress(&format!("stopping Herald and removing {}", herald.name));
    herald.stop().await;
    result
}

async fn measure(
    settings: &Settings,
    plan: &Plan,
    herald: &Herald,
    console: SocketAddr,
) -> Result<PortalLogReport> {
    let tenant = load::create_tenant(herald, "portal-log").await?;
    let endpoints = create_endpoints(&tenant, plan.endpoints).await?;
    progress(&format!(
        "generating {} deliveries in PostgreSQL",
        plan.deliveries
    ));
    let started = Instant::now();
    let deliveries = generate(settings, &herald.name, &tenant.id, &endpoints, plan).await?;
    let generate_secs = started.elapsed().as_secs_f64();
    progress(&format!(
        "{deliveries} deliveries in {generate_secs:.0} s; opening a portal session"
    ));
    let page = Pages::open(herald, console, &tenant.id).await?;
    for _ in 0..plan.warmup {
        page.fetch(LOG_PATH).await?;
    }
    // (server µs, client µs) of every measured fetch.
    let kinds = [
        ("first page", LOG_PATH.to_owned()),
        ("status failed", format!("{LOG_PATH}?status=failed")),
        (
            "one endpoint",
            format!("{LOG_PATH}?endpoint_id={}", endpoints[0]),
        ),
    ];
    let mut pages = Vec::new();
    let mut all = Vec::new();
    for (kind, path) in kinds {
        progress(&format!("fetching {kind} ({path})"));
        let (figures, samples) = page.repeat(kind, &path, plan.fetches_per_kind).await?;
        all.extend(samples);
        pages.push(figures);
    }
    progress("walking later pages through the cursor");
    let (figures, samples) = page.walk(plan.fetches_per_kind).await?;
    all.extend(samples);
    pages.push(figures);
    let mut overall = figures_of("all", &all);
    overall.rows = pages.iter().map(|p| p.rows).min().unwrap_or(0);
    Ok(PortalLogReport {
        plan: plan.clone(),
        deliveries,
        generate_secs,
        pages,
        overall,
        log_dir: herald.log_dir.display().to_string(),
    })
}

async fn create_endpoints(tenant: &load::Tenant, n: usize) -> Result<Vec<Uuid>> {
    let mut client = pb::endpoints_client::EndpointsClient::new(tenant.channel.clone());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let request = pb::CreateEndpointRequest {
            url: format!("http://127.0.0.1:9/portal-log/{i}"),
            description: format!("portal-log endpoint {i}"),
            event_types: vec!["*".into()],
            ..Default::default()
        };
        let endpoint = client
            .create_endpoint(authed(request, &tenant.auth))
            .await
            .context("creating an endpoint")?
            .into_inner()
            .endpoint
            .context("CreateEndpoint returned no endpoint")?;
        ids.push(Uuid::parse_str(&endpoint.id)?);
    }
    Ok(ids)
}

/// A UUIDv7 from a row's time and a salt: the 48-bit millisecond timestamp, the version, and
/// the salt's MD5 as the random bits (with the RFC 4122 variant).
const V7_FUNCTION: &str = "CREATE FUNCTION pg_temp.v7(ts timestamptz, salt text) RETURNS uuid \
     LANGUAGE sql IMMUTABLE AS $$ SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0') \
     || '7' || substr(md5(salt), 1, 3) || '8' || substr(md5(salt), 4, 15))::uuid $$";

/// Events `$3..=$4` of `$5` over the last seven days.
const EVENTS_SLICE: &str = "INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, payload) \
     SELECT pg_temp.v7(ts, 'e' || i::text), $1, (ARRAY['invoice.paid','invoice.created','customer.updated','order.shipped'])[1 + (i % 4)::int], ts, ts, \
            '{\"object\":\"invoice\",\"id\":\"in_' || i::text || '\",\"amount\":' || (i % 10000)::text || ',\"currency\":\"eur\"}' \
     FROM (SELECT i, now() - interval '7 days' * ($5 - i) / $5 AS ts FROM generate_series($3::bigint, $4::bigint) i) s";

/// The deliveries of those events, one per endpoint in `$2`.
const DELIVERIES_SLICE: &str = "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, \
        attempt_count, response_status, response_body, last_error, latency_ms, created_at, last_attempt_at, \
        next_retry_at, updated_at) \
     SELECT pg_temp.v7(ts, 'd' || i::text || '.' || k::text), $1, pg_temp.v7(ts, 'e' || i::text), ($2::uuid[])[k], \
            (ARRAY['invoice.paid','invoice.created','customer.updated','order.shipped'])[1 + (i % 4)::int], st, \
            CASE st WHEN 'pending' THEN 0 WHEN 'success' THEN 1 ELSE 3 END, \
            CASE st WHEN 'pending' THEN NULL WHEN 'success' THEN 200 ELSE 503 END, \
            CASE st WHEN 'success' THEN '{\"ok\":true}' WHEN 'pending' THEN '' ELSE 'upstream unavailable' END, \
            CASE WHEN st IN ('failed', 'retrying') THEN 'HTTP 503' END, \
            CASE st WHEN 'pending' THEN NULL ELSE 20 + r % 400 END, \
            ts, CASE st WHEN 'pending' THEN NULL ELSE ts END, \
            CASE st WHEN 'retrying' THEN ts + interval '15 minutes' END, ts \
     FROM (SELECT i, k, ts, r, CASE WHEN r % 100 < 94 THEN 'success' WHEN r % 100 < 97 THEN 'failed' \
                                    WHEN r % 100 < 99 THEN 'retrying' ELSE 'pending' END AS st \
           FROM (SELECT i, k, now() - interval '7 days' * ($5 - i) / $5 AS ts, abs(hashtext(i::text || '.' || k::text)::bigint) AS r \
                 FROM generate_series($3::bigint, $4::bigint) i, generate_series(1, array_length($2::uuid[], 1)) k) g) s";

/// Fills the installation's tables; returns the deliveries counted afterwards.
async fn generate(
    settings: &Settings,
    schema: &str,
    tenant: &str,
    endpoints: &[Uuid],
    plan: &Plan,
) -> Result<u64> {
    let options = settings
        .database_url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([("search_path", schema)]);
    let mut conn = PgConnection::connect_with(&options).await?;
    conn.execute(V7_FUNCTION).await?;
    let tenant = Uuid::parse_str(tenant)?;
    let events = (plan.deliveries / endpoints.len() as u64).max(1) as i64;
    let mut lo = 1_i64;
    while lo <= events {
        let hi = (lo + SLICE_EVENTS as i64 - 1).min(events);
        for sql in [EVENTS_SLICE, DELIVERIES_SLICE] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(endpoints)
                .bind(lo)
                .bind(hi)
                .bind(events as f64)
                .execute(&mut conn)
                .await
                .with_context(|| format!("generating events {lo}..={hi}"))?;
        }
        lo = hi + 1;
    }
    conn.execute("ANALYZE events").await?;
    conn.execute("ANALYZE deliveries").await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(count as u64)
}

/// The console with an open portal session.
struct Pages {
    base: String,
    cookie: String,
    http: reqwest::Client,
}

impl Pages {
    /// Asks ingest for a portal link (operator token) and opens it: the session cookie.
    async fn open(herald: &Herald, console: SocketAddr, tenant: &str) -> Result<Pages> {
        let channel = grpc::connect(herald.ingest_addr).await?;
        let auth = grpc::bearer(&herald.admin_token)?;
        let link = pb::portal_client::PortalClient::new(channel)
            .create_portal_session(authed(
                pb::CreatePortalSessionRequest {
                    tenant_id: tenant.to_owned(),
                    ttl_seconds: Some(86_400),
                    ..Default::default()
                },
                &auth,
            ))
            .await
            .context("CreatePortalSession")?
            .into_inner();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = format!("http://{console}");
        let response = http
            .get(format!("{base}/portal/open?token={}", link.token))
            .send()
            .await
            .context("opening the portal link")?;
        // Every cookie of the portal's (the session and what its pages show), as a browser
        // would send them back.
        let cookies: Vec<&str> = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| v.starts_with("herald_portal"))
            .filter_map(|v| v.split(';').next())
            .collect();
        let cookie = cookies
            .iter()
            .any(|c| c.starts_with("herald_portal="))
            .then(|| cookies.join("; "));
        let Some(cookie) = cookie else {
            bail!(
                "the portal link answered {} without a herald_portal cookie",
                response.status()
            );
        };
        Ok(Pages { base, cookie, http })
    }

    /// Fetches a page: its (server, client) times in µs and its body; anything but 200, or a
    /// page without `Server-Timing`, is an error.
    async fn fetch(&self, path: &str) -> Result<((u64, u64), String)> {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let server = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(server_us);
        let body = response.text().await?;
        let client = started.elapsed().as_micros() as u64;
        ensure!(status == reqwest::StatusCode::OK, "GET {path}: {status}");
        let server = server.with_context(|| format!("GET {path}: no Server-Timing app;dur"))?;
        Ok(((server, client), body))
    }

    async fn repeat(
        &self,
        kind: &str,
        path: &str,
        n: usize,
    ) -> Result<(PageFigures, Vec<(u64, u64)>)> {
        let mut samples = Vec::with_capacity(n);
        let mut rows = 0;
        for _ in 0..n {
            let (us, body) = self.fetch(path).await?;
            samples.push(us);
            rows = count_rows(&body);
        }
        let mut figures = figures_of(kind, &samples);
        figures.rows = rows;
        Ok((figures, samples))
    }

    /// `n` fetches down the log through its "next" links, starting again at the first page
    /// when the log ends; the first page itself is not counted.
    async fn walk(&self, n: usize) -> Result<(PageFigures, Vec<(u64, u64)>)> {
        let mut samples = Vec::with_capacity(n);
        let mut rows = 0;
        let (_, mut body) = self.fetch(LOG_PATH).await?;
        while samples.len() < n {
            let Some(next) = next_link(&body) else {
                ensure!(
                    !samples.is_empty(),
                    "the first page of the log has no next link"
                );
                body = self.fetch(LOG_PATH).await?.1;
                continue;
            };
            let (us, page) = self.fetch(&next).await?;
            samples.push(us);
            rows = count_rows(&page);
            body = page;
        }
        let mut figures = figures_of("later pages (cursor)", &samples);
        figures.rows = rows;
        Ok((figures, samples))
    }
}

fn count_rows(body: &str) -> usize {
    body.matches(&format!("data-testid=\"{ROW_TESTID}\""))
        .count()
}

/// The `href` of the element marked as the next-page link, unescaped.
fn next_link(body: &str) -> Option<String> {
    let at = body.find(&format!("data-testid=\"{NEXT_TESTID}\""))?;
    let start = body[..at].rfind('<')?;
    let end = at + body[at..].find('>')?;
    let tag = &body[start..end];
    let href = tag.split("href=\"").nth(1)?.split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

/// `app;dur=12.3` (milliseconds) as microseconds.
fn server_us(header: &str) -> Option<u64> {
    let dur = header
        .split(',')
        .find(|m| m.trim().starts_with("app"))?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("dur="))?;
    let ms: f64 = dur.parse().ok()?;
    Some((ms * 1000.0).round() as u64)
}

/// Nearest-rank percentile `q` of sorted microsecond samples, in milliseconds.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    let len = sorted.len();
    sorted[((q * len as f64).ceil() as usize).clamp(1, len) - 1] as f64 / 1e3
}

/// Percentiles of (server µs, client µs) samples.
fn figures_of(kind: &str, samples: &[(u64, u64)]) -> PageFigures {
    let mut server: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let mut client: Vec<u64> = samples.iter().map(|s| s.1).collect();
    server.sort_unstable();
    client.sort_unstable();
    if server.is_empty() {
        return PageFigures {
            kind: kind.to_owned(),
            ..Default::default()
        };
    }
    PageFigures {
        kind: kind.to_owned(),
        count: server.len(),
        p50_ms: percentile(&server, 0.50),
        p95_ms: percentile(&server, 0.95),
        p99_ms: percentile(&server, 0.99),
        max_ms: percentile(&server, 1.0),
        client_p95_ms: percentile(&client, 0.95),
        rows: 0,
    }
}

/// Table rows: (kind, fetches, p50, p95, p99, max, client p95).
fn rows(report: &PortalLogReport) -> Vec<[String; 7]> {
    report
        .pages
        .iter()
        .chain(std::iter::once(&report.overall))
        .map(|p| {
            [
                p.kind.clone(),
                p.count.to_string(),
                format!("{:.1} ms", p.p50_ms),
                format!("{:.1} ms", p.p95_ms),
                format!("{:.1} ms", p.p99_ms),
                format!("{:.1} ms", p.max_ms),
                format!("{:.1} ms", p.client_p95_ms),
            ]
        })
        .collect()
}

/// Prints the run on stdout like the other scenarios.
pub fn print(entry: &PortalLogEntry) {
    println!();
    println!("== {} ==", entry.name());
    let Some(r) = &entry.report else {
        println!("  failed: {}", entry.error.as_deref().unwrap_or("unknown"));
        return;
    };
    println!(
        "  {} deliveries generated in {:.0} s; one request at a time over loopback",
        r.deliveries, r.generate_secs
    );
    println!(
        "  {:<22} {:>7} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "page (server-side)", "fetches", "p50", "p95", "p99", "max", "client p95"
    );
    for [kind, n, p50, p95, p99, max, client] in rows(r) {
        println!("  {kind:<22} {n:>7} {p50:>10} {p95:>10} {p99:>10} {max:>10} {client:>12}");
    }
    let verdict = if r.overall.p95_ms <= r.plan.target_p95_ms {
        "meets"
    } else {
        "misses"
    };
    println!(
        "  p95 {:.1} ms {verdict} the {} ms target",
        r.overall.p95_ms, r.plan.target_p95_ms
    );
}

/// The BENCHMARKS.md section.
pub fn markdown(md: &mut String, entry: &PortalLogEntry) {
    use std::fmt::Write as _;
    let _ = writeln!(md, "## portal-log\n");
    let Some(r) = &entry.report else {
        let _ = writeln!(
            md,
            "Failed: {}\n",
            crate::markdown::cell(entry.error.as_deref().unwrap_or("unknown"))
        );
        return;
    };
    let _ = writeln!(
        md,
        "The portal's delivery log (`{LOG_PATH}`, herald-console) over one tenant with {} \
         deliveries ({} endpoints, seven days, generated straight into PostgreSQL in {:.0} s), \
         one request at a time. Server-side times are the console's `Server-Timing` (its render, \
         its ListEndpoints and ListDeliveries calls, the ledger's query); the last column is what \
         the client saw to the page's last byte over loopback. Target: p95 ≤ {} ms server-side.\n",
        r.deliveries, r.plan.endpoints, r.generate_secs, r.plan.target_p95_ms
    );
    let _ = writeln!(
        md,
        "| page | fetches | p50 | p95 | p99 | max | client p95 |\n|---|---|---|---|---|---|---|"
    );
    for [kind, n, p50, p95, p99, max, client] in rows(r) {
        let _ = writeln!(
            md,
            "| {kind} | {n} | {p50} | {p95} | {p99} | {max} | {client} |"
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_and_unescaped() {
        let body = r#"<nav><a class="x" href="/portal/deliveries?cursor=abc&amp;status=failed" data-testid="next-page">Next</a></nav>"#;
        assert_eq!(
            next_link(body).as_deref(),
            Some("/portal/deliveries?cursor=abc&status=failed")
        );
        assert_eq!(next_link("<p>no more</p>"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<(u64, u64)> = (1..=100).map(|ms| (ms * 1000, ms * 2000)).collect();
        let f = figures_of("k", &samples);
        assert_eq!(
            (f.p50_ms, f.p95_ms, f.p99_ms, f.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(f.client_p95_ms, 190.0);
    }

    #[test]
    fn server_timing_is_read_in_microseconds() {
        assert_eq!(server_us("app;dur=12.3"), Some(12_300));
        assert_eq!(server_us("db;dur=1, app;dur=0.4"), Some(400));
        assert_eq!(server_us("app"), None);
    }

    #[test]
    fn a_slow_p95_is_a_shortfall() {
        let mut overall = figures_of("all", &[(150_000, 150_000); 10]);
        overall.rows = 50;
        let report = PortalLogReport {
            plan: Plan::new(1.0),
            deliveries: 1,
            generate_secs: 0.0,
            pages: Vec::new(),
            overall,
            log_dir: String::new(),
        };
        assert_eq!(report.shortfalls().len(), 1);
    }
}
