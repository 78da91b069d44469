//! HTML escaping: the one way a value from a function (its name, a namespace, anything a
//! person typed) is written into a page the gateway renders. The pages' script never builds
//! markup from data either: it sets `textContent`.

use std::fmt::Write as _;

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe both as
/// element content and inside a double- or single-quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than whitespace have no business in a page.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_becomes_text() {
        assert_eq!(
            escape("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn attribute_quotes_and_ampersands_are_escaped() {
        assert_eq!(escape(r#"a" onload="x&y"#), "a&quot; onload=&quot;x&amp;y");
    }

    #[test]
    fn plain_text_and_unicode_are_unchanged() {
        assert_eq!(
            escape("echo.openfaas-fn ünïcode"),
            "echo.openfaas-fn ünïcode"
        );
        assert_eq!(escape(""), "");
    }

    #[test]
    fn control_characters_become_references() {
        assert_eq!(escape("a\u{0}b\nc"), "a&#0;b\nc");
    }
}
