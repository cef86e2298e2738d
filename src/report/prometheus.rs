//! The Prometheus HTTP API client of `pgkpi report`: instant and range queries and label
//! values, over plain HTTP or TLS (a CA file or the system's store), with basic auth or a
//! bearer token. Built on the hyper and rustls the exporter already links (an HTTP/1.1
//! connection per request; a report makes a few dozen), so the command adds no HTTP stack.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::range::Range;
use super::ReportError;

/// How long one request (connect, send, read the answer) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read; a range query of one KPI is far below it.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Where the Prometheus server is and how to authenticate; from the command line.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Base URL, e.g. `http://127.0.0.1:9090` or `https://prom.example/prometheus`.
    pub url: String,
    /// Basic-auth user; the password comes from `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding a bearer token (as Prometheus' own `bearer_token_file`).
    pub bearer_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate; without it the system's store.
    pub ca_file: Option<PathBuf>,
}

/// One series of a query result: its labels (without `__name__`) and its (time, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

pub struct Client {
    /// The URL as given, for error messages (it carries no credentials: those come from files).
    url: String,
    host: String,
    port: u16,
    /// Path prefix of the API (a Prometheus behind a reverse proxy), without a trailing slash.
    base_path: String,
    tls: Option<tokio_rustls::TlsConnector>,
    authorization: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, ReportError> {
        let usage = |message: String| ReportError::Usage(format!("--prometheus.url: {message}"));
        let url = connection.url.trim_end_matches('/');
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(usage(format!(
                "{url:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:9090)"
            )));
        };
        let (authority, base_path) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].to_string()),
            None => (rest, String::new()),
        };
        if authority.contains('@') {
            return Err(usage(
                "credentials in the URL would end up in error messages; use --prometheus.user \
                 with --prometheus.password-file, or --prometheus.bearer-token-file"
                    .into(),
            ));
        }
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })
            .ok_or_else(|| usage(format!("{authority:?} is not host[:port]")))?;
        let tls = if https {
            Some(tls_connector(connection.ca_file.as_ref())?)
        } else {
            None
        };
        let authorization = authorization(connection)?;
        Ok(Client {
            url: url.to_string(),
            host,
            port,
            base_path,
            tls,
            authorization,
        })
    }

    /// `query_range` of `expr` over `range` every `step`.
    pub async fn query_range(
        &self,
        expr: &str,
        range: &Range,
        step: Duration,
    ) -> Result<Vec<Series>, ReportError> {
        let data = self
            .call(
                "/api/v1/query_range",
                Some(&[
                    ("query", expr),
                    ("start", &format!("{:.3}", range.start)),
                    ("end", &format!("{:.3}", range.end)),
                    ("step", &format!("{:.3}", step.as_secs_f64())),
                ]),
            )
            .await?;
        Ok(parse_result(&data))
    }

    /// An instant query at `at` (Unix seconds).
    pub async fn query(&self, expr: &str, at: f64) -> Result<Vec<Series>, ReportError> {
        let data = self
            .call(
                "/api/v1/query",
                Some(&[("query", expr), ("time", &format!("{at:.3}"))]),
            )
            .await?;
        Ok(parse_result(&data))
    }

    /// The values of `label` on any series Prometheus holds.
    pub async fn label_values(&self, label: &str) -> Result<Vec<String>, ReportError> {
        let data = self
            .call(&format!("/api/v1/label/{label}/values"), None)
            .await?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// Calls an API path, with a POSTed form (queries, which can be long) or a GET (the label
    /// endpoints accept only GET); returns the answer's `data`, or the error Prometheus gave.
    async fn call(
        &self,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Result<serde_json::Value, ReportError> {
        let body = form.map(|form| {
            form.iter()
                .map(|(key, value)| format!("{key}={}", percent_encode(value)))
                .collect::<Vec<_>>()
                .join("&")
        });
        let request = async {
            let (status, answer) = self.send(path, body).await?;
            let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|_| {
                self.failed(format!(
                    "{path} answered HTTP {status} without JSON ({}); is this a Prometheus server?",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)]).trim()
                ))
            })?;
            if json["status"] == "success" {
                return Ok(json["data"].clone());
            }
            Err(match status {
                401 | 403 => self.failed(format!(
                    "{path}: HTTP {status}, check --prometheus.user/--prometheus.password-file or \
                     --prometheus.bearer-token-file"
                )),
                _ => self.failed(format!(
                    "{path}: HTTP {status}, {}: {}",
                    json["errorType"].as_str().unwrap_or("error"),
                    json["error"].as_str().unwrap_or("no message")
                )),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .unwrap_or_else(|_| {
                Err(self.unreachable(format!("no answer to {path} within {REQUEST_TIMEOUT:?}")))
            })
    }

    async fn send(&self, path: &str, form: Option<String>) -> Result<(u16, Bytes), ReportError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        match &self.tls {
            None => self.exchange(stream, path, form).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| self.unreachable(format!("host name for TLS: {e}")))?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| self.unreachable(format!("TLS handshake: {e}")))?;
                self.exchange(stream, path, form).await
            }
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        path: &str,
        form: Option<String>,
    ) -> Result<(u16, Bytes), ReportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let host = if matches!((self.tls.is_some(), self.port), (true, 443) | (false, 80)) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let uri = format!("{}{path}", self.base_path);
        let mut request = match form {
            Some(_) => hyper::Request::post(uri).header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            ),
            None => hyper::Request::get(uri),
        }
        .header(hyper::header::HOST, host)
        .header(
            hyper::header::USER_AGENT,
            concat!("pgkpi/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(value) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| self.failed(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(format!("{path}: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| self.failed(format!("{path}: reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }

    fn unreachable(&self, message: String) -> ReportError {
        ReportError::Unreachable(format!("Prometheus at {}: {message}", self.url))
    }

    fn failed(&self, message: String) -> ReportError {
        ReportError::Prometheus(format!("Prometheus at {}: {message}", self.url))
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    // [::1]:9090
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, ReportError> {
    let system = PathBuf::from("system");
    let roots = crate::tls::load_roots(ca_file.unwrap_or(&system), "--prometheus.ca-file")
        .map_err(ReportError::Usage)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ReportError::Usage(format!("tls setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The Authorization header, from files so that no secret is on the command line.
fn authorization(connection: &Connection) -> Result<Option<String>, ReportError> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| {
                ReportError::Usage(format!("{flag} {}: cannot read it ({e})", path.display()))
            })
    };
    match (&connection.user, &connection.password_file, &connection.bearer_token_file) {
        (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => Err(ReportError::Usage(
            "give either --prometheus.user (basic auth) or --prometheus.bearer-token-file, not both".into(),
        )),
        (None, Some(_), None) => Err(ReportError::Usage(
            "--prometheus.password-file needs --prometheus.user".into(),
        )),
        (Some(user), password, None) => {
            let password = match password {
                Some(path) => read("--prometheus.password-file", path)?,
                None => String::new(),
            };
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Ok(Some(format!("Basic {token}")))
        }
        (None, None, Some(path)) => Ok(Some(format!(
            "Bearer {}",
            read("--prometheus.bearer-token-file", path)?.trim()
        ))),
        (None, None, None) => Ok(None),
    }
}

/// Percent-encodes a form value (RFC 3986 unreserved characters stay).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The series of a `vector` or `matrix` result. NaN and infinite values (a ratio over an idle
/// interval, a quantile of no observations) are dropped: they are no measurement.
fn parse_result(data: &serde_json::Value) -> Vec<Series> {
    let point = |pair: &serde_json::Value| -> Option<(f64, f64)> {
        let time = pair.get(0)?.as_f64()?;
        let value: f64 = pair.get(1)?.as_str()?.parse().ok()?;
        value.is_finite().then_some((time, value))
    };
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let labels = item["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, _)| *key != "__name__")
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_string()))
                .collect();
            let points = match item.get("values") {
                Some(values) => values
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(point)
                    .collect(),
                None => item.get("value").and_then(point).into_iter().collect(),
            };
            Series { labels, points }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_prefix() {
        let client = Client::new(&Connection {
            url: "http://127.0.0.1:9090/prom/".into(),
            ..Connection::default()
        })
        .unwrap();
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 9090));
        assert_eq!(client.base_path, "/prom");
        assert_eq!(
            split_host_port("[::1]:9091", 80),
            Some(("::1".into(), 9091))
        );
        assert_eq!(split_host_port("prom", 443), Some(("prom".into(), 443)));
        for bad in ["prom:9090", "ftp://x", "http://u:p@x:1", "http://x:port"] {
            let error = Client::new(&Connection {
                url: bad.into(),
                ..Connection::default()
            })
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(matches!(error, ReportError::Usage(_)), "{bad}: {error}");
        }
    }

    #[test]
    fn results_drop_nan_and_keep_labels() {
        let data = serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {"__name__": "x", "workload": "chat"},
             "values": [[10, "1.5"], [20, "NaN"], [30, "+Inf"], [40, "2"]]}]});
        let series = parse_result(&data);
        assert_eq!(series[0].labels.len(), 1);
        assert_eq!(series[0].points, vec![(10.0, 1.5), (40.0, 2.0)]);
    }
}
