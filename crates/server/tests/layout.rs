//! The server's layout rule (CONVENTIONS.md, issue 17): no source file under
//! crates/server/src, and no test file under crates/server/tests, longer than 600 lines. A
//! file that grows past it holds more than one thing: split it into files named for what
//! each holds (a test crate into a folder, `tests/NAME/main.rs` with a module a theme).

use std::path::{Path, PathBuf};

/// The most lines a source file in crates/server/src or crates/server/tests may have.
const MAX_LINES: usize = 600;

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The files over `max` lines below `dir`, with their line counts, sorted by name.
fn too_long(dir: &Path, max: usize) -> Vec<(String, usize)> {
    let mut files = Vec::new();
    sources(dir, &mut files);
    let mut long: Vec<(String, usize)> = files
        .iter()
        .filter_map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let lines = text.lines().count();
            let name = p.strip_prefix(dir).unwrap_or(p).display().to_string();
            (lines > max).then_some((name, lines))
        })
        .collect();
    long.sort();
    long
}

/// Panics naming each `.rs` file under crates/server/`room` over [`MAX_LINES`] and its length.
fn assert_no_long_file_in(room: &str, how: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(room);
    let long = too_long(&dir, MAX_LINES);
    let report: Vec<String> = long
        .iter()
        .map(|(name, lines)| format!("crates/server/{room}/{name}: {lines} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines ({how}):\n{}",
        report.join("\n")
    );
}

#[test]
fn no_server_source_file_is_over_600_lines() {
    assert_no_long_file_in("src", "split each into files named for what they hold");
}

#[test]
fn no_server_test_file_is_over_600_lines() {
    assert_no_long_file_in(
        "tests",
        "split each test crate into a folder, tests/NAME/main.rs with a module a theme \
         and what they share in common.rs",
    );
}

#[test]
fn the_line_count_names_each_long_file_and_its_count() {
    let dir = std::env::temp_dir().join(format!("stepgate-layout-{}", std::process::id()));
    let nested = dir.join("room");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(dir.join("short.rs"), "fn a() {}\n".repeat(3)).unwrap();
    std::fs::write(nested.join("long.rs"), "fn a() {}\n".repeat(5)).unwrap();
    std::fs::write(nested.join("notes.md"), "x\n".repeat(50)).unwrap();
    let long = too_long(&dir, 4);
    std::fs::remove_dir_all(&dir).unwrap();
    let expected = Path::new("room").join("long.rs").display().to_string();
    assert_eq!(long, vec![(expected, 5)]);
}

/// The most lines a function in crates/server/src may span, from its `fn` line to its
/// closing brace (issue 17: no handler over ~60 lines). Tests are not counted.
const MAX_FN_LINES: usize = 60;

/// What the scanner is inside of.
#[derive(Clone, Copy, PartialEq)]
enum In {
    Code,
    LineComment,
    BlockComment(usize),
    Str,
    RawStr(usize),
}

/// The functions of one Rust source text longer than `max` lines, as `(name, first line,
/// lines)`. Everything from the first `#[cfg(test)]` on is a test module and not counted.
/// Strings, raw strings, character literals and comments are skipped so that braces in
/// them do not count.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut state = In::Code;
    let (mut line, mut depth, mut square, mut paren) = (1usize, 0usize, 0usize, 0usize);
    // A function whose `fn` was seen and whose body has not opened yet.
    let mut pending: Option<(String, usize)> = None;
    // Open function bodies: name, first line, the depth inside their braces.
    let mut open: Vec<(String, usize, usize)> = Vec::new();
    let mut long = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
        }
        match state {
            In::LineComment => {
                if c == '\n' {
                    state = In::Code;
                }
            }
            In::BlockComment(n) => {
                if c == '*' && next == Some('/') {
                    state = if n == 1 {
                        In::Code
                    } else {
                        In::BlockComment(n - 1)
                    };
                    i += 1;
                } else if c == '/' && next == Some('*') {
                    state = In::BlockComment(n + 1);
                    i += 1;
                }
            }
            In::Str => {
                if c == '\\' {
                    if next == Some('\n') {
                        line += 1;
                    }
                    i += 1;
                } else if c == '"' {
                    state = In::Code;
                }
            }
            In::RawStr(hashes) => {
                if c == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|h| **h == '#')
                        .count()
                        == hashes
                {
                    state = In::Code;
                    i += hashes;
                }
            }
            In::Code => {
                let word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
                if c == '/' && next == Some('/') {
                    state = In::LineComment;
                } else if c == '/' && next == Some('*') {
                    state = In::BlockComment(1);
                    i += 1;
                } else if c == '"' {
                    state = In::Str;
                } else if c == 'r' && word_start && matches!(next, Some('"' | '#')) {
                    let hashes = chars[i + 1..].iter().take_while(|h| **h == '#').count();
                    if chars.get(i + 1 + hashes) == Some(&'"') {
                        state = In::RawStr(hashes);
                        i += hashes + 1;
                    }
                } else if c == '\'' {
                    // A character literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
                    let close = if next == Some('\\') {
                        chars[i + 3..]
                            .iter()
                            .position(|q| *q == '\'')
                            .map(|p| i + 3 + p)
                    } else if chars.get(i + 2) == Some(&'\'') {
                        Some(i + 2)
                    } else {
                        None
                    };
                    if let Some(close) = close {
                        i = close;
                    }
                } else if c == 'f' && word_start && next == Some('n') {
                    let after = chars.get(i + 2).copied();
                    if after.is_some_and(char::is_whitespace) {
                        let name: String = chars[i + 2..]
                            .iter()
                            .skip_while(|x| x.is_whitespace())
                            .take_while(|x| x.is_alphanumeric() || **x == '_')
                            .collect();
                        if !name.is_empty() {
                            pending = Some((name, line));
                        }
                    }
                } else if c == '(' {
                    paren += 1;
                } else if c == ')' {
                    paren = paren.saturating_sub(1);
                } else if c == '[' {
                    square += 1;
                } else if c == ']' {
                    square = square.saturating_sub(1);
                } else if c == ';' && square == 0 {
                    // `fn f();` in a trait: a declaration without a body (a `;` inside
                    // `[u8; 4]` in a signature does not end it).
                    pending = None;
                } else if c == '{' {
                    depth += 1;
                    // The body's brace, not one of a destructured parameter
                    // (`Visit { st, .. }: Visit`).
                    if paren == 0 {
                        if let Some((name, first)) = pending.take() {
                            open.push((name, first, depth));
                        }
                    }
                } else if c == '}' {
                    if open.last().is_some_and(|(_, _, d)| *d == depth) {
                        let (name, first, _) = open.pop().expect("an open function");
                        let lines = line - first + 1;
                        if lines > max {
                            long.push((name, first, lines));
                        }
                    }
                    depth = depth.saturating_sub(1);
                }
            }
        }
        i += 1;
    }
    long
}

#[test]
fn no_server_function_is_over_60_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut report = Vec::new();
    for path in files.iter().filter(|p| !p.ends_with("tests.rs")) {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .strip_prefix(&src)
            .unwrap_or(path)
            .display()
            .to_string();
        for (function, first, lines) in long_functions(&text, MAX_FN_LINES) {
            report.push(format!(
                "crates/server/src/{name}:{first}: fn {function} is {lines} lines"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "functions over {MAX_FN_LINES} lines (split each into steps named for what they do):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_function_scanner_skips_strings_comments_and_tests() {
    let body = "    x();\n".repeat(3);
    let text = format!(
        "fn short() {{\n{body}}}\n\
         // fn not_a_function() {{\n\
         trait T {{\n    fn declared(&self);\n}}\n\
         fn long(S {{ a, .. }}: S<'static>) -> [char; 1] {{\n    let s = \"}} {{ fn fake() {{\";\n    let r = r#\"}}\"}}\"#;\n    let c = '}}';\n    let d = '\\'';\n{body}    [c]\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}{body}    }}\n}}\n"
    );
    let found = long_functions(&text, 5);
    assert_eq!(found, vec![("long".to_string(), 10, 10)]);
    assert!(long_functions(&text, 10).is_empty());
}
