//! Configurations that must never take down stepgate (issue 16, item 8): each is written
//! into a directory as `stepgate.yaml` plus whatever it includes, with where and how its
//! refusal reads. Shared by `stepgate check` (tests/cli.rs) and the live SIGHUP reload
//! test (tests/reload_hostile.rs).

use std::path::{Path, PathBuf};

/// One hostile configuration.
pub struct Hostile {
    /// What it is, for failure messages.
    pub name: &'static str,
    /// The file the refusal names, relative to the directory.
    pub file: &'static str,
    /// Line and column of the refusal.
    pub at: (usize, usize),
    /// Words the refusal must contain.
    pub says: &'static str,
    write: fn(&Path) -> String,
}

impl Hostile {
    /// Writes the case into `dir` and returns the main file.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let main = dir.join("stepgate.yaml");
        let text = (self.write)(dir);
        std::fs::write(&main, text).unwrap();
        main
    }

    /// The diagnostic line `stepgate` must print, up to the message's start.
    pub fn position(&self, dir: &Path) -> String {
        format!(
            "{}:{}:{}: ",
            dir.join(self.file).display(),
            self.at.0,
            self.at.1
        )
    }
}

fn nested_nots(n: usize) -> String {
    format!(
        "policies:\n  - name: p\n    priority: 1\n    outcome: allow\n    conditions:\n      - {}{{ network: {{ in: [10.0.0.0/8] }} }}{}\n",
        "{ not: ".repeat(n),
        " }".repeat(n)
    )
}

fn nested_rule(n: usize) -> String {
    format!(
        "devices:\n  compliance:\n    policies:\n      - name: mac\n        rules:\n          - id: deep\n            non_compliant_if: \"{}os_version < 15{}\"\n",
        "(".repeat(n),
        ")".repeat(n)
    )
}

/// Every hostile case.
pub const CASES: &[Hostile] = &[
    Hostile {
        name: "YAML nested 100,000 deep",
        file: "stepgate.yaml",
        at: (2, 255),
        says: "mappings and sequences nest more than 128 levels deep",
        write: |_| format!("apps:\n{}x\n", "- ".repeat(100_000)),
    },
    Hostile {
        name: "a compliance rule nested 1,000 deep",
        file: "stepgate.yaml",
        at: (7, 31),
        says: "rule `deep`: the expression nests parentheses and NOT more than 64 deep",
        write: |_| nested_rule(1_000),
    },
    Hostile {
        name: "policy conditions nested 65 deep",
        file: "stepgate.yaml",
        at: (6, 457),
        says: "conditions nest more than 64 levels deep",
        write: |_| nested_nots(65),
    },
    Hostile {
        name: "an include of /dev/zero",
        file: "stepgate.yaml",
        at: (1, 12),
        says: "cannot read `/dev/zero`: it is a character device, not a regular file",
        write: |_| "includes: [/dev/zero]\n".into(),
    },
    Hostile {
        name: "an include of a FIFO nobody writes to",
        file: "stepgate.yaml",
        at: (1, 12),
        says: "pipe.yaml`: it is a FIFO (named pipe), not a regular file",
        write: |dir| {
            let fifo = dir.join("pipe.yaml");
            if !fifo.exists() {
                let made = std::process::Command::new("mkfifo").arg(&fifo).status();
                assert!(made.unwrap().success(), "mkfifo");
            }
            "includes: [pipe.yaml]\n".into()
        },
    },
    Hostile {
        name: "an include of a 17 MiB file",
        file: "stepgate.yaml",
        at: (1, 12),
        says: "big.yaml`: it is 17825792 bytes, more than the 16 MiB",
        write: |dir| {
            // Sparse: no 17 MiB written to disk.
            let f = std::fs::File::create(dir.join("big.yaml")).unwrap();
            f.set_len(17 << 20).unwrap();
            "includes: [big.yaml]\n".into()
        },
    },
    Hostile {
        name: "an include of a directory holding a directory named *.yaml",
        file: "stepgate.yaml",
        at: (1, 12),
        says: "nested.yaml`: it is a directory, not a regular file",
        write: |dir| {
            std::fs::create_dir_all(dir.join("conf.d/nested.yaml")).unwrap();
            "includes: [conf.d]\n".into()
        },
    },
    Hostile {
        name: "includes chained 70 files deep",
        file: "f64.yaml",
        at: (1, 12),
        says: "includes chain more than 64 files deep",
        write: |dir| {
            for i in 1..70 {
                let next = format!("includes: [f{}.yaml]\n", i + 1);
                std::fs::write(dir.join(format!("f{i}.yaml")), next).unwrap();
            }
            std::fs::write(dir.join("f70.yaml"), "apps: []\n").unwrap();
            "includes: [f1.yaml]\n".into()
        },
    },
];
