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
