//! Duration entries from PostgreSQL's structured server logs (`jsonlog`, 15+; `csvlog`, 13+).
//!
//! Only the statement durations matter: `duration: 12.345 ms  statement: ...` (simple
//! protocol) and `duration: 12.345 ms  execute <name>: ...` (extended protocol). The parse and
//! bind phases, fast-path calls and `log_duration`'s text-less lines are skipped: they are not
//! what pg_stat_statements counts as an execution. The statement text is only lent to the
//! classifier and dropped with the record; parameters (in `detail`) are never looked at.
//!
//! Messages are recognised in English: the server's `lc_messages` must be `C` or `en_*` for
//! the log source (the status says so otherwise).

use serde::Deserialize;

/// The structured log formats pgkpi reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// The name `pg_current_logfile()` and `log_destination` use.
    pub fn destination(self) -> &'static str {
        match self {
            Format::Json => "jsonlog",
            Format::Csv => "csvlog",
        }
    }
}

/// One execution's duration from the log, with what is needed to classify it. Borrows from
/// the record, so the text lives no longer than the record being parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Execution<'a> {
    pub duration_ms: f64,
    pub dbname: &'a str,
    /// 0 when the server did not compute one (`compute_query_id`, 14+).
    pub query_id: i64,
    pub text: &'a str,
}

/// Why a record yielded no execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a statement duration (another message, a parse or bind phase).
    NotADuration,
    /// A record of the format that could not be decoded.
    Malformed,
}

