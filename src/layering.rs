//! A test that fails when the modules of src/ depend on each other in a cycle.
//!
//! A cycle means no module of it can be understood, tested or moved without the others, and
//! cycles only grow: once `a` and `b` know each other, the next shared type lands wherever is
//! handy. So the crate's module graph must stay acyclic. The graph is built from the source
//! text (no compiler help), one node per file:
//! * an edge `a -> b` for each `crate::b::...` path (in `use` trees, grouped or not, and inline)
//!   and each `super::...` path in the file of `a`, resolved to the longest module that exists;
//! * no edge from a module to its own descendants: a `mod.rs` declaring and dispatching to its
//!   children is how Rust nests modules (and relative paths like `server::spec()` are not
//!   parsed anyway), but a child naming its parent (`super::Spec`) is an edge;
//! * comments, string and char literals and `#[cfg(test)] mod ... { }` blocks are skipped:
//!   test code may reach across layers without shaping the shipped code.
//!
//! Two rules are checked: no cycle (any acyclic graph has a layer order; `src/lib.rs` states
//! it, and the failure names the edges), and a collector's settings module imports nothing of
//! the collectors, because `config` embeds it below them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Module -> module it references -> where (the first reference): "src/x.rs:12 crate::y::Z".
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The source with comments and string/char literals replaced by spaces; newlines are kept so
/// that line numbers stay right, and braces inside literals no longer count.
fn blank_comments_and_literals(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |i: usize| i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i..].starts_with(b"//") {
            i += b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .unwrap_or(b.len() - i);
        } else if b[i..].starts_with(b"/*") {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (b[i] == b'r' || b[i..].starts_with(b"br")) && !ident(i) {
            // Raw string r"..", r#".."#, br#".."#: ends at a quote followed by as many #.
            let mut j = i + if b[i] == b'b' { 2 } else { 1 };
            let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
            j += hashes;
            if b.get(j) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = [b"\"".as_slice(), &vec![b'#'; hashes]].concat();
            i = j + 1 + find(&b[j + 1..], &close).map_or(b.len(), |k| k + close.len());
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '{') or a lifetime/label ('a) which is left alone.
            // `len` is the whole literal's length, quotes included.
            let len = if b.get(i + 1) == Some(&b'\\') {
                b.get(i + 3..)
                    .and_then(|r| r.iter().position(|&c| c == b'\''))
                    .map(|k| k + 4)
            } else {
                src[i + 1..]
                    .chars()
                    .next()
                    .map(|c| c.len_utf8() + 2)
                    .filter(|&n| b.get(i + n - 1) == Some(&b'\''))
            };
            i += len.unwrap_or(1);
        } else {
            i += 1;
            continue;
        }
        blank(&mut out, start, i);
    }
    // Blanking whole UTF-8 sequences byte by byte leaves valid ASCII; code outside literals
    // and comments is untouched, so this cannot fail.
    String::from_utf8(out).expect("blanked text is UTF-8")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Identifiers, `::` and single punctuation characters, with their line numbers.
fn tokens(code: &str) -> Vec<(&str, usize)> {
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    let b = code.as_bytes();
    while i < b.len() {
        let c = b[i];
        let len = if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count()
        } else if code[i..].starts_with("::") {
            2
        } else {
            code[i..].chars().next().map_or(1, char::len_utf8)
        };
        out.push((&code[i..i + len], line));
        i += len;
    }
    out
}

