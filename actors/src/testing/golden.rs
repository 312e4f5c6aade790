//! Golden bytes kept in documentation: a format's example, written out in hex in a Markdown
//! document, that the format's tests compare their encoder with — so the document and the code
//! cannot drift apart.

/// The bytes of the first fenced code block after `marker` in `doc` (a Markdown document's
/// text): every whitespace-separated hex byte of each line before a `|` (what follows a `|`
/// is commentary). The block's info-string line is skipped.
///
/// # Panics
///
/// If `marker` is not in `doc`, no code block follows it, or a word is not a hex byte — a
/// test comparing with the document then fails saying why.
pub fn golden_bytes(doc: &str, marker: &str) -> Vec<u8> {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} is not in the document"));
    let block = doc[start..]
        .split("```")
        .nth(1)
        .unwrap_or_else(|| panic!("no code block after {marker}"));
    block
        .lines()
        .skip(1) // the info string
        .flat_map(|line| line.split('|').next().unwrap_or("").split_whitespace())
        .map(|hex| u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad hex byte `{hex}`")))
        .collect()
}
