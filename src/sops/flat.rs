//! The flat SOPS formats: dotenv (`sops_<path>=<value>` lines) and INI (a
//! `[sops]` section of `<path> = <value>` lines), where `<path>` is SOPS's
//! flattened metadata path (`kms__list_0__map_enc`). A value runs to the end
//! of its line (a `\r` before the `\n` is not part of it).

use super::{lines, utf8, Format, Leaf, SopsError};

/// The metadata leaves of a dotenv or INI SOPS file; `Ok(None)` when the
/// file is neither (no `sops_mac=` line, no `[sops]` section).
pub(super) fn leaves(bytes: &[u8]) -> Result<Option<(Format, Vec<Leaf>)>, SopsError> {
    let mut dotenv = Vec::new();
    let mut ini = Vec::new();
    let mut section: Option<bool> = None;
    let mut is_dotenv = false;
    for (start, end) in lines(bytes) {
        let line = &bytes[start..end];
        let trimmed = line.trim_ascii();
        if trimmed.first() == Some(&b'[') {
            section = Some(trimmed == b"[sops]");
            continue;
        }
        if section == Some(true) {
            if let Some(leaf) = ini_leaf(bytes, start, end)? {
                ini.push(leaf);
            }
        } else if section.is_none() && line.starts_with(b"sops_") {
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let path = utf8(Format::Dotenv, &line[5..eq], start)?;
            is_dotenv |= path == "mac";
            dotenv.push(Leaf {
                path,
                value: utf8(Format::Dotenv, &line[eq + 1..], start + eq + 1)?,
                span: start + eq + 1..end,
            });
        }
    }
    if !ini.is_empty() {
        return Ok(Some((Format::Ini, ini)));
    }
    if is_dotenv {
        return Ok(Some((Format::Dotenv, dotenv)));
    }
    Ok(None)
}

/// One `key = value` line of the `[sops]` section.
fn ini_leaf(bytes: &[u8], start: usize, end: usize) -> Result<Option<Leaf>, SopsError> {
    let line = &bytes[start..end];
    let t = line.trim_ascii_start();
    if t.is_empty() || t[0] == b';' || t[0] == b'#' {
        return Ok(None);
    }
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Err(SopsError::malformed(
            Format::Ini,
            start,
            "a line of the [sops] section has no '='",
        ));
    };
    let path = utf8(Format::Ini, line[..eq].trim_ascii(), start)?;
    let mut from = eq + 1;
    while from < line.len() && (line[from] == b' ' || line[from] == b'\t') {
        from += 1;
    }
    let mut to = line.len();
    while to > from && (line[to - 1] == b' ' || line[to - 1] == b'\t') {
        to -= 1;
    }
    Ok(Some(Leaf {
        path,
        value: utf8(Format::Ini, &line[from..to], start + from)?,
        span: start + from..start + to,
    }))
}
