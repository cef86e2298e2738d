//! Debug views: JSON documents that collectors publish after a run (e.g. the current blocking
//! tree) and the HTTP server shows at `/debug/<name>`, for the person who was just paged.
//! Like the metrics snapshot, reading a view never touches the database.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde_json::Value;

#[derive(Default)]
pub struct Views {
    /// view name → target → latest document.
    views: RwLock<BTreeMap<String, BTreeMap<String, Value>>>,
}

impl Views {
    pub fn new() -> Views {
        Views::default()
    }

    /// Replaces the document of `view` for `target`.
    pub fn publish(&self, view: &str, target: &str, document: Value) {
        self.views
            .write()
            .expect("views lock")
            .entry(view.to_string())
            .or_default()
            .insert(target.to_string(), document);
    }

    /// Every target's document of `view`, or None when no collector publishes it.
    pub fn get(&self, view: &str) -> Option<BTreeMap<String, Value>> {
        self.views.read().expect("views lock").get(view).cloned()
    }

    /// What the documents of `target` ask someone to do: a view may carry a top-level
    /// `to_do` list of strings (a setting to change, a grant to give), which the status page
    /// shows under the target. As (view, text), by view.
    pub fn to_do(&self, target: &str) -> Vec<(String, String)> {
        let views = self.views.read().expect("views lock");
        let mut out = Vec::new();
        for (view, targets) in views.iter() {
            let items = targets
                .get(target)
                .and_then(|doc| doc.get("to_do"))
                .and_then(Value::as_array);
            for item in items.into_iter().flatten().filter_map(Value::as_str) {
                out.push((view.clone(), item.to_string()));
            }
        }
        out
    }

    /// Names of the views published so far.
    pub fn names(&self) -> Vec<String> {
        self.views
            .read()
            .expect("views lock")
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_do_items_come_from_the_targets_documents() {
        let views = Views::new();
        views.publish("statements", "a", serde_json::json!({"to_do": ["grant x"]}));
        views.publish("statements", "b", serde_json::json!({"to_do": []}));
        views.publish("locks", "a", serde_json::json!({"tree": []}));
        assert_eq!(
            views.to_do("a"),
            vec![("statements".to_string(), "grant x".to_string())]
        );
        assert!(views.to_do("b").is_empty());
    }
}
