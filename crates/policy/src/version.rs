//! Version-aware comparison for posture values (`14.2.1` < `15`, `15.0` > `9.3`).

use std::cmp::Ordering;

/// Compares two version strings component by component: numeric parts as numbers,
/// other parts as text, missing parts as zero (`15` == `15.0`). Separators are `.`, `-`,
/// `_` and `+`; a leading `v` is ignored.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut ia = components(a);
    let mut ib = components(b);
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => {
                let x = x.unwrap_or(Component::Number(0));
                let y = y.unwrap_or(Component::Number(0));
                match x.cmp(&y) {
                    Ordering::Equal => continue,
                    other => return other,
                }
            }
        }
    }
}

/// Whether a value reads as a version or number (starts with a digit, or `v` and a digit).
pub fn looks_like_version(s: &str) -> bool {
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Component<'a> {
    // Numbers sort before text so that `1.0` > `1.rc1` is false and `1.0.1` > `1.0` holds.
    Number(u64),
    Text(&'a str),
}

fn components(s: &str) -> impl Iterator<Item = Component<'_>> {
    let s = s.trim();
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    s.split(['.', '-', '_', '+'])
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u64>() {
            Ok(n) => Component::Number(n),
            Err(_) => Component::Text(p),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_examples() {
        assert_eq!(compare_versions("15.0", "9.3"), Ordering::Greater);
        assert_eq!(compare_versions("14.2.1", "15"), Ordering::Less);
        assert_eq!(compare_versions("15", "15.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("14.10", "14.9"), Ordering::Greater);
        assert_eq!(compare_versions("v2.1", "2.1"), Ordering::Equal);
        assert_eq!(compare_versions("10.0.19045", "10.0.22631"), Ordering::Less);
    }

    fn version() -> impl Strategy<Value = String> {
        proptest::collection::vec(0u64..30, 1..5)
            .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
    }

    proptest! {
        #[test]
        fn ordering_is_antisymmetric(a in version(), b in version()) {
            prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        }

        #[test]
        fn ordering_is_transitive(a in version(), b in version(), c in version()) {
            if compare_versions(&a, &b) != Ordering::Greater && compare_versions(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare_versions(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn agrees_with_numeric_tuples(a in proptest::collection::vec(0u64..1000, 3), b in proptest::collection::vec(0u64..1000, 3)) {
            let sa = format!("{}.{}.{}", a[0], a[1], a[2]);
            let sb = format!("{}.{}.{}", b[0], b[1], b[2]);
            prop_assert_eq!(compare_versions(&sa, &sb), a.cmp(&b));
        }

        #[test]
        fn trailing_zeros_do_not_matter(a in version()) {
            let padded = format!("{a}.0.0");
            prop_assert_eq!(compare_versions(&a, &padded), Ordering::Equal);
        }
    }
}
