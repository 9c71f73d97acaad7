//! No configuration can take down the process loading it: each limit is refused with the
//! file, line and column, the limit and the fix — and the loader never overflows the
//! caller's stack, blocks on a FIFO or reads a device, whatever thread calls it.

use std::path::{Path, PathBuf};

use stepgate_config::{
    load, load_str, ConfigError, Diagnostic, MAX_FILE_BYTES, MAX_INCLUDE_DEPTH, MAX_YAML_DEPTH,
};

/// Runs `f` on a thread with a small stack (smaller than a runtime worker's 2 MiB), as a
/// reload on a busy server would; a stack overflow would abort the whole test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn only(err: ConfigError) -> Diagnostic {
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    err.diagnostics.into_iter().next().unwrap()
}

fn at(d: &Diagnostic, file: &Path, line: usize, column: usize, needles: &[&str]) {
    assert_eq!(d.file, file, "{d}");
    assert_eq!((d.line, d.column), (Some(line), Some(column)), "{d}");
    for n in needles {
        assert!(d.message.contains(n), "lacks `{n}`: {d}");
    }
}

#[test]
fn yaml_nested_past_the_limit_is_refused_where_it_crosses() {
    let block = format!("apps:\n{}x\n", "- ".repeat(MAX_YAML_DEPTH));
    let d = only(load_str("deep.yaml", &block, None).unwrap_err());
    let needles = ["more than 128 levels deep", "flatten"];
    at(
        &d,
        Path::new("deep.yaml"),
        2,
        2 * (MAX_YAML_DEPTH - 1) + 1,
        &needles,
    );
    let flow = format!(
        "apps: {}{}\n",
        "[".repeat(MAX_YAML_DEPTH),
        "]".repeat(MAX_YAML_DEPTH)
    );
    let d = only(load_str("deep.yaml", &flow, None).unwrap_err());
    at(&d, Path::new("deep.yaml"), 1, 6 + MAX_YAML_DEPTH, &needles);
}

#[test]
fn a_million_levels_of_yaml_are_refused_on_a_small_stack() {
    // Two bytes a level: the YAML loader and serde would recurse a million times.
    let d = on_small_stack(|| {
        let text = format!("apps:\n{}x\n", "- ".repeat(1_000_000));
        only(load_str("huge.yaml", &text, None).unwrap_err())
    });
    assert!(d.message.contains("more than 128 levels deep"), "{d}");
    assert_eq!(d.line, Some(2), "{d}");
}

#[test]
fn yaml_at_the_limit_loads_on_a_small_stack() {
    // 60 nested `all`s reach 128 levels of YAML: serde walks all of them, on the loader's
    // own thread whatever the caller's stack.
    let mut cond = String::from("{ network: { in: [10.0.0.0/8] } }");
    for _ in 0..60 {
        cond = format!("{{ all: [ {cond} ] }}");
    }
    let text = format!("policies:\n  - name: p\n    priority: 1\n    outcome: allow\n    conditions:\n      - {cond}\n");
    let cfg = on_small_stack(move || load_str("edge.yaml", &text, None).map(|c| c.policy_set));
    assert_eq!(cfg.unwrap_or_else(|e| panic!("{e}")).len(), 1);
}

#[test]
fn policy_conditions_nested_past_the_limit_are_refused_at_the_condition() {
    let head =
        "policies:\n  - name: p\n    priority: 1\n    outcome: allow\n    conditions:\n      - ";
    let chain = move |n: usize| {
        format!(
            "{head}{}{{ network: {{ in: [10.0.0.0/8] }} }}{}\n",
            "{ not: ".repeat(n),
            " }".repeat(n)
        )
    };
    on_small_stack(move || load_str("c.yaml", &chain(64), None).map(|_| ()))
        .unwrap_or_else(|e| panic!("{e}"));
    let d =
        only(on_small_stack(move || load_str("c.yaml", &chain(65), None).map(|_| ())).unwrap_err());
    at(
        &d,
        Path::new("c.yaml"),
        6,
        9 + 64 * 7,
        &["more than 64 levels deep", "split the policy"],
    );
}

#[test]
fn compliance_expressions_nested_past_the_limit_are_refused_at_the_rule() {
    let rule = |n: usize| {
        format!(
            "devices:\n  compliance:\n    policies:\n      - name: mac\n        rules:\n          - id: deep\n            non_compliant_if: \"{}os_version < 15{}\"\n",
            "(".repeat(n),
            ")".repeat(n)
        )
    };
    load_str("d.yaml", &rule(64), None).unwrap_or_else(|e| panic!("{e}"));
    let d = only(load_str("d.yaml", &rule(65), None).unwrap_err());
    at(
        &d,
        Path::new("d.yaml"),
        7,
        31,
        &[
            "compliance policy `mac`, rule `deep`",
            "more than 64 deep",
            "at column 65",
            "split it into several rules",
        ],
    );
    assert!(
        d.message.len() < 400,
        "a short excerpt, not the whole rule: {d}"
    );
}

/// A main file that includes `target` (as written) on line 2, column 13.
fn including(dir: &Path, target: &str) -> PathBuf {
    let main = dir.join("stepgate.yaml");
    std::fs::write(&main, format!("apps: []\nincludes: [ {target} ]\n")).unwrap();
    main
}

fn refused_include(main: &Path, needles: &[&str]) {
    let main = main.to_path_buf();
    let d = only(on_small_stack(move || load(&main).map(|_| ())).unwrap_err());
    let main = d.file.clone();
    at(&d, &main, 2, 13, needles);
    assert!(d.message.starts_with("cannot read `"), "{d}");
}

