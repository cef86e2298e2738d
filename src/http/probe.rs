//! `/probe?target=host:port&auth_module=name`: a target named by Prometheus.
//!
//! The handler never connects: it asks `app` to poll the target (starting it on the first
//! probe, keeping it alive on every later one) and answers with what the pollers already hold
//! for it, like `/metrics` does for configured targets. The first probe of a target therefore
//! answers before its first poll, with its `pg_up` only; the next ones carry its values.
//! Probed targets' series are served on `/probe` only, never on `/metrics`, so that
//! Prometheus does not store them twice.

use std::collections::BTreeSet;

use tokio::sync::{mpsc, oneshot};

/// What a probe asks for, checked for form here and against the configuration by `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeQuery {
    /// `host` (port 5432) or `host:port`.
    pub host: String,
    pub port: u16,
    pub auth_module: String,
}

impl ProbeQuery {
    /// The target's name (its `target` label): `host:port`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Parses the query string; the error is the 400 answer.
    pub fn parse(query: Option<&str>) -> Result<ProbeQuery, String> {
        let mut target = None;
        let mut module = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "target" => target = Some(value),
                "auth_module" => module = Some(value),
                _ => {}
            }
        }
        let target = target.ok_or("missing target=host:port")?;
        let auth_module =
            module.ok_or("missing auth_module=<name of a [probe.auth_modules] entry>")?;
        let (host, port) = match target.rsplit_once(':') {
            Some((host, port)) => (
                host.to_string(),
                port.parse::<u16>()
                    .map_err(|_| format!("target \"{target}\": the port is not a number"))?,
            ),
            None => (target.clone(), 5432),
        };
        // A host name or an IPv4 address: it goes into a connection string and a label.
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!(
                "target \"{target}\": give host:port with a host name or IPv4 address"
            ));
        }
        Ok(ProbeQuery {
            host,
            port,
            auth_module,
        })
    }
}

/// Why a probe is refused, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeRefused {
    /// 403: the target matches no `probe.allowed_targets`, or /probe is off.
    Forbidden(String),
    /// 400: unknown auth module, or a target that cannot be built.
    BadRequest(String),
    /// 503: `probe.max_targets` reached.
    Full(String),
}

/// A probe request: the query and where to send the target's name once it is polled.
pub type ProbeRequests = mpsc::Sender<(ProbeQuery, oneshot::Sender<Result<String, ProbeRefused>>)>;

/// The `target` label value of an exposition line, if it has one. Target names are plain
/// (letters, digits, `_.:-`), so no escape needs decoding.
fn target_of(line: &str) -> Option<&str> {
    let labels = &line[line.find('{')?..];
    let start = labels
        .find("{target=\"")
        .map(|i| i + 9)
        .or_else(|| labels.find(",target=\"").map(|i| i + 9))?;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// The lines of an exposition whose samples pass `keep` (by their target label, None for
/// none), with each family's HELP and TYPE kept when one of its samples is.
pub fn filter(text: &[u8], keep: impl Fn(Option<&str>) -> bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(text.len());
    let mut header = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            // HELP and TYPE come before their family's samples; a new family starts with
            // HELP (or TYPE without one).
            if line.starts_with("# HELP ") || !header.starts_with("# HELP ") {
                header.clear();
            }
            header.push_str(line);
            header.push('\n');
            continue;
        }
        if keep(target_of(line)) {
            out.push_str(&header);
            header.clear();
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// Drops the lines of probed targets (for `/metrics`).
pub fn without(text: &[u8], probed: &BTreeSet<String>) -> Vec<u8> {
    filter(text, |target| target.is_none_or(|t| !probed.contains(t)))
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad percent-encoding in the query")?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the query is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_refuses_what_cannot_be_a_host() {
        let q = ProbeQuery::parse(Some("target=db1.example.net%3A5433&auth_module=main")).unwrap();
        assert_eq!(
            (q.host.as_str(), q.port, q.name().as_str()),
            ("db1.example.net", 5433, "db1.example.net:5433")
        );
        assert_eq!(
            ProbeQuery::parse(Some("target=db&auth_module=m"))
                .unwrap()
                .port,
            5432
        );
        for bad in [
            "auth_module=m",
            "target=db",
            "target=db:x&auth_module=m",
            "target=db%20host=evil&auth_module=m",
            "target=db'x&auth_module=m",
        ] {
            assert!(ProbeQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_an_exposition_by_target_keeping_headers() {
        let text = b"# HELP pg_up up\n# TYPE pg_up gauge\npg_up{target=\"a\"} 1\npg_up{target=\"b:5432\"} 0\n\
# HELP x x\n# TYPE x gauge\nx{target=\"a\",datname=\"d\"} 2\n# HELP y y\n# TYPE y gauge\ny 3\n";
        let only_b = String::from_utf8(filter(text, |t| t == Some("b:5432"))).unwrap();
        assert_eq!(
            only_b,
            "# HELP pg_up up\n# TYPE pg_up gauge\npg_up{target=\"b:5432\"} 0\n"
        );
        let probed: BTreeSet<String> = ["b:5432".to_string()].into();
        let rest = String::from_utf8(without(text, &probed)).unwrap();
        assert!(
            !rest.contains("b:5432")
                && rest.contains("x{target=\"a\",datname=\"d\"} 2")
                && rest.contains("\ny 3\n"),
            "{rest}"
        );
    }
}
