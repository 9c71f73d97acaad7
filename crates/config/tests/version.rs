//! `Config::version`: the same files give the same version wherever they are loaded, and any
//! change to their text gives another (nodes compare it in `/readyz?details`).

use stepgate_config::{load, load_str};

const BASE: &str = "server: { listen: 127.0.0.1:8080 }\npolicies: []\n";

#[test]
fn the_same_text_gives_the_same_version_and_any_edit_another() {
    let a = load_str("a.yaml", BASE, None).unwrap().version;
    let b = load_str("elsewhere/b.yaml", BASE, None).unwrap().version;
    assert_eq!(a, b, "the path does not count, only the text");
    assert!(
        a.starts_with("sha256:") && a.len() == "sha256:".len() + 16,
        "{a}"
    );
    let edited = load_str("a.yaml", &BASE.replace("8080", "8081"), None)
        .unwrap()
        .version;
    assert_ne!(a, edited);
}

#[test]
fn included_files_count_in_load_order() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "main.yaml",
        "includes: [apps.yaml]\nserver: { listen: 127.0.0.1:8080 }\npolicies: []\n",
    );
    write("apps.yaml", "networks: { office: [10.0.0.0/8] }\n");
    let v1 = load(&dir.path().join("main.yaml")).unwrap().version;
    write("apps.yaml", "networks: { office: [10.0.0.0/16] }\n");
    let v2 = load(&dir.path().join("main.yaml")).unwrap().version;
    assert_ne!(v1, v2, "an edit in an included file changes the version");
    write("apps.yaml", "networks: { office: [10.0.0.0/8] }\n");
    assert_eq!(load(&dir.path().join("main.yaml")).unwrap().version, v1);
}
