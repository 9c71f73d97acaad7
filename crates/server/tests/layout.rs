//! The server's layout rule (CONVENTIONS.md, issue 17): no source file under
//! crates/server/src longer than 600 lines. A file that grows past it holds more than one
//! thing: split it into files named for what each holds.

use std::path::{Path, PathBuf};

/// The most lines a source file in crates/server/src may have.
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

#[test]
fn no_server_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long = too_long(&src, MAX_LINES);
    let report: Vec<String> = long
        .iter()
        .map(|(name, lines)| format!("crates/server/src/{name}: {lines} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split each into files named for what they hold):\n{}",
        report.join("\n")
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
