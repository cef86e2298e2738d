//! What a logged duration stands for. The server logs every statement whose duration reached
//! `log_min_duration_statement` and a random `log_statement_sample_rate` share of those that
//! reached `log_min_duration_sample` (13+), with one and the same message: the duration alone
//! says which rule logged it, hence its weight (1 for the first, 1 / rate for the second).
//! The settings are the server's, read every poll, never pgkpi's own idea of them.

/// The server's logging settings that decide which executions reach the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// `log_min_duration_statement`, ms; None when -1 (off).
    pub min_duration_statement_ms: Option<f64>,
    /// `log_min_duration_sample`, ms; None when -1 (off).
    pub min_duration_sample_ms: Option<f64>,
    /// `log_statement_sample_rate`, 0..1.
    pub sample_rate: f64,
    /// `log_transaction_sample_rate`: statements of sampled transactions are logged whatever
    /// their duration, which no weight can undo.
    pub transaction_sample_rate: f64,
    /// `log_destination`, e.g. "stderr,jsonlog".
    pub destination: String,
    pub logging_collector: bool,
    /// `lc_messages`: the duration message is recognised in English only.
    pub lc_messages: String,
}

/// What keeps the log from giving weighted durations of every execution; the status and
/// `pgkpi check-config` show its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Neither jsonlog nor csvlog in log_destination, or logging_collector off.
    StructuredLog,
    /// Not every execution can be logged: neither `log_min_duration_statement = 0` nor
    /// `log_min_duration_sample = 0` with a positive rate.
    Coverage,
    TransactionSampling,
    Language,
}

impl Missing {
    pub fn hint(&self) -> &'static str {
        match self {
            Missing::StructuredLog => {
                "set logging_collector = on (restart) and log_destination to include jsonlog \
                 (15+) or csvlog"
            }
            Missing::Coverage => {
                "set log_min_duration_sample = 0 and log_statement_sample_rate to a rate like \
                 0.05 (or log_min_duration_statement = 0 to log every statement)"
            }
            Missing::TransactionSampling => {
                "set log_transaction_sample_rate = 0 (its statements cannot be weighted)"
            }
            Missing::Language => "set lc_messages = 'C' (duration messages are read in English)",
        }
    }
}

impl LogSettings {
    /// The format to follow: jsonlog when the server writes it, else csvlog.
    pub fn format(&self) -> Option<super::parse::Format> {
        use super::parse::Format;
        let has = |name: &str| self.destination.split(',').any(|d| d.trim() == name);
        if !self.logging_collector {
            None
        } else if has("jsonlog") {
            Some(Format::Json)
        } else if has("csvlog") {
            Some(Format::Csv)
        } else {
            None
        }
    }

    /// The first thing that keeps the log source from working, if any.
    pub fn missing(&self) -> Option<Missing> {
        let english = self.lc_messages.is_empty()
            || self.lc_messages == "C"
            || self.lc_messages == "POSIX"
            || self.lc_messages.starts_with("en");
        if self.format().is_none() {
            Some(Missing::StructuredLog)
        } else if !(self.min_duration_statement_ms == Some(0.0)
            || (self.min_duration_sample_ms == Some(0.0) && self.sample_rate > 0.0))
        {
            Some(Missing::Coverage)
        } else if self.transaction_sample_rate > 0.0 {
            Some(Missing::TransactionSampling)
        } else if !english {
            Some(Missing::Language)
        } else {
            None
        }
    }

    /// How many executions a logged duration stands for; None for one no rule explains (a
    /// line from other settings, e.g. an earlier configuration).
    pub fn weight(&self, duration_ms: f64) -> Option<f64> {
        // The server compares whole milliseconds (microseconds / 1000, truncated).
        let whole_ms = duration_ms.floor();
        let reached = |threshold: Option<f64>| threshold.is_some_and(|t| whole_ms >= t);
        if reached(self.min_duration_statement_ms) {
            Some(1.0)
        } else if reached(self.min_duration_sample_ms) && self.sample_rate > 0.0 {
            Some(1.0 / self.sample_rate)
        } else {
            None
        }
    }

    /// The weights of two readings differ: a window that straddles the change cannot tell
    /// which rule logged its lines.
    pub fn weights_changed(&self, other: &LogSettings) -> bool {
        self.min_duration_statement_ms != other.min_duration_statement_ms
            || self.min_duration_sample_ms != other.min_duration_sample_ms
            || self.sample_rate != other.sample_rate
            || self.transaction_sample_rate != other.transaction_sample_rate
    }
}

/// A duration setting in ms as `current_setting()` gives it in `pg_settings` units; -1 is off.
pub fn threshold_ms(value: i64) -> Option<f64> {
    (value >= 0).then_some(value as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled() -> LogSettings {
        LogSettings {
            min_duration_statement_ms: Some(250.0),
            min_duration_sample_ms: Some(0.0),
            sample_rate: 0.1,
            transaction_sample_rate: 0.0,
            destination: "stderr,jsonlog".into(),
            logging_collector: true,
            lc_messages: "C".into(),
        }
    }

    #[test]
    fn weights_follow_the_rule_that_logged_the_line() {
        let s = sampled();
        assert_eq!(s.missing(), None);
        assert_eq!(s.weight(3.2), Some(10.0));
        // 249.9 ms is 249 whole ms: still sampled.
        assert_eq!(s.weight(249.9), Some(10.0));
        assert_eq!(s.weight(250.0), Some(1.0));
        let only_slow = LogSettings {
            min_duration_sample_ms: None,
            ..s.clone()
        };
        assert_eq!(only_slow.weight(3.0), None);
        assert_eq!(only_slow.missing(), Some(Missing::Coverage));
        assert!(s.weights_changed(&LogSettings {
            sample_rate: 0.2,
            ..s.clone()
        }));
        assert!(!s.weights_changed(&LogSettings {
            destination: "csvlog".into(),
            ..s.clone()
        }));
    }

    #[test]
    fn what_is_missing_names_the_setting() {
        let mut s = sampled();
        s.destination = "stderr".into();
        assert_eq!(s.missing(), Some(Missing::StructuredLog));
        s.destination = "csvlog".into();
        assert_eq!(s.format(), Some(super::super::parse::Format::Csv));
        s.transaction_sample_rate = 0.01;
        assert_eq!(s.missing(), Some(Missing::TransactionSampling));
        s.transaction_sample_rate = 0.0;
        s.lc_messages = "de_DE.UTF-8".into();
        assert_eq!(s.missing(), Some(Missing::Language));
        s.logging_collector = false;
        assert_eq!(s.missing(), Some(Missing::StructuredLog));
    }
}
