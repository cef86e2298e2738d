//! SQL text taken from the operator's configuration: quoted identifiers and checked
//! predicates. Queue and webhook tables, their columns and row predicates come from the
//! config file, so they are trusted like definition files; these checks catch mistakes
//! (a `;`, a comment, unbalanced parentheses) that would otherwise break or widen the SQL the
//! collectors build around them. Every collector that splices a name into SQL quotes it here.

/// Doubles `"` and wraps in `"`: the identifier is taken literally, like quote_ident does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'...'` with `'` doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.table` or `table` → quoted; names with dots inside need `"` in the config.
pub fn quote_table(table: &str, key: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2
        || parts
            .iter()
            .any(|p| p.trim().is_empty() || p.contains('\0'))
    {
        return Err(format!(
            "{key} \"{table}\" is not a table name; write schema.table, e.g. core.notification_queue"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| quote_ident(p.trim()))
        .collect::<Vec<_>>()
        .join("."))
}

/// A column name from the config, quoted.
pub fn quote_column(column: &str, key: &str) -> Result<String, String> {
    if column.trim().is_empty() || column.contains('\0') {
        return Err(format!("{key} must be a column name"));
    }
    Ok(quote_ident(column.trim()))
}

/// A predicate from the config: one boolean SQL expression, no statement separator, no
/// comment, balanced parentheses outside string literals (so it cannot close the parentheses
/// it is wrapped in).
pub fn check_predicate(sql: &str, key: &str) -> Result<String, String> {
    if sql.trim().is_empty() {
        return Err(format!(
            "{key} is empty; write a boolean SQL expression like status = 'ready'"
        ));
    }
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for c in sql.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                ';' => {
                    return Err(format!(
                        "{key} contains ';'; a predicate is one boolean expression, not statements"
                    ))
                }
                '-' if prev == '-' => {
                    return Err(format!("{key} contains a -- comment; remove it"))
                }
                '*' if prev == '/' => {
                    return Err(format!("{key} contains a /* comment; remove it"))
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("{key} has an unbalanced ')'"));
                    }
                }
                _ => {}
            },
        }
        prev = c;
    }
    if quote.is_some() {
        return Err(format!("{key} has an unterminated quote"));
    }
    if depth != 0 {
        return Err(format!("{key} has an unbalanced '('"));
    }
    Ok(format!("({})", sql.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            quote_table("Core.Queue", "t").unwrap(),
            "\"Core\".\"Queue\""
        );
        assert_eq!(quote_literal("o'brien"), "'o''brien'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            quote_table("core.notification_queue", "table").unwrap(),
            "\"core\".\"notification_queue\""
        );
        assert!(quote_table("a.b.c", "table").is_err());
        assert!(quote_column(" ", "kind_column").is_err());
    }

    #[test]
    fn predicates_are_one_expression() {
        assert_eq!(
            check_predicate(" status = 'a;b' ", "ready_predicate").unwrap(),
            "(status = 'a;b')"
        );
        for bad in [
            "a = 1; drop table t",
            "a = 1 -- x",
            "a /* x */",
            "(a",
            "a)",
            "'a",
        ] {
            assert!(check_predicate(bad, "k").is_err(), "{bad}");
        }
    }
}
