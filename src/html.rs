//! HTML escaping for the pages pgkpi writes itself (the status page, the report's HTML).

/// `text` safe inside an element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
