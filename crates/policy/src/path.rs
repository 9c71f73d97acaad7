//! Path patterns for routes: `/licences`, `/licences/*/revoke`, `/admin/**`.

use std::cmp::Ordering;
use std::fmt;

/// A compiled path pattern. `*` matches exactly one segment, a final `**` matches zero or
/// more segments; everything else is literal. Trailing slashes are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
    rest: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Any,
}

impl PathPattern {
    /// Parses a pattern; it must start with `/` and `**` may only be the last segment.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!(
                "expected a path pattern starting with `/`, got `{s}`"
            ));
        }
        let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, p) in parts.iter().enumerate() {
            match *p {
                "**" if i + 1 == parts.len() => rest = true,
                "**" => return Err(format!("`**` may only end a path pattern, in `{s}`")),
                "*" => segments.push(Segment::Any),
                lit if lit.contains('*') => {
                    return Err(format!(
                        "`*` must be a whole segment (`/a/*/b`), got `{lit}` in `{s}`"
                    ))
                }
                lit => segments.push(Segment::Literal(lit.into())),
            }
        }
        Ok(PathPattern {
            source: s.into(),
            segments: segments.into(),
            rest,
        })
    }

    /// Whether a request path matches.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_case(path, false)
    }

    /// Whether a request path matches, literal segments compared without regard to ASCII
    /// case when `ignore_case` (for an upstream that serves `/Admin` as `/admin`).
    pub fn matches_case(&self, path: &str, ignore_case: bool) -> bool {
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        for seg in self.segments.iter() {
            match (seg, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(l), Some(p)) => {
                    let same = if ignore_case {
                        l.eq_ignore_ascii_case(p)
                    } else {
                        **l == *p
                    };
                    if !same {
                        return false;
                    }
                }
            }
        }
        self.rest || parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Orders patterns most specific first: more literal segments, then more segments, then
    /// exact before `**`.
    pub fn specificity_cmp(&self, other: &Self) -> Ordering {
        let lit = |p: &PathPattern| {
            p.segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count()
        };
        lit(other)
            .cmp(&lit(self))
            .then(other.segments.len().cmp(&self.segments.len()))
            .then(self.rest.cmp(&other.rest))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(p("/licences").matches("/licences"));
        assert!(p("/licences").matches("/licences/"));
        assert!(!p("/licences").matches("/licences/1"));
        assert!(p("/licences/*/revoke").matches("/licences/42/revoke"));
        assert!(!p("/licences/*/revoke").matches("/licences/revoke"));
        assert!(p("/admin/**").matches("/admin"));
        assert!(p("/admin/**").matches("/admin/users/7"));
        assert!(!p("/admin/**").matches("/administrator"));
        assert!(p("/**").matches("/"));
        assert!(p("/").matches("/"));
        assert!(!p("/").matches("/x"));
        assert!(!p("/admin/**").matches("/ADMIN/users"));
        assert!(p("/admin/**").matches_case("/ADMIN/users", true));
        assert!(p("/Licences/*/revoke").matches_case("/licences/7/REVOKE", true));
        assert!(!p("/admin/**").matches_case("/administrator", true));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(PathPattern::parse("licences").is_err());
        assert!(PathPattern::parse("/a/**/b").is_err());
        assert!(PathPattern::parse("/a/b*").is_err());
    }

    #[test]
    fn most_specific_first() {
        let mut v = [
            p("/**"),
            p("/licences/**"),
            p("/licences/*/revoke"),
            p("/licences"),
        ];
        v.sort_by(|a, b| a.specificity_cmp(b));
        let order: Vec<_> = v.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            order,
            ["/licences/*/revoke", "/licences", "/licences/**", "/**"]
        );
    }
}
