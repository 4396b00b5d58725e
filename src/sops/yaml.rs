//! YAML SOPS files: a scanner of the top-level `sops:` block in block
//! style, as SOPS (go-yaml v3) writes it and as people edit it: block
//! mappings and sequences by indentation, plain, single- and double-quoted
//! one-line scalars, comments, CRLF line ends. Block scalars (`|`, `>`, the
//! `enc` of age and PGP entries) and one-line flow collections (`[]`) are
//! stepped over; anchors, aliases, tags, multi-line scalars and
//! multi-document files are refused ([`SopsError::Malformed`]), so the
//! scanner never guesses. The rest of the file is not parsed at all.
//!
//! Each line is looked at once, nesting is bounded by [`MAX_DEPTH`].

use super::{lines, utf8, Format, Leaf, SopsError, MAX_DEPTH};

/// The metadata leaves of a YAML SOPS file; `Ok(None)` when there is no
/// top-level `sops:` key.
pub(super) fn leaves(bytes: &[u8]) -> Result<Option<(Format, Vec<Leaf>)>, SopsError> {
    let all: Vec<(usize, usize)> = lines(bytes).collect();
    let tops: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, l)| is_sops_key(&bytes[l.0..l.1]))
        .map(|(i, _)| i)
        .collect();
    let Some(&top) = tops.first() else {
        return Ok(None);
    };
    if tops.len() > 1 {
        return Err(SopsError::malformed(
            Format::Yaml,
            all[tops[1]].0,
            "more than one top-level sops key (multi-document files are not re-wrapped)",
        ));
    }
    let end = all[top + 1..]
        .iter()
        .position(|&(s, e)| {
            let l = &bytes[s..e];
            !l.is_empty() && l[0] != b' ' && l[0] != b'#'
        })
        .map_or(all.len(), |p| top + 1 + p);
    let mut block = Block {
        b: bytes,
        lines: &all[top + 1..end],
        i: 0,
        leaves: Vec::new(),
    };
    block.node(None, "", 0)?;
    block.skip_blank();
    if block.i < block.lines.len() {
        return Err(block.err("unexpected indentation"));
    }
    Ok(Some((Format::Yaml, block.leaves)))
}

/// `sops:` at column 0 (a comment may follow).
fn is_sops_key(line: &[u8]) -> bool {
    line.strip_prefix(b"sops:").is_some_and(|rest| {
        let rest = rest.trim_ascii_start();
        rest.is_empty() || rest[0] == b'#'
    })
}

struct Block<'a> {
    b: &'a [u8],
    lines: &'a [(usize, usize)],
    i: usize,
    leaves: Vec<Leaf>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}__map_{key}")
    }
}

