//! The bound on how deeply a YAML document nests, checked on the parser's event stream
//! before the document is built.
//!
//! The YAML loader under marked-yaml, serde's derived deserialisers and the drop of the
//! node tree all recurse once per nested mapping or sequence. Block-style nesting has no
//! limit of its own (`- - - - …` costs two bytes a level), so a 16 MiB file could overflow
//! the stack of whichever thread reloads it. Reading events is iterative: nothing is
//! built and nothing recurses until the depth is known to be within [`MAX_YAML_DEPTH`].

use yaml_rust2::parser::{Event, Parser};

/// How deeply mappings and sequences may nest in one file. A policy condition costs one
/// or two levels (`not:` a mapping, `all:`/`any:` a mapping and a sequence), so this sits
/// above twice the condition limit's reach in `not:` form and leaves the condition
/// limit's own, more specific message reachable.
pub const MAX_YAML_DEPTH: usize = 128;

/// The first mapping or sequence nested deeper than [`MAX_YAML_DEPTH`], as (line, 1-based
/// column). Syntax errors end the scan: the real parse reports them.
pub(crate) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::MappingStart(..) | Event::SequenceStart(..), mark)) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Some((mark.line(), mark.col() + 1));
                }
            }
            Ok((Event::MappingEnd | Event::SequenceEnd, _)) => depth = depth.saturating_sub(1),
            // Only the first document is loaded.
            Ok((Event::DocumentEnd | Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_and_block_nesting_are_counted_alike() {
        let at_limit = format!(
            "a: {}{}\n",
            "[".repeat(MAX_YAML_DEPTH - 1),
            "]".repeat(MAX_YAML_DEPTH - 1)
        );
        assert_eq!(too_deep(&at_limit), None);
        let flow = format!(
            "a: {}{}\n",
            "[".repeat(MAX_YAML_DEPTH),
            "]".repeat(MAX_YAML_DEPTH)
        );
        assert_eq!(too_deep(&flow), Some((1, 3 + MAX_YAML_DEPTH)));
        let block = format!("a:\n{}x\n", "- ".repeat(MAX_YAML_DEPTH));
        assert_eq!(too_deep(&block), Some((2, 2 * (MAX_YAML_DEPTH - 1) + 1)));
        let mut mappings = String::new();
        for i in 0..=MAX_YAML_DEPTH {
            mappings.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        // The parser marks a block mapping at its first key's `:`.
        let key = format!("k{MAX_YAML_DEPTH}");
        assert_eq!(
            too_deep(&mappings),
            Some((MAX_YAML_DEPTH + 1, 2 * MAX_YAML_DEPTH + key.len() + 1))
        );
    }

    #[test]
    fn a_million_levels_are_scanned_without_recursion() {
        let text = format!("a:\n{}x\n", "- ".repeat(1_000_000));
        let found = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || too_deep(&text))
            .unwrap()
            .join()
            .unwrap();
        assert!(found.is_some());
    }

    #[test]
    fn syntax_errors_are_left_to_the_parser() {
        assert_eq!(too_deep("a: [\n"), None);
        assert_eq!(too_deep("a: 1\n---\nb: [[[[\n"), None);
    }
}
