//! The HTTP server: metrics, health, readiness and a status page.
//!
//! Nothing here talks to PostgreSQL. `/metrics` serves the snapshot the pollers keep plus the
//! self-metrics, so a scrape costs the bytes it sends (and their compression when asked for),
//! whatever the database is doing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, VARY,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

mod body;
mod gzip;
mod limits;
mod probe;

use self::body::Chunks;
pub use self::limits::{clamp_to_fd_limit, Limits};
use self::limits::{
    out_of_descriptors, AcceptErrors, Admission, Busy, SlotGuard, Slots, TrackedBody,
};
pub use self::probe::{ProbeQuery, ProbeRefused, ProbeRequests};
use crate::html::escape;
use crate::shared::Shared;
use crate::web_config::BasicAuth;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers need.
pub struct Site {
    pub shared: Shared,
    pub telemetry_path: String,
    /// Users allowed in, when `--web.config.file` sets basic_auth_users.
    pub auth: Option<Arc<BasicAuth>>,
    /// Where `POST /-/reload` asks for a reload and waits for its outcome (a summary or the
    /// error); None where nothing reloads (tests).
    pub reload: Option<ReloadRequests>,
    /// Where `/probe` asks for a target to be polled; None where nothing probes (tests).
    pub probe: Option<ProbeRequests>,
    /// The probed targets (names), served on `/probe` and left out of the metrics path;
    /// written by `app`.
    pub probed: Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>,
}

/// A reload request: the sender of its outcome, answered once the reload is done.
pub type ReloadRequests =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>;

/// The reload endpoint, Prometheus' path for it.
const RELOAD_PATH: &str = "/-/reload";

