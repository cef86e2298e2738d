//! Connection strings: parsing, TLS options and masking.
//!
//! Both libpq forms are accepted (`postgresql://user:pw@host:5432/db?sslmode=require` and
//! `host=... dbname=... sslmode=require`). tokio-postgres only knows `sslmode` disable, prefer
//! and require, so the TLS parameters are taken out here and handled by [`crate::tls`]. The
//! masked form built here is the only form of a DSN that ever reaches a log line, an error
//! message or the status page.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// libpq's `sslmode` values that make sense for a client that must not hang on a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without certificate checks (libpq's default).
    Prefer,
    /// TLS required; the certificate is checked only when a root certificate is given.
    Require,
    /// TLS required, certificate chain checked against the root certificate, name not checked.
    VerifyCa,
    /// TLS required, chain and host name checked.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "unknown sslmode \"{other}\"; use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// TLS settings taken out of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    /// PEM file of trusted roots, or `system` for the operating system's store.
    pub root_cert: Option<PathBuf>,
}

/// A parsed connection string.
#[derive(Clone)]
pub struct Dsn {
    pub pg: tokio_postgres::Config,
    pub tls: TlsOptions,
    /// The DSN with every password replaced by `****`.
    pub masked: String,
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the tokio-postgres config: its Debug output redacts the password, but
        // the masked string is the one form we guarantee.
        f.debug_struct("Dsn").field("masked", &self.masked).finish()
    }
}

/// Keys whose values are secrets.
const SECRET_KEYS: &[&str] = &["password", "sslpassword"];
/// Keys handled by pgkpi instead of tokio-postgres.
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert"];
/// libpq keys pgkpi does not support yet, rejected rather than silently ignored.
const UNSUPPORTED_KEYS: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "passfile"];

/// Parses a DSN. Errors never contain the password.
pub fn parse(raw: &str) -> Result<Dsn, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the connection string is empty".into());
    }
    let masked = mask(raw);
    let (pairs, form) = match split_url(raw) {
        Some((base, query)) => {
            let pairs = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect();
            (pairs, Form::Url(base))
        }
        None => (
            parse_key_values(raw).map_err(|e| format!("{e} in \"{masked}\""))?,
            Form::KeyValue,
        ),
    };

    let mut tls = TlsOptions {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut kept = Vec::new();
    for (key, value) in pairs {
        if UNSUPPORTED_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "parameter \"{key}\" is not supported by pgkpi yet; remove it from \"{masked}\" \
                 (client certificates are not supported; use password authentication over TLS)"
            ));
        }
        match key.as_str() {
            "sslmode" => {
                tls.mode = value
                    .parse()
                    .map_err(|e| format!("{e} (in \"{masked}\")"))?
            }
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
            _ => kept.push((key, value)),
        }
    }
    debug_assert!(kept.iter().all(|(k, _)| !TLS_KEYS.contains(&k.as_str())));
    let rebuilt = form.rebuild(&kept);
    let pg = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
        format!(
            "cannot parse connection string \"{masked}\": {e}; use a URL like \
             postgresql://user@host:5432/dbname?sslmode=require or key=value pairs like \
             \"host=db.example port=5432 user=pgkpi dbname=app\""
        )
    })?;
    if pg.get_hosts().is_empty() {
        return Err(format!(
            "connection string \"{masked}\" names no host; add host=... (or a socket directory)"
        ));
    }
    Ok(Dsn { pg, tls, masked })
}

/// The two libpq spellings of a DSN; TLS keys are taken out and the rest written back.
enum Form<'a> {
    Url(&'a str),
    KeyValue,
}

impl Form<'_> {
    fn rebuild(&self, kept: &[(String, String)]) -> String {
        match self {
            Form::Url(base) if kept.is_empty() => base.to_string(),
            Form::Url(base) => {
                let query: Vec<String> = kept
                    .iter()
                    .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                    .collect();
                format!("{base}?{}", query.join("&"))
            }
            Form::KeyValue => kept
                .iter()
                .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Replaces every password in a DSN (URL userinfo, `password=` in either form) with `****`.
pub fn mask(raw: &str) -> String {
    if let Some((base, query)) = split_url(raw) {
        let base = mask_url_userinfo(base);
        if query.is_empty() {
            return base;
        }
        let query: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if SECRET_KEYS.contains(&k) => format!("{k}=****"),
                _ => p.to_string(),
            })
            .collect();
        return format!("{base}?{}", query.join("&"));
    }
    match parse_key_values(raw) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(k, v)| {
                if SECRET_KEYS.contains(&k.as_str()) {
                    format!("{k}=****")
                } else if v.is_empty() || v.contains([' ', '\'', '\\']) {
                    format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        // Unparsable: show nothing of it rather than risk showing a password.
        Err(_) => "<unparsable connection string>".to_string(),
    }
}

/// Splits `scheme://rest?query` into (`scheme://rest`, `query`); None for key=value DSNs.
fn split_url(raw: &str) -> Option<(&str, &str)> {
    if !(raw.starts_with("postgresql://") || raw.starts_with("postgres://")) {
        return None;
    }
    Some(raw.split_once('?').unwrap_or((raw, "")))
}

fn mask_url_userinfo(base: &str) -> String {
    let (scheme, rest) = base.split_once("://").expect("checked by split_url");
    // userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:****"),
                None => userinfo.to_string(),
            };
            format!("{scheme}://{user}{}", &rest[at..])
        }
        None => base.to_string(),
    }
}

/// Parses libpq's `key=value key='quoted value'` form.
fn parse_key_values(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected '=' after \"{key}\""));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for \"{key}\"")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                } else {
                    value.push(c);
                    chars.next();
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_and_key_value_passwords() {
        assert_eq!(
            mask("postgresql://app:s3cr%40t@db:5432/app?sslmode=require&password=x"),
            "postgresql://app:****@db:5432/app?sslmode=require&password=****"
        );
        assert_eq!(mask("postgres://db/app"), "postgres://db/app");
        assert_eq!(
            mask("host=db user=app password='a b' dbname=x"),
            "host=db user=app password=**** dbname=x"
        );
        assert!(!mask("host=db password='unterminated").contains("unterminated"));
    }

    #[test]
    fn extracts_tls_options_from_both_forms() {
        let dsn = parse(
            "postgresql://u:pw@127.0.0.1:5433/app?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
        )
        .unwrap();
        assert_eq!(dsn.tls.mode, SslMode::VerifyFull);
        assert_eq!(dsn.tls.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(dsn.pg.get_ports(), &[5433]);
        assert_eq!(dsn.pg.get_dbname(), Some("app"));
        assert!(!dsn.masked.contains("pw"));

        let dsn = parse("host=/tmp port=5 user=u dbname='my db' sslmode=disable").unwrap();
        assert_eq!(dsn.tls.mode, SslMode::Disable);
        assert_eq!(dsn.pg.get_dbname(), Some("my db"));

        let dsn = parse("host=h").unwrap();
        assert_eq!(dsn.tls.mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn errors_name_the_problem_without_the_password() {
        let err = parse("postgresql://u:topsecret@h/db?sslmode=bogus").unwrap_err();
        assert!(err.contains("unknown sslmode \"bogus\""), "{err}");
        assert!(!err.contains("topsecret"), "{err}");

        let err = parse("host=h port=notaport password=topsecret").unwrap_err();
        assert!(err.contains("cannot parse connection string"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");

        let err = parse("host=h sslcert=/c.pem").unwrap_err();
        assert!(err.contains("\"sslcert\" is not supported"), "{err}");

        assert!(parse("  ").unwrap_err().contains("empty"));
    }
}
