//! Metric families as collectors produce them, and their Prometheus text encoding.
//!
//! Collectors return plain [`Family`] values instead of `prometheus` crate protobufs: a family
//! with no samples is simply not written (the `prometheus` text encoder rejects it), and the
//! snapshot can merge the same family coming from several targets under one `# HELP`/`# TYPE`
//! header, which the text format requires.

use std::fmt::Write as _;

/// The Prometheus type of a family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Gauge,
    Counter,
    Histogram,
    Untyped,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Histogram => "histogram",
            MetricType::Untyped => "untyped",
        }
    }
}

/// One sample line. `suffix` is appended to the family name (`_bucket`, `_sum`, `_count` for
/// histograms; empty otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: name, help, type and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

impl Family {
    /// Private on purpose: an output family is made only from a declaration
    /// ([`Metric::family`], [`FamilyDesc::family`]), so its name, type and help cannot drift
    /// from what the reference documents.
    fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricType) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with the given labels; builder style.
    pub fn with(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample {
            suffix: "",
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }
}

/// A family a Rust collector may emit, declared once as a constant: its name (which carries
/// the base unit, `_seconds`, `_bytes`, `_total` for counters), type, labels (the leading
/// `target` included) and help. The declaration is the only source of
/// these: [`Metric::family`] makes the output family from it and [`Metric::describe`] feeds the
/// registry and the metric reference, so a served family can never disagree with its
/// documentation, and a misspelt name is a compile error rather than a missing metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricType,
    pub labels: Labels,
    pub help: &'static str,
}

/// A declaration's label names, the leading `target` included.
pub type Labels = &'static [&'static str];

impl Metric {
    pub const fn gauge(name: &'static str, labels: Labels, help: &'static str) -> Metric {
        Metric::of(MetricType::Gauge, name, labels, help)
    }

    pub const fn counter(name: &'static str, labels: Labels, help: &'static str) -> Metric {
        Metric::of(MetricType::Counter, name, labels, help)
    }

    pub const fn histogram(name: &'static str, labels: Labels, help: &'static str) -> Metric {
        Metric::of(MetricType::Histogram, name, labels, help)
    }

    const fn of(
        kind: MetricType,
        name: &'static str,
        labels: Labels,
        help: &'static str,
    ) -> Metric {
        Metric {
            name,
            kind,
            labels,
            help,
        }
    }

    /// An empty output family of this declaration.
    pub fn family(&self) -> Family {
        Family::new(self.name, self.help, self.kind)
    }

    /// The declaration as the registry and the metric reference list it.
    pub fn describe(&self) -> FamilyDesc {
        FamilyDesc::new(self.name, self.kind, self.labels, self.help)
    }
}

/// Declares a collector's families as [`Metric`] constants, one line each:
/// `NAME = gauge("metric_name", &["target", ...], "help");` (or `counter`, `histogram`; `pub`
/// and doc comments allowed). The one-line form keeps a collector's declarations a table that
/// reads like the reference; rustfmt would spread each over five lines.
macro_rules! metrics {
    ($($(#[$attr:meta])* $vis:vis $name:ident = $kind:ident($metric:literal, $labels:expr, $help:literal);)*) => {
        $($(#[$attr])* $vis const $name: $crate::metric::Metric =
            $crate::metric::Metric::$kind($metric, $labels, $help);)*
    };
}
pub(crate) use metrics;

/// Describes every declaration of a list; what a Rust collector's `Spec::families` returns.
pub fn describe_all(metrics: &[Metric]) -> Vec<FamilyDesc> {
    metrics.iter().map(Metric::describe).collect()
}

/// Description of a family a collector may emit, owned: built from a [`Metric`] declaration,
/// from a definition file or from the exporter's own registry. Feeds the metric reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyDesc {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    pub labels: Vec<String>,
}

impl FamilyDesc {
    pub fn new(name: &str, kind: MetricType, labels: &[&str], help: &str) -> Self {
        FamilyDesc {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// An empty output family of this description (definition-file collectors).
    pub fn family(&self) -> Family {
        Family::new(self.name.clone(), self.help.clone(), self.kind)
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn write_header(out: &mut String, family: &Family) {
    let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
}

/// Writes the sample lines of a family, with `leading` labels (e.g. `target`) first.
pub fn write_samples(out: &mut String, family: &Family, leading: &[(&str, &str)]) {
    for sample in &family.samples {
        out.push_str(&family.name);
        out.push_str(sample.suffix);
        let mut labels = leading
            .iter()
            .copied()
            .chain(sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .peekable();
        if labels.peek().is_some() {
            out.push('{');
            for (i, (key, value)) in labels.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                escape_label_value_into(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_value(out, sample.value);
        out.push('\n');
    }
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// True when `name` is a valid Prometheus metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// True when `name` is a valid Prometheus label name (and not reserved).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    !name.starts_with("__") && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_labels_with_escaping_and_leading_target() {
        let family = Metric::gauge("pg_x", &["target", "db"], "Help with \\ and\nnewline")
            .family()
            .with(&[("db", "a\"b\\c\nd")], 1.5);
        let mut out = String::new();
        write_header(&mut out, &family);
        write_samples(&mut out, &family, &[("target", "main")]);
        assert_eq!(
            out,
            "# HELP pg_x Help with \\\\ and\\nnewline\n# TYPE pg_x gauge\n\
             pg_x{target=\"main\",db=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn encodes_special_values_and_integers() {
        let mut family = Metric::gauge("v", &[], "h").family();
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 42.0, -3.0, 0.25] {
            family.push(&[], value);
        }
        let mut out = String::new();
        write_samples(&mut out, &family, &[]);
        assert_eq!(out, "v NaN\nv +Inf\nv -Inf\nv 42\nv -3\nv 0.25\n");
    }

    #[test]
    fn validates_names() {
        assert!(is_valid_metric_name("pg_up"));
        assert!(is_valid_metric_name("ns:rule_total"));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name("pg-up"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("datname"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
    }
}