/// Serves until `shutdown` flips, then lets open requests finish (for at most 5 s). With `tls`,
/// every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    site: Arc<Site>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let telemetry = site.shared.telemetry.clone();
    let gzip = Arc::new(gzip::Cache::default());
    tokio::spawn(gzip::deflate_ahead(
        site.shared.snapshot.clone(),
        gzip.clone(),
        shutdown.clone(),
    ));
    telemetry
        .http_connections_limit
        .set(limits.max_connections as i64);
    let slots = Arc::new(Slots {
        max: limits.max_connections.max(1),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    let mut errors = AcceptErrors::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    errors.succeeded();
                    pair
                }
                Err(error) => {
                    telemetry.http_accept_errors.inc();
                    // Out of descriptors despite the clamp (something else holds them): free
                    // one by closing the longest idle connection, so the next accept, likely
                    // a scrape waiting in the backlog, can succeed.
                    if out_of_descriptors(&error) {
                        slots.evict_one(&telemetry);
                    }
                    let wait = errors.failed(&error, Instant::now());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            },
            _ = shutdown.changed() => break,
        };
        let (id, slot) = match slots.admit(&telemetry) {
            Admission::Admitted(id, slot) => (id, slot),
            Admission::Refused => {
                telemetry
                    .http_connections_rejected
                    .with_label_values(&["limit"])
                    .inc();
                drop(stream);
                continue;
            }
        };
        telemetry.http_connections_open.inc();
        let guard = SlotGuard {
            slots: slots.clone(),
            id,
            open: telemetry.http_connections_open.clone(),
        };
        let (site, gzip) = (site.clone(), gzip.clone());
        let service_slot = slot.clone();
        let service = service_fn(move |req| {
            let busy = Busy::new(service_slot.clone());
            let (site, gzip) = (site.clone(), gzip.clone());
            async move {
                let response = handle(site, &gzip, req, peer).await?;
                Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }))
            }
        });
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let timed_out = || {
                telemetry
                    .http_connections_rejected
                    .with_label_values(&["timeout"])
                    .inc()
            };
            let connection = async {
                match tls {
                    None => {
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    // The handshake runs in the connection's task, so a slow or silent client
                    // cannot hold up the accept loop; it gets the header read timeout.
                    Some(acceptor) => {
                        match tokio::time::timeout(
                            limits.header_read_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => {
                                watcher
                                    .watch(http.serve_connection(TokioIo::new(stream), service))
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, error = %error, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                timed_out();
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            // Evicted: dropping the connection closes the socket at once.
            let served = tokio::select! {
                served = connection => served,
                _ = slot.evict.notified() => {
                    tracing::debug!(%peer, "connection closed to make room (web.max_connections)");
                    return;
                }
            };
            if let Err(error) = served {
                if error.is_timeout() && slot.requests.load(Ordering::Relaxed) > 0 {
                    // The usual end of a keep-alive connection between scrapes: not counted.
                    tracing::debug!(%peer, "idle keep-alive connection closed");
                } else if error.is_timeout() {
                    timed_out();
                    tracing::debug!(%peer, "request headers not complete in time; closed");
                } else {
                    tracing::debug!(error = %error, "http connection ended with an error");
                }
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
            tracing::warn!("http connections still open after 5s; closing");
        }
    }
}

/// `/probe?target=host:port&auth_module=name`: starts (or keeps) polling the target and
/// answers with its series as the pollers hold them now.
async fn probe(site: &Site, query: Option<&str>) -> Response<Chunks> {
    let query = match ProbeQuery::parse(query) {
        Ok(query) => query,
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let Some(requests) = &site.probe else {
        return plain(StatusCode::FORBIDDEN, "/probe is off\n");
    };
    let (reply, outcome) = tokio::sync::oneshot::channel();
    if requests.send((query, reply)).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let name = match outcome.await {
        Ok(Ok(name)) => name,
        Ok(Err(ProbeRefused::Forbidden(m))) => {
            return plain(StatusCode::FORBIDDEN, format!("{m}\n"))
        }
        Ok(Err(ProbeRefused::BadRequest(m))) => {
            return plain(StatusCode::BAD_REQUEST, format!("{m}\n"))
        }
        Ok(Err(ProbeRefused::Full(m))) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n"))
        }
        Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    };
    let only = |t: Option<&str>| t == Some(name.as_str());
    let mut body = probe::filter(&site.shared.snapshot.body(), only);
    body.extend(probe::filter(&site.shared.telemetry.encode(), only));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, TEXT_FORMAT)
        .body(Chunks::one(body))
        .expect("valid response")
}

/// `POST /-/reload`: 200 with what changed, or 500 with why the new configuration was
/// rejected (the running one stays); 405 for any other method, as Prometheus answers.
async fn reload(site: &Site, method: &Method) -> Response<Chunks> {
    if method != Method::POST {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST to reload the configuration\n",
        );
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let Some(requests) = &site.reload else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "reload is not available\n");
    };
    let (reply, outcome) = tokio::sync::oneshot::channel();
    if requests.try_send(reply).is_err() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "reloads are queued already; retry in a moment\n",
        );
    }
    match outcome.await {
        Ok(Ok(summary)) => plain(
            StatusCode::OK,
            format!("configuration reloaded: {summary}\n"),
        ),
        Ok(Err(error)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("configuration rejected, the previous one keeps running: {error}\n"),
        ),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

async fn handle(
    site: Arc<Site>,
    gzip: &gzip::Cache,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Result<Response<Chunks>, Infallible> {
    let path = req.uri().path().to_string();
    let allowed = match &site.auth {
        None => true,
        Some(auth) => {
            // bcrypt takes tens of milliseconds on purpose (first use, wrong passwords): off the
            // runtime's threads, so the pollers never wait for a password check.
            let auth = auth.clone();
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            tokio::task::spawn_blocking(move || auth.allows(header.as_deref()))
                .await
                .unwrap_or(false)
        }
    };
    let response = if !allowed {
        let mut response = plain(
            StatusCode::UNAUTHORIZED,
            "authentication required (basic_auth_users of --web.config.file)\n",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pgkpi\""),
        );
        response
    } else if path == RELOAD_PATH {
        reload(&site, req.method()).await
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are supported\n",
        )
    } else if path == site.telemetry_path {
        metrics(&site, gzip, &req)
    } else {
        match path.as_str() {
            "/probe" => probe(&site, req.uri().query()).await,
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => readyz(&site, wants_connected(req.uri().query())),
            "/" => index(&site),
            _ if path.starts_with("/debug/") => debug_view(&site, &path["/debug/".len()..]),
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found; see / for the available paths\n",
            ),
        }
    };
    // Bounded label set: unknown paths are counted together.
    let known = [
        site.telemetry_path.as_str(),
        "/healthz",
        "/readyz",
        "/",
        RELOAD_PATH,
        "/probe",
    ];
    let label = if known.contains(&path.as_str()) {
        path.as_str()
    } else {
        "other"
    };
    site.shared
        .telemetry
        .http_requests
        .with_label_values(&[label, response.status().as_str()])
        .inc();
    Ok(response)
}

fn metrics(site: &Site, gzip: &gzip::Cache, req: &Request<Incoming>) -> Response<Chunks> {
    let mut snapshot = site.shared.snapshot.body();
    let mut own = site.shared.telemetry.encode();
    let filtered = {
        let probed = site.probed.read().expect("probed lock");
        let filtered = !probed.is_empty();
        if filtered {
            snapshot = Bytes::from(probe::without(&snapshot, &probed));
            own = probe::without(&own, &probed);
        }
        filtered
    };
    let wants_gzip = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, TEXT_FORMAT)
        .header(VARY, HeaderValue::from_static("Accept-Encoding"));
    let body = if wants_gzip {
        // A snapshot filtered for this scrape is deflated for it alone, not kept.
        let deflated = if filtered {
            gzip::Deflated::new(snapshot.clone()).map(Arc::new)
        } else {
            gzip.get(&snapshot)
        };
        match deflated.and_then(|deflated| deflated.finish(&own)) {
            Ok(parts) => {
                builder = builder.header(CONTENT_ENCODING, "gzip");
                Chunks::new(parts)
            }
            Err(_) => Chunks::new([snapshot, Bytes::from(own)]),
        }
    } else {
        Chunks::new([snapshot, Bytes::from(own)])
    };
    builder.body(body).expect("valid response")
}

