//! JSON and binary SOPS files: a strict JSON scanner (RFC 8259, depth
//! bounded by [`MAX_DEPTH`]) that records the byte range of every string
//! under the top-level `"sops"` object. A binary SOPS file is a JSON object
//! whose only members are `"data"` and `"sops"`.

use super::{Format, Leaf, SopsError, MAX_DEPTH};

/// The metadata leaves of a JSON SOPS file; `Ok(None)` when the top-level
/// object has no `"sops"` object.
pub(super) fn leaves(bytes: &[u8]) -> Result<Option<(Format, Vec<Leaf>)>, SopsError> {
    let mut s = Scanner {
        b: bytes,
        at: 0,
        leaves: Vec::new(),
        top_keys: Vec::new(),
        format: Format::Json,
    };
    s.ws();
    let mut r = s.value(0, None);
    s.ws();
    if r.is_ok() && s.at != bytes.len() {
        r = Err(s.err("trailing bytes after the JSON value"));
    }
    if let Err(e) = r {
        // Not JSON, or JSON that never reached a top-level "sops": not a
        // SOPS file (a config file that mentions sops), not a failure.
        return if s.top_keys.iter().any(|k| k == "sops") {
            Err(e)
        } else {
            Ok(None)
        };
    }
    if !s.top_keys.iter().any(|k| k == "sops") {
        return Ok(None);
    }
    let binary = s.top_keys.len() == 2 && s.top_keys.iter().any(|k| k == "data");
    let format = if binary { Format::Binary } else { Format::Json };
    Ok(Some((format, s.leaves)))
}

struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
    leaves: Vec<Leaf>,
    top_keys: Vec<String>,
    format: Format,
}

impl Scanner<'_> {
    fn err(&self, why: &'static str) -> SopsError {
        SopsError::malformed(self.format, self.at, why)
    }

    fn ws(&mut self) {
        while self.at < self.b.len() && matches!(self.b[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// One value; `path` is its flattened path below `sops` when it is
    /// inside the metadata block.
    fn value(&mut self, depth: usize, path: Option<&str>) -> Result<(), SopsError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.b.get(self.at) {
            Some(b'{') => self.object(depth, path),
            Some(b'[') => self.array(depth, path),
            Some(b'"') => {
                let (value, span) = self.string()?;
                if let Some(p) = path {
                    self.leaves.push(Leaf {
                        path: p.to_string(),
                        value,
                        span,
                    });
                }
                Ok(())
            }
            Some(_) => self.literal(),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn object(&mut self, depth: usize, path: Option<&str>) -> Result<(), SopsError> {
        self.at += 1;
        self.ws();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.at) != Some(&b'"') {
                return Err(self.err("expected a member name"));
            }
            let (key, _) = self.string()?;
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let child = match path {
                Some("") => Some(key.clone()),
                Some(p) => Some(format!("{p}__map_{key}")),
                None if depth == 0 && key == "sops" => Some(String::new()),
                None => None,
            };
            if depth == 0 {
                self.top_keys.push(key);
            }
            self.value(depth + 1, child.as_deref())?;
            self.ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(());
            }
            return Err(self.err("expected ',' or '}'"));
        }
    }

    fn array(&mut self, depth: usize, path: Option<&str>) -> Result<(), SopsError> {
        self.at += 1;
        self.ws();
        if self.eat(b']') {
            return Ok(());
        }
        let mut i = 0usize;
        loop {
            self.ws();
            let child = path.map(|p| format!("{p}__list_{i}"));
            self.value(depth + 1, child.as_deref())?;
            i += 1;
            self.ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Ok(());
            }
            return Err(self.err("expected ',' or ']'"));
        }
    }

    /// `true`, `false`, `null` or a number: skipped over, checked loosely
    /// (only strings of the metadata block are read).
    fn literal(&mut self) -> Result<(), SopsError> {
        let start = self.at;
        while self.at < self.b.len()
            && (self.b[self.at].is_ascii_alphanumeric() || b"+-.".contains(&self.b[self.at]))
        {
            self.at += 1;
        }
        let word = &self.b[start..self.at];
        let number = word
            .first()
            .is_some_and(|c| c.is_ascii_digit() || *c == b'-');
        if number || matches!(word, b"true" | b"false" | b"null") {
            Ok(())
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    /// A string: its unescaped value and the span of its bytes inside the
    /// quotes.
    fn string(&mut self) -> Result<(String, std::ops::Range<usize>), SopsError> {
        self.at += 1;
        let start = self.at;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.at) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.at + 1) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.at += 2;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => self.unicode(&mut out)?,
                        _ => return Err(self.err("bad escape in string")),
                    }
                }
                c if c < 0x20 => return Err(self.err("control character in string")),
                c => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        let span = start..self.at;
        self.at += 1;
        let value = String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))?;
        Ok((value, span))
    }

    /// `\uXXXX` (the `\u` already taken), surrogate pairs joined; a lone
    /// surrogate becomes U+FFFD.
    fn unicode(&mut self, out: &mut Vec<u8>) -> Result<(), SopsError> {
        let hex = |s: &mut Self| -> Result<u32, SopsError> {
            let h =
                s.b.get(s.at..s.at + 4)
                    .ok_or_else(|| s.err("short \\u escape"))?;
            let v = std::str::from_utf8(h)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| s.err("bad \\u escape"))?;
            s.at += 4;
            Ok(v)
        };
        let mut code = hex(self)?;
        if (0xD800..0xDC00).contains(&code) && self.b.get(self.at..self.at + 2) == Some(b"\\u") {
            self.at += 2;
            let low = hex(self)?;
            code = if (0xDC00..0xE000).contains(&low) {
                0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            } else {
                0xFFFD
            };
        }
        let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }
}
