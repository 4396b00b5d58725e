//! The passphrase prompt of a `passphrase:prompt` root: read from the
//! controlling terminal (`/dev/tty`) with echo off, and only when stdin is
//! a terminal, so that a script or a service never waits on a prompt no
//! one sees. Echo is switched off with `rustix`'s safe `termios` wrappers
//! (`TCSANOW`: what was typed ahead is kept) and restored before returning.

use super::RootKeyError;
use crate::secret::Secret;
use std::io::{IsTerminal, Read, Write};

/// The longest passphrase read; the buffer never grows past it, so no
/// copy of a passphrase is left behind in freed memory.
const MAX_LEN: usize = 1024;

fn unavailable(why: String) -> RootKeyError {
    RootKeyError::PromptUnavailable { why }
}

/// Asks for the passphrase on the terminal; with `confirm`, asks twice and
/// refuses two different answers (a new root).
pub(super) fn read_passphrase(confirm: bool) -> Result<Secret, RootKeyError> {
    if !std::io::stdin().is_terminal() {
        return Err(unavailable("stdin is not a terminal".into()));
    }
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| unavailable(format!("/dev/tty: {e}")))?;
    let first = ask(&mut tty, "rewrap: passphrase for the keystore's root key: ")?;
    if confirm {
        let again = ask(&mut tty, "rewrap: the same passphrase again: ")?;
        if again.expose() != first.expose() {
            return Err(RootKeyError::PassphraseMismatch);
        }
    }
    Ok(first)
}

/// Writes `prompt` and reads one line with echo off.
fn ask(tty: &mut std::fs::File, prompt: &str) -> Result<Secret, RootKeyError> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let io = |e: std::io::Error| unavailable(format!("/dev/tty: {e}"));
    tty.write_all(prompt.as_bytes()).map_err(io)?;
    tty.flush().map_err(io)?;
    let saved = tcgetattr(&*tty).map_err(|e| io(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&*tty, OptionalActions::Now, &quiet).map_err(|e| io(e.into()))?;
    let line = read_line(tty);
    let restored = tcsetattr(&*tty, OptionalActions::Now, &saved);
    let line = line.map_err(io)?;
    restored.map_err(|e| io(e.into()))?;
    if line.is_empty() {
        return Err(unavailable("the passphrase is empty".into()));
    }
    Ok(line)
}

/// One line (without its end), at most [`MAX_LEN`] bytes, into a buffer
/// allocated once.
fn read_line(tty: &mut std::fs::File) -> std::io::Result<Secret> {
    let mut line = Secret::new(Vec::with_capacity(MAX_LEN));
    let mut byte = [0u8; 1];
    loop {
        if tty.read(&mut byte)? == 0 || byte[0] == b'\n' || byte[0] == b'\r' {
            break;
        }
        if line.len() == MAX_LEN {
            zeroize::Zeroize::zeroize(&mut byte);
            return Err(std::io::Error::other(format!(
                "the passphrase is longer than {MAX_LEN} bytes"
            )));
        }
        line.expose_mut().push(byte[0]);
    }
    zeroize::Zeroize::zeroize(&mut byte);
    Ok(line)
}
