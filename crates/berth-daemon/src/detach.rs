//! Detach keys: the key sequence (`ctrl-p,ctrl-q` unless configured) that ends an interactive
//! TTY attach session while the container keeps running, in Docker's notation, and the stdin
//! filter that spots it. Used by the daemon's attach and exec streams and by the CLI.

/// Docker's default sequence.
pub const DEFAULT: &str = "ctrl-p,ctrl-q";

/// Parses Docker's notation (`ctrl-p,ctrl-q`, `ctrl-@`, `a,b`) into bytes; an empty string is
/// the default sequence.
pub fn parse(keys: &str) -> Result<Vec<u8>, String> {
    let keys = if keys.is_empty() { DEFAULT } else { keys };
    let invalid = || format!("Invalid detach keys ({keys}) provided");
    keys.split(',')
        .map(|key| {
            if let Some(c) = key.strip_prefix("ctrl-") {
                let mut chars = c.chars();
                match (chars.next(), chars.next()) {
                    (Some(c @ 'a'..='z'), None) => Ok(c as u8 - b'a' + 1),
                    (Some('@'), None) => Ok(0),
                    (Some('['), None) => Ok(27),
                    (Some('\\'), None) => Ok(28),
                    (Some(']'), None) => Ok(29),
                    (Some('^'), None) => Ok(30),
                    (Some('_'), None) => Ok(31),
                    _ => Err(invalid()),
                }
            } else if key.len() == 1 {
                Ok(key.as_bytes()[0])
            } else {
                Err(invalid())
            }
        })
        .collect()
}

/// Passes input through while watching for the detach sequence. Bytes that may begin the
/// sequence are held back until it either completes (and is swallowed) or breaks off (and
/// they are passed on), so a partial match never reaches the container early or twice.
#[derive(Debug, Clone)]
pub struct EscapeFilter {
    keys: Vec<u8>,
    matched: usize,
}

impl EscapeFilter {
    /// A filter for `keys` (as [`parse`] returns them); empty keys never detach.
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// Appends to `out` what of `input` goes to the container; returns `true` once the whole
    /// sequence has been read (the rest of `input` is dropped).
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
            if self.matched == self.keys.len() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation() {
        assert_eq!(parse("").unwrap(), vec![16, 17]);
        assert_eq!(parse("ctrl-x").unwrap(), vec![24]);
        assert_eq!(parse("ctrl-@,a,ctrl-_").unwrap(), vec![0, b'a', 31]);
        assert_eq!(
            parse("ctrl-1").unwrap_err(),
            "Invalid detach keys (ctrl-1) provided"
        );
        assert!(parse("ab").is_err());
    }

    #[test]
    fn filter_holds_back_partial_matches() {
        let mut f = EscapeFilter::new(parse("").unwrap());
        let mut out = Vec::new();
        assert!(!f.filter(b"ls\x10", &mut out));
        assert_eq!(out, b"ls");
        // The sequence breaks off: the held ctrl-p goes through, then the new byte.
        assert!(!f.filter(b"x\x10\x10", &mut out));
        assert_eq!(out, b"ls\x10x\x10");
        assert!(f.filter(b"\x11dropped", &mut out));
        assert_eq!(out, b"ls\x10x\x10");
        let mut none = EscapeFilter::new(Vec::new());
        let mut out = Vec::new();
        assert!(!none.filter(b"\x10\x11", &mut out));
        assert_eq!(out, b"\x10\x11");
    }
}