/// Parses a path or `use` tree starting at `tokens[i]` (after `crate` or `super`), pushing
/// every full path it names; returns the index after it. `a::{b, c::{d, e}}` gives
/// `a::b`, `a::c::d` and `a::c::e`.
fn use_tree(
    t: &[(&str, usize)],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match t.get(i).map(|t| t.0) {
            Some("{") => {
                i += 1;
                while i < t.len() && t[i].0 != "}" {
                    // max: an unexpected token inside braces must not stop progress.
                    i = use_tree(t, i, prefix.clone(), out).max(i + 1);
                    if t.get(i).map(|t| t.0) == Some("as") {
                        i += 2;
                    }
                    if t.get(i).map(|t| t.0) == Some(",") {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some(s) if s.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                if s != "self" {
                    prefix.push(s.to_string());
                }
                i += 1;
                if t.get(i).map(|t| t.0) == Some("::") {
                    i += 1;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            // `*`, `<T>` after `::`, or anything else ends the path here.
            _ => {
                out.push(prefix);
                return i + usize::from(t.get(i).map(|t| t.0) == Some("*"));
            }
        }
    }
}

/// `src/collector/statements/mod.rs` -> `collector::statements`; `src/lib.rs` -> `` (root).
fn module_of(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parts = match parts.last().map(String::as_str) {
        Some("mod" | "lib") => &parts[..parts.len() - 1],
        _ => &parts[..],
    };
    parts.join("::")
}

/// Every module this file's code names, as (target module, line, path as written).
fn references(src: &str, module: &str, modules: &BTreeSet<String>) -> Vec<(String, usize, String)> {
    let code = blank_comments_and_literals(src);
    let t = tokens(&code);
    let text = |i: usize| t.get(i).map_or("", |t| t.0);
    let here: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    // Inline `mod name {` blocks: (name, brace depth inside it, is a #[cfg(test)] block).
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let (mut depth, mut out) = (0, Vec::new());
    let mut i = 0;
    while i < t.len() {
        match text(i) {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if text(i + 2) == "{" => {
                let start = if i > 0 && text(i - 1) == "pub" {
                    i - 1
                } else {
                    i
                };
                let test = start >= 7
                    && (start - 7..start)
                        .map(text)
                        .eq(["#", "[", "cfg", "(", "test", ")", "]"]);
                inline.push((text(i + 1).to_string(), depth + 1, test));
            }
            "crate" | "super"
                if text(i + 1) == "::" && !matches!(text(i.wrapping_sub(1)), "::" | "$") =>
            {
                let mut paths = Vec::new();
                let next = use_tree(&t, i, Vec::new(), &mut paths);
                if !inline.iter().any(|m| m.2) {
                    let mut scope = here.clone();
                    scope.extend(inline.iter().map(|m| m.0.clone()));
                    for path in paths {
                        let written = path.join("::");
                        // `crate::` starts at the root, `super::` from where it is written.
                        let (mut absolute, mut rest) = match path.split_first() {
                            Some((first, rest)) if first == "crate" => (Vec::new(), rest),
                            _ => (scope.clone(), &path[..]),
                        };
                        while rest.first().is_some_and(|s| s == "super") {
                            absolute.pop();
                            rest = &rest[1..];
                        }
                        absolute.extend(rest.iter().cloned());
                        // The longest prefix that is a module file: `crate::poller::Lane::Main`
                        // names `poller`.
                        let target = (0..=absolute.len())
                            .rev()
                            .map(|n| absolute[..n].join("::"))
                            .find(|m| modules.contains(m))
                            .unwrap_or_default();
                        out.push((target, t[i].1, written));
                    }
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The module graph of src/ (src/main.rs and src/bin/ are separate crates).
fn crate_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let relative = path.strip_prefix(src).unwrap().to_path_buf();
            if relative == Path::new("bin") || relative == Path::new("main.rs") {
                continue;
            } else if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((module_of(&relative), path));
            }
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|f| f.0.clone()).collect();
    let mut graph = Graph::new();
    for (module, path) in &files {
        let edges = graph.entry(name(module)).or_default();
        let shown = path
            .strip_prefix(src.parent().unwrap())
            .unwrap()
            .display()
            .to_string();
        for (target, line, written) in
            references(&std::fs::read_to_string(path).unwrap(), module, &modules)
        {
            let descendant = module.is_empty() || target.starts_with(&format!("{module}::"));
            if target != *module && !descendant {
                edges
                    .entry(name(&target))
                    .or_insert(format!("{shown}:{line} {written}"));
            }
        }
    }
    graph
}

fn name(module: &str) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.into()
    }
}

/// The shortest cycle through `start`, as `[start, .., start]`: breadth-first from `start`
/// until an edge leads back to it.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                // Walk back from `node` to `start`, then read it forwards.
                let mut cycle = vec![start.to_string()];
                let mut at = node;
                while at != start {
                    cycle.push(at.to_string());
                    at = came_from[at];
                }
                cycle.push(start.to_string());
                cycle.reverse();
                return Some(cycle);
            }
            if !came_from.contains_key(next.as_str()) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The shortest cycle of the graph, if any, and every module that is on some cycle.
fn shortest_cycle(graph: &Graph) -> Option<(Vec<String>, Vec<String>)> {
    let cycles: Vec<Vec<String>> = graph
        .keys()
        .filter_map(|m| cycle_through(graph, m))
        .collect();
    let on_cycles = cycles.iter().map(|c| c[0].clone()).collect();
    cycles
        .into_iter()
        .min_by_key(Vec::len)
        .map(|c| (c, on_cycles))
}

#[test]
fn src_modules_have_no_dependency_cycle() {
    let graph = crate_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // Guards against a parser or path change that silently finds nothing to check.
    let edges: usize = graph.values().map(BTreeMap::len).sum();
    assert!(
        graph.len() >= 10 && edges >= 10,
        "only {} modules and {edges} edges found: {graph:#?}",
        graph.len()
    );
    if let Some((cycle, on_cycles)) = shortest_cycle(&graph) {
        let evidence: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {}: {}", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        // An example taken from the first edge: the item its path names.
        let (from, to) = (&cycle[0], &cycle[1]);
        let item = graph[from][to].rsplit("::").next().unwrap_or_default();
        panic!(
            "module cycle in src/: {}\n{}\n\
             hint: break one edge. Decide which module of it is the lower layer and move what it \
             takes from the higher one down into it (or into a new module below both), e.g. if \
             {from} is below {to}, move `{item}` out of {to} so that {from} no longer names {to}.\n\
             {} modules are on a cycle: {}",
            cycle.join(" -> "),
            evidence.join("\n"),
            on_cycles.len(),
            on_cycles.join(", ")
        );
    }
}

/// A collector's settings (`collector::<name>::settings` and what it nests) are read by
/// `config`, which the collectors' interface imports: settings that named their own collector
/// (or the interface) would tie configuration to the code it configures and bring the cycle
/// back. They may use shared modules below the collectors (`duration`, `sql_text`, ...).
fn settings_reaching_into_collectors(graph: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    for (module, edges) in graph {
        let Some(collector) = module
            .strip_prefix("collector::")
            .and_then(|rest| rest.split_once("::settings"))
            .map(|(name, _)| format!("collector::{name}"))
        else {
            continue;
        };
        let settings = format!("{collector}::settings");
        for (to, at) in edges {
            let inside_settings = to == &settings || to.starts_with(&format!("{settings}::"));
            if !inside_settings && (to == "collector" || to.starts_with("collector::")) {
                problems.push(format!("{module} -> {to}: {at}"));
            }
        }
    }
    problems
}

#[test]
fn collector_settings_import_nothing_of_the_collectors() {
    let graph = crate_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        graph.keys().filter(|m| m.ends_with("::settings")).count() >= 5,
        "the settings modules were not found: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    let problems = settings_reaching_into_collectors(&graph);
    assert!(
        problems.is_empty(),
        "settings modules must import nothing of the collectors (move the type they need into \
         the settings module, or below the collectors):\n{}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string(), String::new());
        }
        g
    }

    #[test]
    fn settings_may_nest_but_not_reach_into_their_collector() {
        let g = graph(&[
            ("collector::q::settings", "collector::q::settings::presets"),
            ("collector::q::settings", "sql_text"),
            ("collector::q::settings::presets", "collector::q::settings"),
            ("collector::s::settings", "collector::s::estimate"),
            ("collector::q", "collector::q::settings"),
        ]);
        let problems = settings_reaching_into_collectors(&g);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("collector::s::settings -> collector::s::estimate"));
    }

    #[test]
    fn cycle_finder_reports_the_shortest_cycle_and_passes_a_dag() {
        let cyclic = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "c")]);
        let (cycle, on) = shortest_cycle(&cyclic).unwrap();
        assert_eq!(cycle.join(" -> "), "c -> d -> c");
        assert_eq!(on, ["a", "b", "c", "d"]);
        let dag = graph(&[("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]);
        assert_eq!(shortest_cycle(&dag), None);
    }

    #[test]
    fn references_follow_use_trees_and_super_and_skip_comments_literals_and_tests() {
        let modules: BTreeSet<String> = ["", "a", "a::b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let src = r##"
            //! [`crate::e`] in a doc comment, /* crate::e */ in a block comment
            use crate::{
                c::{Thing, Other as O},
                d,
            };
            use super::Parent;
            const S: &str = "crate::e::X"; const R: &str = r#"crate::e"#; const B: char = '{';
            fn f<'a>(_: &'a str) { let _ = crate::a::b::Item::new(); }
            #[cfg(test)]
            mod tests { use crate::e::Y; }
        "##;
        let found: Vec<(String, String)> = references(src, "a::b", &modules)
            .into_iter()
            .map(|(target, _, written)| (target, written))
            .collect();
        let expect = [
            ("c", "crate::c::Thing"),
            ("c", "crate::c::Other"),
            ("d", "crate::d"),
            ("a", "super::Parent"),
            ("a::b", "crate::a::b::Item::new"),
        ];
        assert_eq!(found, expect.map(|(t, w)| (t.to_string(), w.to_string())));
    }

    #[test]
    fn graph_of_a_small_crate_skips_parent_to_child_and_finds_a_cycle() {
        let root = std::env::temp_dir().join(format!("pgkpi-layering-{}", std::process::id()));
        let src = root.join("src");
        let write = |file: &str, text: &str| {
            let path = src.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("lib.rs", "pub mod a; pub mod b; pub mod c;");
        write("main.rs", "use crate::a::X;");
        write("bin/tool/main.rs", "use crate::a::X;");
        write("a.rs", "use crate::b::Y;");
        write("b.rs", "pub struct Y;");
        write(
            "c/mod.rs",
            "mod d; pub struct Z; fn f() { crate::c::d::g() }",
        );
        write("c/d.rs", "use super::Z;\nuse crate::{a, b::Y};");
        let graph = crate_graph(&src);
        let edges: Vec<String> = graph
            .iter()
            .flat_map(|(m, e)| e.keys().map(move |t| format!("{m} -> {t}")))
            .collect();
        assert_eq!(edges, ["a -> b", "c::d -> a", "c::d -> b", "c::d -> c"]);
        assert_eq!(graph["c::d"]["c"], "src/c/d.rs:1 super::Z");
        assert_eq!(shortest_cycle(&graph), None);

        write("b.rs", "pub struct Y(crate::c::d::W);");
        let (cycle, _) = shortest_cycle(&crate_graph(&src)).unwrap();
        assert_eq!(cycle.join(" -> "), "b -> c::d -> b");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn files_map_to_module_paths() {
        assert_eq!(
            module_of(Path::new("collector/statements/mod.rs")),
            "collector::statements"
        );
        assert_eq!(
            module_of(Path::new("collector/queues.rs")),
            "collector::queues"
        );
        assert_eq!(module_of(Path::new("lib.rs")), "");
    }
}
