//! Workloads: the `[[statements.workloads]]` rules compiled, and a statement's workload from
//! its queryid and (when known) its normalized text. pgkpi's own statements are `pgkpi`,
//! always the first workload; then the first matching rule wins; unmatched statements are
//! `other`, always the last workload.

use std::collections::HashSet;

use regex::Regex;

use super::settings::{WorkloadRule, DEFAULT_WORKLOAD, PGKPI_WORKLOAD};

/// pgkpi's own statements carry this comment (`/* pgkpi statements: poll */`, ...); they go
/// to the built-in `pgkpi` workload before any rule is tried, so that the exporter's cost never
/// shows in an application's latency.
const PGKPI_COMMENT: &str = r"/\* pgkpi ";

/// Compiled workload rules.
pub struct Rules {
    /// Workload names; the last is `other`.
    pub names: Vec<String>,
    rules: Vec<(usize, Option<Regex>, HashSet<i64>)>,
    /// Some rule matches on the query text, which then has to be read.
    pub needs_text: bool,
    /// The built-in `pgkpi` workload's index and pattern.
    pgkpi: (usize, Regex),
}

impl Rules {
    pub fn new(config: &[WorkloadRule]) -> Rules {
        let mut names: Vec<String> = vec![PGKPI_WORKLOAD.to_string()];
        let mut rules = Vec::new();
        for rule in config {
            let index = match names.iter().position(|n| *n == rule.name) {
                Some(i) => i,
                None => {
                    names.push(rule.name.clone());
                    names.len() - 1
                }
            };
            // Validated in Config::validate; a bad pattern here matches nothing.
            let regex = rule.query.as_deref().and_then(|p| Regex::new(p).ok());
            rules.push((index, regex, rule.queryids.iter().copied().collect()));
        }
        let other = match names.iter().position(|n| n == DEFAULT_WORKLOAD) {
            Some(i) => i,
            None => {
                names.push(DEFAULT_WORKLOAD.to_string());
                names.len() - 1
            }
        };
        // Keep `other` last so that the index of the default is stable.
        if other != names.len() - 1 {
            let last = names.len() - 1;
            names.swap(other, last);
            for rule in &mut rules {
                if rule.0 == other {
                    rule.0 = last;
                } else if rule.0 == last {
                    rule.0 = other;
                }
            }
        }
        let needs_text = rules.iter().any(|r| r.1.is_some());
        Rules {
            names,
            rules,
            needs_text,
            pgkpi: (0, Regex::new(PGKPI_COMMENT).expect("a valid pattern")),
        }
    }

    fn default_index(&self) -> usize {
        self.names.len() - 1
    }

    /// First matching rule; `text` is None when it is not known.
    pub fn classify(&self, queryid: i64, text: Option<&str>) -> usize {
        if text.is_some_and(|t| self.pgkpi.1.is_match(t)) {
            return self.pgkpi.0;
        }
        for (index, regex, ids) in &self.rules {
            if ids.contains(&queryid) {
                return *index;
            }
            if let (Some(regex), Some(text)) = (regex, text) {
                if regex.is_match(text) {
                    return *index;
                }
            }
        }
        self.default_index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_first_match_wins_and_other_is_last() {
        let rules = Rules::new(&[
            WorkloadRule {
                name: "pinned".into(),
                query: None,
                queryids: vec![42],
            },
            WorkloadRule {
                name: "chat".into(),
                query: Some(r"chat\.messages|chat\.conversations".into()),
                queryids: vec![],
            },
            WorkloadRule {
                name: "notifications".into(),
                query: Some(r"notification_(queue|deliveries)".into()),
                queryids: vec![],
            },
        ]);
        let name = |i: usize| rules.names[i].as_str();
        assert_eq!(name(rules.classify(42, Some("SELECT 1"))), "pinned");
        assert_eq!(
            name(rules.classify(1, Some("SELECT * FROM chat.messages WHERE id = $1"))),
            "chat"
        );
        assert_eq!(
            name(rules.classify(1, Some("UPDATE core.notification_queue SET x = $1"))),
            "notifications"
        );
        assert_eq!(name(rules.classify(1, Some("SELECT 1"))), "other");
        assert_eq!(name(rules.classify(1, None)), "other");
        assert_eq!(
            name(rules.classify(
                42,
                Some("SELECT /* pgkpi statements: poll */ chat.messages")
            )),
            "pgkpi"
        );
        assert!(rules.needs_text);
        assert!(!Rules::new(&[]).needs_text);
    }

    #[test]
    fn explicit_other_rule_keeps_other_last() {
        let rules = Rules::new(&[
            WorkloadRule {
                name: "other".into(),
                query: Some("^SET ".into()),
                queryids: vec![],
            },
            WorkloadRule {
                name: "chat".into(),
                query: Some("chat".into()),
                queryids: vec![],
            },
        ]);
        assert_eq!(rules.names, ["pgkpi", "chat", "other"]);
        assert_eq!(rules.classify(1, Some("SET x = 1")), 2);
        assert_eq!(rules.classify(1, Some("SELECT chat")), 1);
    }
}