/// Splits `buf` into complete records: calls `each` on every complete record and returns how
/// many bytes they took; the rest is an unfinished record to keep for the next read. A
/// `jsonlog` record is one line (the server escapes newlines); a `csvlog` record ends at a
/// newline outside double quotes (statement texts keep their newlines inside quotes).
pub fn split_records(format: Format, buf: &[u8], mut each: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    let mut quoted = false;
    for (i, byte) in buf.iter().enumerate() {
        match (format, *byte) {
            (Format::Csv, b'"') => quoted = !quoted,
            (_, b'\n') if !quoted => {
                each(&buf[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    start
}

/// The fields of a `jsonlog` record pgkpi reads; the others are skipped by serde.
#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow, default)]
    dbname: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(default)]
    query_id: i64,
}

/// Decodes one record and hands its execution (if it is one) to `take`.
pub fn parse<R>(
    format: Format,
    record: &[u8],
    take: impl FnOnce(Execution<'_>) -> R,
) -> Result<R, Skip> {
    match format {
        Format::Json => {
            let rec: JsonRecord = serde_json::from_slice(record).map_err(|_| Skip::Malformed)?;
            let (duration_ms, text) = duration_message(&rec.message).ok_or(Skip::NotADuration)?;
            Ok(take(Execution {
                duration_ms,
                dbname: rec.dbname.as_deref().unwrap_or(""),
                query_id: rec.query_id,
                text,
            }))
        }
        Format::Csv => {
            let record = std::str::from_utf8(record).map_err(|_| Skip::Malformed)?;
            let fields = csv_fields(record);
            // 24 columns on 13, 26 (leader_pid, query_id) from 14.
            if fields.len() < 24 {
                return Err(Skip::Malformed);
            }
            let (duration_ms, text) =
                duration_message(&fields[CSV_MESSAGE]).ok_or(Skip::NotADuration)?;
            let query_id = fields
                .get(CSV_QUERY_ID)
                .and_then(|q| q.parse().ok())
                .unwrap_or(0);
            Ok(take(Execution {
                duration_ms,
                dbname: &fields[CSV_DBNAME],
                query_id,
                text,
            }))
        }
    }
}

const CSV_DBNAME: usize = 2;
const CSV_MESSAGE: usize = 13;
const CSV_QUERY_ID: usize = 25;

/// The fields of one csvlog record: comma-separated, optionally double-quoted with `""` for a
/// quote (the server quotes every text field).
fn csv_fields(record: &str) -> Vec<std::borrow::Cow<'_, str>> {
    let mut fields = Vec::with_capacity(26);
    let bytes = record.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            let mut value = String::new();
            let mut j = i + 1;
            let mut plain_from = j;
            loop {
                match bytes.get(j) {
                    Some(b'"') if bytes.get(j + 1) == Some(&b'"') => {
                        value.push_str(&record[plain_from..=j]);
                        j += 2;
                        plain_from = j;
                    }
                    Some(b'"') | None => break,
                    Some(_) => j += 1,
                }
            }
            let end = j.min(record.len());
            if value.is_empty() {
                fields.push(std::borrow::Cow::Borrowed(&record[plain_from..end]));
            } else {
                value.push_str(&record[plain_from..end]);
                fields.push(std::borrow::Cow::Owned(value));
            }
            i = j + 1;
        } else {
            let end = record[i.min(record.len())..]
                .find(',')
                .map_or(record.len(), |p| p + i);
            fields.push(std::borrow::Cow::Borrowed(&record[i.min(end)..end]));
            i = end;
        }
        if bytes.get(i) == Some(&b',') {
            i += 1;
        } else {
            return fields;
        }
    }
}

/// `(duration ms, statement text)` of an execution's duration message.
fn duration_message(message: &str) -> Option<(f64, &str)> {
    let rest = message.strip_prefix("duration: ")?;
    let (number, rest) = rest.split_once(" ms  ")?;
    let duration_ms: f64 = number.parse().ok()?;
    let text = if let Some(text) = rest.strip_prefix("statement: ") {
        text
    } else {
        // "execute <name>: text", "execute S_1/C_2: text"; not "parse"/"bind".
        let named = rest.strip_prefix("execute ")?;
        named.split_once(": ")?.1
    };
    (duration_ms.is_finite() && duration_ms >= 0.0).then_some((duration_ms, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(format: Format, record: &str) -> Result<(f64, String, i64, String), Skip> {
        parse(format, record.as_bytes(), |e| {
            (
                e.duration_ms,
                e.dbname.to_string(),
                e.query_id,
                e.text.to_string(),
            )
        })
    }

    #[test]
    fn jsonlog_durations_of_both_protocols() {
        let simple = r#"{"timestamp":"2026-12-04 19:00:00.123 UTC","user":"app","dbname":"shop","pid":42,"error_severity":"LOG","message":"duration: 12.345 ms  statement: SELECT pg_sleep(0.012)","query_id":-4242,"backend_type":"client backend"}"#;
        assert_eq!(
            owned(Format::Json, simple),
            Ok((
                12.345,
                "shop".into(),
                -4242,
                "SELECT pg_sleep(0.012)".into()
            ))
        );
        let extended = r#"{"dbname":"shop","message":"duration: 0.050 ms  execute s0: SELECT $1\nFROM t","detail":"parameters: $1 = 'secret'","query_id":7}"#;
        assert_eq!(
            owned(Format::Json, extended),
            Ok((0.05, "shop".into(), 7, "SELECT $1\nFROM t".into()))
        );
        let bind = r#"{"dbname":"shop","message":"duration: 0.010 ms  bind s0: SELECT $1"}"#;
        assert_eq!(owned(Format::Json, bind), Err(Skip::NotADuration));
        let plain = r#"{"dbname":"shop","message":"duration: 0.010 ms"}"#;
        assert_eq!(owned(Format::Json, plain), Err(Skip::NotADuration));
        assert_eq!(owned(Format::Json, "{\"mess"), Err(Skip::Malformed));
    }

    #[test]
    fn csvlog_durations_with_quotes_and_newlines() {
        // 26 columns, as written by 14+: the message is column 14, query_id the last.
        let record = "2026-12-04 19:00:00.123 UTC,\"app\",\"shop\",42,\"127.0.0.1:5000\",\
            6750e8f0.2a,3,\"SELECT\",2026-12-04 18:59:00 UTC,3/7,0,LOG,00000,\
            \"duration: 40.100 ms  statement: SELECT 'a,\"\"b\"\"'\nFROM t\",,,,,,,,,\
            \"psql\",\"client backend\",,-99";
        assert_eq!(
            owned(Format::Csv, record),
            Ok((40.1, "shop".into(), -99, "SELECT 'a,\"b\"'\nFROM t".into()))
        );
        // 13 has no query_id column.
        let v13 = "t,\"app\",\"shop\",1,\"h\",s,1,\"SELECT\",t,3/7,0,LOG,00000,\
            \"duration: 1.5 ms  statement: SELECT 1\",,,,,,,,,\"psql\",\"client backend\"";
        assert_eq!(
            owned(Format::Csv, v13),
            Ok((1.5, "shop".into(), 0, "SELECT 1".into()))
        );
        assert_eq!(owned(Format::Csv, "a,b,c"), Err(Skip::Malformed));
    }

    #[test]
    fn records_split_at_newlines_outside_quotes_and_keep_the_unfinished_one() {
        let buf = b"a,\"x\ny\",1\nb,2\nc,\"unfinished\n";
        let mut seen = Vec::new();
        let used = split_records(Format::Csv, buf, |r| seen.push(r.to_vec()));
        assert_eq!(seen, vec![b"a,\"x\ny\",1".to_vec(), b"b,2".to_vec()]);
        assert_eq!(&buf[used..], b"c,\"unfinished\n");
        let mut lines = 0;
        let used = split_records(Format::Json, b"{}\n{\"a\":\"\\n\"}\n{\"b", |_| lines += 1);
        assert_eq!((lines, used), (2, 14));
    }
}