impl Block<'_> {
    fn err(&self, why: &'static str) -> SopsError {
        let at = self.lines.get(self.i).map_or(self.b.len(), |l| l.0);
        SopsError::malformed(Format::Yaml, at, why)
    }

    fn line(&self) -> &[u8] {
        let (s, e) = self.lines[self.i];
        &self.b[s..e]
    }

    fn indent(&self) -> usize {
        self.line().iter().take_while(|&&c| c == b' ').count()
    }

    fn skip_blank(&mut self) {
        while self.i < self.lines.len() {
            let t = self.line().trim_ascii();
            if !t.is_empty() && t[0] != b'#' {
                break;
            }
            self.i += 1;
        }
    }

    /// A value on the following lines, indented more than `above`.
    fn node(&mut self, above: Option<usize>, path: &str, depth: usize) -> Result<(), SopsError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.skip_blank();
        if self.i >= self.lines.len() {
            return Ok(());
        }
        let n = self.indent();
        if above.is_some_and(|a| n <= a) {
            return Ok(());
        }
        if self.line().get(n) == Some(&b'\t') {
            return Err(self.err("a tab in the indentation"));
        }
        if is_item(&self.line()[n..]) {
            self.seq(n, path, depth)
        } else {
            self.map(n, false, path, depth)
        }
    }

    fn seq(&mut self, n: usize, path: &str, depth: usize) -> Result<(), SopsError> {
        let mut index = 0;
        loop {
            self.skip_blank();
            if self.i >= self.lines.len() || self.indent() != n || !is_item(&self.line()[n..]) {
                return Ok(());
            }
            let item = format!("{path}__list_{index}");
            index += 1;
            let rest = &self.line()[n + 1..];
            let col = n + 1 + rest.iter().take_while(|&&c| c == b' ').count();
            let rest = &self.line()[col..];
            if rest.is_empty() || rest[0] == b'#' {
                self.i += 1;
                self.node(Some(n), &item, depth + 1)?;
            } else if is_item(rest) {
                return Err(self.err("a sequence inside a sequence item on one line"));
            } else if key_end(rest).is_some() {
                self.map(col, true, &item, depth + 1)?;
            } else {
                self.scalar_value(n, col, item)?;
            }
        }
    }

    /// A block mapping whose keys are at column `col`; with `inline`, its
    /// first key is on the current line after a `- `.
    fn map(
        &mut self,
        col: usize,
        mut inline: bool,
        path: &str,
        depth: usize,
    ) -> Result<(), SopsError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        loop {
            if !inline {
                self.skip_blank();
                if self.i >= self.lines.len() || self.indent() < col {
                    return Ok(());
                }
                if self.indent() > col {
                    return Err(self.err("unexpected indentation"));
                }
                if is_item(&self.line()[col..]) {
                    return Err(self.err("a sequence item among mapping keys"));
                }
            }
            inline = false;
            let rest = &self.line()[col..];
            let Some((key_raw, after)) = key_end(rest) else {
                return Err(self.err("expected a mapping key"));
            };
            let key = self.key(&rest[..key_raw])?;
            let item = child(path, &key);
            let from = col + after;
            let from = from
                + self.line()[from..]
                    .iter()
                    .take_while(|&&c| c == b' ')
                    .count();
            let value = &self.line()[from..];
            let first = value.first().copied();
            match first {
                None | Some(b'#') => {
                    self.i += 1;
                    self.skip_blank();
                    let same_seq = self.i < self.lines.len()
                        && self.indent() == col
                        && is_item(&self.line()[col..]);
                    if same_seq {
                        self.seq(col, &item, depth + 1)?;
                    } else {
                        self.node(Some(col), &item, depth + 1)?;
                    }
                }
                Some(b'|' | b'>') => {
                    self.i += 1;
                    while self.i < self.lines.len() {
                        let t = self.line().trim_ascii();
                        if !t.is_empty() && self.indent() <= col {
                            break;
                        }
                        self.i += 1;
                    }
                }
                Some(b'[' | b'{') => {
                    let t = value.trim_ascii_end();
                    let close = if value[0] == b'[' { b']' } else { b'}' };
                    if t.last() != Some(&close) {
                        return Err(self.err("a flow collection over several lines"));
                    }
                    self.i += 1;
                    self.no_continuation(col)?;
                }
                Some(b'&' | b'*' | b'!') => {
                    return Err(self.err("anchors, aliases and tags are not read"));
                }
                Some(_) => self.scalar_value(col, from, item)?,
            }
        }
    }

    /// A key's text (plain or quoted).
    fn key(&self, raw: &[u8]) -> Result<String, SopsError> {
        let raw = raw.trim_ascii_end();
        let at = self.lines[self.i].0;
        match raw.first() {
            Some(b'"' | b'\'') => {
                let (value, span) = quoted(raw, 0).ok_or_else(|| self.err("bad quoted key"))?;
                if span.end + 1 != raw.len() {
                    return Err(self.err("bad quoted key"));
                }
                Ok(value)
            }
            _ => utf8(Format::Yaml, raw, at),
        }
    }

    /// A one-line scalar starting at column `from` of the current line,
    /// the value of something at column `owner`.
    fn scalar_value(&mut self, owner: usize, from: usize, path: String) -> Result<(), SopsError> {
        let (s, _) = self.lines[self.i];
        let line = self.line();
        let (value, span) = match line[from] {
            b'"' | b'\'' => {
                let (value, span) =
                    quoted(line, from).ok_or_else(|| self.err("bad quoted scalar"))?;
                let tail = line[span.end + 1..].trim_ascii();
                if !tail.is_empty() && tail[0] != b'#' {
                    return Err(self.err("text after a quoted scalar"));
                }
                (value, span)
            }
            _ => {
                let mut end = line.len();
                if let Some(p) = line[from..].windows(2).position(|w| w == b" #") {
                    end = from + p;
                }
                while end > from && line[end - 1] == b' ' {
                    end -= 1;
                }
                (utf8(Format::Yaml, &line[from..end], s + from)?, from..end)
            }
        };
        self.leaves.push(Leaf {
            path,
            value,
            span: s + span.start..s + span.end,
        });
        self.i += 1;
        self.no_continuation(owner)
    }

    /// The next line must not continue the scalar just read (SOPS writes
    /// every metadata scalar on one line).
    fn no_continuation(&mut self, owner: usize) -> Result<(), SopsError> {
        self.skip_blank();
        if self.i < self.lines.len() && self.indent() > owner {
            return Err(self.err("a multi-line scalar"));
        }
        Ok(())
    }
}

/// `- x` or `-` alone.
fn is_item(rest: &[u8]) -> bool {
    rest == b"-" || rest.starts_with(b"- ")
}

/// Where a mapping key ends in `rest`: (length of the key text, offset
/// after the `:`), if `rest` starts with `key:` followed by a space or the
/// end of the line.
fn key_end(rest: &[u8]) -> Option<(usize, usize)> {
    let key_len = match rest.first()? {
        b'"' | b'\'' => quoted(rest, 0)?.1.end + 1,
        b'#' => return None,
        _ => 0,
    };
    let mut i = key_len;
    while i < rest.len() {
        if rest[i] == b':' && (i + 1 == rest.len() || rest[i + 1] == b' ') {
            return Some((i, i + 1));
        }
        if key_len > 0 && rest[i] != b' ' {
            return None;
        }
        if rest[i] == b' ' && rest.get(i + 1) == Some(&b'#') {
            return None;
        }
        i += 1;
    }
    None
}

/// A quoted scalar starting at `at` (the quote): its value and the span
/// of its text inside the quotes.
fn quoted(line: &[u8], at: usize) -> Option<(String, std::ops::Range<usize>)> {
    let q = line[at];
    let mut out = Vec::new();
    let mut i = at + 1;
    loop {
        let c = *line.get(i)?;
        if q == b'\'' && c == b'\'' {
            if line.get(i + 1) == Some(&b'\'') {
                out.push(b'\'');
                i += 2;
                continue;
            }
            break;
        }
        if q == b'"' && c == b'"' {
            break;
        }
        if q == b'"' && c == b'\\' {
            let e = *line.get(i + 1)?;
            let unescaped = match e {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'0' => 0,
                b'"' | b'\\' | b'/' => e,
                // Other escapes are not needed for metadata values:
                // kept as written.
                _ => {
                    out.push(b'\\');
                    e
                }
            };
            out.push(unescaped);
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Some((String::from_utf8(out).ok()?, at + 1..i))
}
