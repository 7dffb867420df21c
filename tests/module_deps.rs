//! The modules' dependencies run one way: no top-level module of `src/` may reach
//! itself through the `crate::` paths of the others. Read from the source text
//! (test modules left out), so a new cycle fails CI wherever it is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots
/// and for files of tests.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    let is_root = matches!(name, "lib" | "main");
    let is_tests = file.file_stem().is_some_and(|s| s == "tests");
    (!is_root && !is_tests).then(|| name.to_owned())
}

/// The source without its `#[cfg(test)]` module and its line comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names a file reaches through `crate::`, in paths and in
/// `use crate::{a, b::c}` groups.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                names.insert(first_identifier(item));
            }
        } else {
            names.insert(first_identifier(rest));
        }
    }
    names
}

fn first_identifier(text: &str) -> String {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    text[..end].to_owned()
}

fn dependency_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = module_of(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        let uses = graph.entry(module.clone()).or_default();
        for name in referenced(&code(&text)) {
            if name != module && modules.contains(&name) {
                uses.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_reaches_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = dependency_graph(&src);
    assert!(
        graph.len() > 10,
        "the modules of src/ were found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" → "));
    }
}

#[test]
fn the_check_finds_a_cycle_and_reads_grouped_imports() {
    let code = code("use crate::{model::Email, plan};\nlet x = crate::cache::open();\n// crate::sync\n#[cfg(test)]\nmod tests { use crate::apply; }");
    let names: Vec<String> = referenced(&code).into_iter().collect();
    assert_eq!(names, ["cache", "model", "plan"]);
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&graph).expect("a cycle"), ["a", "b", "c", "a"]);
    let acyclic: Graph = [("a", "b"), ("b", "c")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}