/// True when an Accept-Encoding header value allows gzip (and does not refuse it with q=0).
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut pieces = part.split(';').map(str::trim);
        let coding = pieces.next().unwrap_or("");
        let refused = pieces.any(|p| {
            p.replace(' ', "")
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                == Some(0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `/readyz`: 200 once every target finished its first connection attempt and every collector
/// its first run, whatever the outcome (a down database is reported, with `pg_up 0`, not
/// waited for). With `?connected`, also 503 until at least one target has connected once
/// since start: the probe for orchestrators that must not count an exporter that never
/// reached any database as ready. Neither turns back to 503 when a database goes down later.
fn readyz(site: &Site, connected_required: bool) -> Response<Chunks> {
    let ready = site.shared.status.ready();
    let connected = site.shared.status.connected();
    let body = serde_json::json!({
        "ready": ready,
        "connected": connected,
        "targets": site.shared.status.view(),
    });
    let ok = ready && (connected || !connected_required);
    Response::builder()
        .status(if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        })
        .header(CONTENT_TYPE, "application/json")
        .body(Chunks::one(
            serde_json::to_vec_pretty(&body).unwrap_or_default(),
        ))
        .expect("valid response")
}

/// True when the query has `connected` (bare, or with a value other than `0` / `false`).
fn wants_connected(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "connected" && !matches!(value, "0" | "false")
    })
}

fn debug_view(site: &Site, name: &str) -> Response<Chunks> {
    match site.shared.views.get(name) {
        Some(targets) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/json")
            .body(Chunks::one(
                serde_json::to_vec_pretty(&serde_json::json!({ "targets": targets }))
                    .unwrap_or_default(),
            ))
            .expect("valid response"),
        None => plain(
            StatusCode::NOT_FOUND,
            "no such debug view (yet); the collector that publishes it has not run or is disabled\n",
        ),
    }
}

fn index(site: &Site) -> Response<Chunks> {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pgkpi</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.down{{color:#b00}}</style></head>\
         <body><h1>pgkpi {}</h1><p>PostgreSQL health and KPI exporter. \
         <a href=\"{path}\">{path}</a> · <a href=\"/readyz\">/readyz</a> · <a href=\"/healthz\">/healthz</a>{views}</p>",
        env!("CARGO_PKG_VERSION"),
        path = escape(&site.telemetry_path),
        views = site
            .shared
            .views
            .names()
            .iter()
            .map(|v| format!(" · <a href=\"/debug/{0}\">/debug/{0}</a>", escape(v)))
            .collect::<String>(),
    );
    for (name, target) in site.shared.status.view() {
        html.push_str(&format!(
            "<h2>target {}</h2><p>{} · {} · server {}{}</p>\
             <table><tr><th>collector</th><th>interval</th><th>state</th><th>last success</th>\
             <th>last duration</th><th>runs / errors</th><th>last error</th></tr>",
            escape(&name),
            escape(&target.endpoint),
            if target.up {
                "up"
            } else if target.attempted && !target.connected_once {
                "<span class=\"down\">down, never connected</span>"
            } else {
                "<span class=\"down\">down</span>"
            },
            escape(target.server_version.as_deref().unwrap_or("unknown")),
            target
                .last_error
                .as_deref()
                .map(|e| format!(" · last error: {}", escape(e)))
                .unwrap_or_default(),
        ));
        for (collector, c) in &target.collectors {
            let state = match (c.attempted, c.up, c.stale) {
                (false, _, _) => "pending",
                (true, true, _) => "up",
                (true, false, true) => "failing (serving stale values)",
                (true, false, false) => "failing",
            };
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}s</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
                escape(collector),
                c.interval.as_secs_f64(),
                state,
                c.last_success_unix
                    .map(|t| format!("{:.0}s ago", (crate::status::unix_now() - t).max(0.0)))
                    .unwrap_or_else(|| "never".into()),
                c.last_duration_seconds
                    .map(|d| format!("{:.1} ms", d * 1000.0))
                    .unwrap_or_default(),
                c.runs,
                c.errors,
                escape(c.last_error.as_deref().unwrap_or("")),
            ));
        }
        html.push_str("</table>");
        for (view, item) in site.shared.views.to_do(&name) {
            html.push_str(&format!(
                "<p class=\"down\">to do ({}): {}</p>",
                escape(&view),
                escape(&item)
            ));
        }
    }
    html.push_str("</body></html>\n");
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Chunks::one(html))
        .expect("valid response")
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Chunks> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Chunks::one(text))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::{accepts_gzip, wants_connected};

    #[test]
    fn readyz_connected_parameter() {
        for query in [
            "connected",
            "connected=1",
            "connected=true",
            "x=1&connected",
        ] {
            assert!(wants_connected(Some(query)), "{query}");
        }
        for query in [
            "",
            "connected=0",
            "connected=false",
            "connectedx",
            "x=connected",
        ] {
            assert!(!wants_connected(Some(query)), "{query}");
        }
        assert!(!wants_connected(None));
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("gzip; q=0.0"));
        assert!(!accepts_gzip("identity"));
    }
}
