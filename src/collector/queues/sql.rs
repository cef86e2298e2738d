//! The statements one poll of a queue runs, built once from its [`Shape`]: one statement per
//! [`Part`], so that each count can use its own partial index and each can be EXPLAINed on its
//! own (see `plan.rs`).

use std::fmt;

use super::settings::Shape;

/// A count of one statement: a state of app_queue_depth, or the expired leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Count {
    /// Ready and due now.
    Ready,
    /// Waiting for a time.
    Scheduled,
    /// Held by a worker.
    Leased,
    /// Leases held past their timeout (not a state: app_queue_expired_leases).
    Expired,
    Dead,
    Done,
}

impl Count {
    /// The `state` label value of app_queue_depth (and the name in messages; `expired` is
    /// never a label value, it has a family of its own).
    pub fn label(self) -> &'static str {
        match self {
            Count::Ready => "ready",
            Count::Scheduled => "scheduled",
            Count::Leased => "leased",
            Count::Expired => "expired",
            Count::Dead => "dead",
            Count::Done => "done",
        }
    }

    /// True for the states of rows not finished, whose sum is the pending set.
    pub fn is_pending(self) -> bool {
        matches!(self, Count::Ready | Count::Scheduled | Count::Leased)
    }
}

/// What one statement of a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `count(*)`, with the age of the oldest row for ready and leased.
    Count(Count),
    /// Pending rows by retry counter: the retries histogram.
    Retries,
    /// Pending rows by kind and state, with the lag per kind.
    Kinds,
}

impl Part {
    /// The part's name in logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Part::Count(count) => count.label(),
            Part::Retries => "retries",
            Part::Kinds => "kinds",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Shape {
    /// `WHERE` clause for a predicate, with the filter.
    fn wher(&self, predicate: &str) -> String {
        match &self.filter {
            Some(f) => format!("WHERE {f} AND {predicate}"),
            None => format!("WHERE {predicate}"),
        }
    }

    /// Ready and due now.
    fn ready_due(&self) -> String {
        match &self.available_at {
            Some(at) => format!("({} AND {at} <= {})", self.ready, self.now),
            None => self.ready.clone(),
        }
    }

    /// Waiting for a time.
    fn scheduled_pred(&self) -> Option<String> {
        match (&self.scheduled, &self.available_at) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(at)) => Some(format!("({} AND {at} > {})", self.ready, self.now)),
            _ => None,
        }
    }

    /// Every row not finished: ready, scheduled or leased.
    fn pending(&self) -> String {
        let mut parts = vec![self.ready.clone()];
        parts.extend(self.scheduled.clone());
        parts.extend(self.leased.clone());
        format!("({})", parts.join(" OR "))
    }

    /// Seconds from `column`'s oldest value to now, 0 when no row.
    fn age(&self, column: &str) -> String {
        format!(
            "coalesce(extract(epoch FROM {} - min({column})), 0)::float8",
            self.now
        )
    }

    /// `count(*)` of the rows matching `predicate`.
    fn count(&self, predicate: &str) -> String {
        format!(
            "SELECT count(*)::float8 FROM {} {}",
            self.table,
            self.wher(predicate)
        )
    }

    /// `count(*)` of the rows matching `predicate` and the age of the oldest by `column`
    /// (NULL without one).
    fn count_and_age(&self, predicate: &str, column: Option<&String>) -> String {
        let age = match column {
            Some(c) => self.age(c),
            None => "NULL::float8".into(),
        };
        format!(
            "SELECT count(*)::float8, {age} FROM {} {}",
            self.table,
            self.wher(predicate)
        )
    }

    /// The statements one poll runs, by purpose; public so the benchmark and tests can
    /// EXPLAIN exactly what the collector runs.
    pub fn statements(&self) -> Vec<(Part, String)> {
        let t = &self.table;
        let age_col = self.available_at.as_ref().or(self.created_at.as_ref());
        let ready_due = self.ready_due();
        let mut out = vec![(
            Part::Count(Count::Ready),
            self.count_and_age(&ready_due, age_col),
        )];
        if let Some(s) = self.scheduled_pred() {
            out.push((Part::Count(Count::Scheduled), self.count(&s)));
        }
        if let Some(l) = &self.leased {
            out.push((
                Part::Count(Count::Leased),
                self.count_and_age(l, self.locked_at.as_ref()),
            ));
        }
        let plain = [
            (Count::Expired, &self.expired),
            (Count::Dead, &self.dead),
            (Count::Done, &self.done),
        ];
        for (count, predicate) in plain {
            if let Some(p) = predicate {
                out.push((Part::Count(count), self.count(p)));
            }
        }
        if let Some(r) = &self.retry {
            out.push((
                Part::Retries,
                format!(
                    "SELECT least(greatest({r}, 0), 1000)::float8, count(*)::float8 FROM {t} {} GROUP BY 1",
                    self.wher(&self.pending())
                ),
            ));
        }
        if let Some(k) = &self.kind {
            let scheduled = self.scheduled_pred().unwrap_or_else(|| "false".into());
            let leased = self.leased.clone().unwrap_or_else(|| "false".into());
            let lag = match age_col {
                Some(c) => format!(
                    "extract(epoch FROM {} - min({c}) FILTER (WHERE {ready_due}))::float8",
                    self.now
                ),
                None => "NULL::float8".into(),
            };
            out.push((
                Part::Kinds,
                format!(
                    "SELECT {k}::text, count(*) FILTER (WHERE {ready_due})::float8, \
                     count(*) FILTER (WHERE {scheduled})::float8, \
                     count(*) FILTER (WHERE {leased})::float8, {lag} \
                     FROM {t} {} GROUP BY 1",
                    self.wher(&self.pending())
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn notification_queue_preset_uses_the_partial_indexes_predicates() {
        let config = toml::from_str("name = \"n\"\npreset = \"notification_queue\"").unwrap();
        let shape = Shape::resolve(&config).unwrap();
        assert_eq!(shape.table, "\"core\".\"notification_queue\"");
        let sql: BTreeMap<String, String> = shape
            .statements()
            .into_iter()
            .map(|(part, sql)| (part.to_string(), sql))
            .collect();
        assert!(
            sql["ready"].contains("(status = 'ready') AND \"available_at\" <= now()"),
            "{}",
            sql["ready"]
        );
        assert!(
            sql["expired"].contains("\"lease_expires_at\" <= now()"),
            "{}",
            sql["expired"]
        );
        assert!(sql["scheduled"].contains("\"available_at\" > now()"));
        assert!(sql.contains_key("kinds") && sql.contains_key("retries"));
    }
}