#[test]
fn includes_refuse_devices_fifos_and_non_regular_entries() {
    let dir = tempfile::tempdir().unwrap();
    let main = including(dir.path(), "/dev/zero");
    refused_include(
        &main,
        &[
            "/dev/zero",
            "a character device, not a regular file",
            "`includes` takes YAML files",
        ],
    );

    // A FIFO nobody writes to: a blocking open would hang the loader for ever.
    let fifo = dir.path().join("pipe.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let main = including(dir.path(), "pipe.yaml");
    refused_include(
        &main,
        &["pipe.yaml", "a FIFO (named pipe), not a regular file"],
    );

    // A symlink is judged by what it points to.
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    let main = including(dir.path(), "zero.yaml");
    refused_include(&main, &["zero.yaml", "a character device"]);
}

#[test]
fn includes_refuse_files_past_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Sparse: 17 MiB of NULs on disk in a few blocks.
    let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(17 << 20).unwrap();
    let main = including(dir.path(), "big.yaml");
    refused_include(
        &main,
        &[
            "big.yaml",
            &format!("{} bytes", 17 << 20),
            "16 MiB",
            "split it",
        ],
    );
    // At the cap exactly, it is read, and refused for what it holds.
    big.set_len(MAX_FILE_BYTES).unwrap();
    let d = only(load(&main).unwrap_err());
    assert!(d.file.ends_with("big.yaml"), "{d}");
    assert!(d.message.contains("NUL"), "{d}");
}

#[test]
fn all_files_together_stop_at_the_total_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Five sparse files of 15 MiB, refused for their NULs (cheaply) once read: the fifth
    // takes the total past 64 MiB and is refused for that instead.
    for i in 0..5 {
        let f = std::fs::File::create(dir.path().join(format!("p{i}.yaml"))).unwrap();
        f.set_len(15 << 20).unwrap();
    }
    let main = dir.path().join("stepgate.yaml");
    std::fs::write(
        &main,
        "includes: [p0.yaml, p1.yaml, p2.yaml, p3.yaml, p4.yaml]
",
    )
    .unwrap();
    let err = load(&main).unwrap_err();
    let total: Vec<_> = err
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("64 MiB"))
        .collect();
    assert_eq!(total.len(), 1, "{err}");
    at(
        total[0],
        &main,
        1,
        48,
        &["p4.yaml", "together hold more than the 64 MiB allowed"],
    );
}

#[test]
fn a_directory_include_refuses_yaml_entries_that_are_not_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("conf.d");
    std::fs::create_dir_all(d.join("nested.yaml")).unwrap();
    std::fs::write(d.join("10-apps.yaml"), "apps: [ { id: wiki } ]\n").unwrap();
    std::fs::write(d.join("README"), "not loaded\n").unwrap();
    let main = including(dir.path(), "conf.d");
    // A directory of regular files loads; `nested.yaml/` is a directory where a file is
    // expected.
    let err = load(&main).unwrap_err();
    let d0 = only(err);
    at(
        &d0,
        &main,
        2,
        13,
        &["nested.yaml", "a directory, not a regular file"],
    );
    std::fs::remove_dir(d.join("nested.yaml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.yaml")).unwrap();
    let d1 = only(load(&main).unwrap_err());
    at(&d1, &main, 2, 13, &["zero.yaml", "a character device"]);
    std::fs::remove_file(d.join("zero.yaml")).unwrap();
    assert_eq!(load(&main).unwrap_or_else(|e| panic!("{e}")).apps.len(), 1);
}

#[test]
fn nul_bytes_are_refused_not_taken_for_the_end_of_the_file() {
    // The YAML scanner stops at a NUL: without this check the policy after it would be
    // silently dropped.
    let text = "policies:\n  - { name: a, priority: 1, outcome: allow }\n\0  - { name: b, priority: 2, outcome: deny }\n";
    let d = only(load_str("nul.yaml", text, None).unwrap_err());
    at(&d, Path::new("nul.yaml"), 3, 1, &["NUL", "not YAML text"]);
}

#[test]
fn the_main_file_must_be_a_regular_file_too() {
    let d = only(load(Path::new("/dev/zero")).unwrap_err());
    assert_eq!(d.file, Path::new("/dev/zero"));
    assert_eq!(d.line, None);
    assert!(
        d.message.contains("a character device, not a regular file"),
        "{d}"
    );
    assert!(
        d.message.contains("the configuration must be a YAML file"),
        "{d}"
    );
}

#[test]
fn include_chains_stop_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // f0 includes f1 includes … f{n}.
    let chain = |n: usize| {
        for i in 0..n {
            std::fs::write(
                dir.path().join(format!("f{i}.yaml")),
                format!("includes: [ f{}.yaml ]\n", i + 1),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(format!("f{n}.yaml")), "apps: []\n").unwrap();
        dir.path().join("f0.yaml")
    };
    let main = chain(MAX_INCLUDE_DEPTH);
    let cfg = on_small_stack(move || load(&main).map(|c| c.files.len()));
    assert_eq!(cfg.unwrap_or_else(|e| panic!("{e}")), MAX_INCLUDE_DEPTH + 1);
    let main = chain(MAX_INCLUDE_DEPTH + 1);
    let d = only(on_small_stack(move || load(&main).map(|_| ())).unwrap_err());
    let last = dir.path().join(format!("f{MAX_INCLUDE_DEPTH}.yaml"));
    at(
        &d,
        &last,
        1,
        13,
        &[
            "more than 64 files deep",
            "include the files from one place",
        ],
    );
}
