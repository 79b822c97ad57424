//! The Dockerfile word lexer: quotes, the escape character and variable substitution
//! (`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`,
//! `${VAR:?message}`, `${VAR?message}`), as dockerd applies it to the arguments of ADD, COPY,
//! ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG. RUN, CMD and ENTRYPOINT
//! are left to the shell in the container.

use crate::error::{Error, Result};

/// Variables visible to a substitution; later entries win (ENV after ARG).
pub trait Vars {
    /// The value of `name`, `None` when unset.
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for [(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Vars for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Vars::get(self.as_slice(), name)
    }
}

/// A lexer for one escape character (`\` by default, `` ` `` with `# escape=`).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

struct Cursor<'a, V: Vars + ?Sized> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a V,
}

impl Lexer {
    /// A lexer with `escape` as the escape character.
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Removes quotes and escapes and substitutes variables in one word.
    pub fn process_word<V: Vars + ?Sized>(&self, word: &str, vars: &V) -> Result<String> {
        let mut c = Cursor {
            chars: word.chars().collect(),
            pos: 0,
            escape: self.escape,
            vars,
        };
        let (mut words, _) = c.process(None, false)?;
        Ok(words.pop().unwrap_or_default())
    }

    /// Like [`Lexer::process_word`], but unquoted whitespace separates words (EXPOSE, VOLUME,
    /// COPY sources): `a "b c"` is two words.
    pub fn process_words<V: Vars + ?Sized>(&self, line: &str, vars: &V) -> Result<Vec<String>> {
        let mut c = Cursor {
            chars: line.chars().collect(),
            pos: 0,
            escape: self.escape,
            vars,
        };
        let (words, _) = c.process(None, true)?;
        Ok(words)
    }
}

impl<V: Vars + ?Sized> Cursor<'_, V> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (not consumed... consumed and reported) or the end. With
    /// `split`, unquoted whitespace ends a word. Returns the words and whether `stop` was met.
    fn process(&mut self, stop: Option<char>, split: bool) -> Result<(Vec<String>, bool)> {
        let mut words = Vec::new();
        let mut cur = String::new();
        // A word exists once anything (even `""`) was seen for it.
        let mut started = false;
        while let Some(ch) = self.next() {
            if Some(ch) == stop {
                if started || !split {
                    words.push(cur);
                }
                return Ok((words, true));
            }
            if split && ch.is_whitespace() {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
                continue;
            }
            started = true;
            if ch == self.escape {
                match self.next() {
                    Some(n) => cur.push(n),
                    None => cur.push(ch),
                }
            } else if ch == '\'' {
                self.single_quoted(&mut cur)?;
            } else if ch == '"' {
                self.double_quoted(&mut cur)?;
            } else if ch == '$' {
                let v = self.dollar()?;
                cur.push_str(&v);
            } else {
                cur.push(ch);
            }
        }
        if started || !split {
            words.push(cur);
        }
        Ok((words, false))
    }

    fn single_quoted(&mut self, out: &mut String) -> Result<()> {
        loop {
            match self.next() {
                None => {
                    return Err(Error::Substitution(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => return Ok(()),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, out: &mut String) -> Result<()> {
        loop {
            match self.next() {
                None => {
                    return Err(Error::Substitution(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => return Ok(()),
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`: the substituted value.
    fn dollar(&mut self) -> Result<String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                Ok(self.vars.get(&name).unwrap_or_default())
            }
            Some(c) if c.is_ascii_digit() => {
                // `$1`: positional parameters are never set in a Dockerfile.
                self.pos += 1;
                Ok(String::new())
            }
            _ => Ok("$".into()),
        }
    }

    /// The inside of `${...}` after the brace.
    fn braced(&mut self) -> Result<String> {
        let name = self.name();
        if name.is_empty() {
            return Err(Error::Substitution("bad substitution".into()));
        }
        let value = self.vars.get(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = self.next();
        if op == Some('}') && !colon {
            return Ok(value.unwrap_or_default());
        }
        let set = match colon {
            true => value.as_deref().is_some_and(|v| !v.is_empty()),
            false => value.is_some(),
        };
        match op {
            Some('-') | Some('+') | Some('?') => {
                let (words, closed) = self.process(Some('}'), false)?;
                if !closed {
                    return Err(Error::Substitution(format!(
                        "missing '}}' in substitution of {name}"
                    )));
                }
                let word = words.into_iter().next().unwrap_or_default();
                Ok(match op {
                    Some('-') if set => value.unwrap_or_default(),
                    Some('-') => word,
                    Some('+') if set => word,
                    Some('+') => String::new(),
                    _ if set => value.unwrap_or_default(),
                    _ if word.is_empty() => {
                        return Err(Error::Substitution(format!(
                            "{name}: is not allowed to be unset"
                        )))
                    }
                    _ => return Err(Error::Substitution(format!("{name}: {word}"))),
                })
            }
            _ => Err(Error::Substitution(format!(
                "unsupported modifier in substitution of {name}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![
            ("A".into(), "old".into()),
            ("A".into(), "a".into()),
            ("EMPTY".into(), String::new()),
            ("SP".into(), "x y".into()),
        ]
    }

    fn w(s: &str) -> String {
        Lexer::default().process_word(s, &vars()).unwrap()
    }

    #[test]
    fn substitution_forms() {
        assert_eq!(w("$A"), "a");
        assert_eq!(w("${A}b"), "ab");
        assert_eq!(w("$Ab"), "");
        assert_eq!(w("${NOPE:-def}"), "def");
        assert_eq!(w("${EMPTY:-def}"), "def");
        assert_eq!(w("${EMPTY-def}"), "");
        assert_eq!(w("${A:-def}"), "a");
        assert_eq!(w("${A:+alt}"), "alt");
        assert_eq!(w("${EMPTY:+alt}"), "");
        assert_eq!(w("${EMPTY+alt}"), "alt");
        assert_eq!(w("${NOPE:-${A}x}"), "ax");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$1x"), "x");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A b\""), "a b");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("\"\\$A \\\" \\x\""), "$A \" \\x");
        assert_eq!(w("a\\ b"), "a b");
        let bt = Lexer::new('`');
        assert_eq!(bt.process_word("`$A", &vars()).unwrap(), "$A");
        assert_eq!(bt.process_word("c:\\dir", &vars()).unwrap(), "c:\\dir");
    }

    #[test]
    fn words_split_on_unquoted_space() {
        let l = Lexer::default();
        assert_eq!(
            l.process_words(" a  \"b c\" $SP ''", &vars()).unwrap(),
            vec!["a", "b c", "x y", ""]
        );
    }

    #[test]
    fn errors() {
        let l = Lexer::default();
        assert!(l.process_word("'abc", &vars()).is_err());
        assert!(l.process_word("\"abc", &vars()).is_err());
        assert!(l.process_word("${}", &vars()).is_err());
        assert!(l.process_word("${A", &vars()).is_err());
        let e = l
            .process_word("${NOPE:?needs a value}", &vars())
            .unwrap_err();
        assert_eq!(e.to_string(), "NOPE: needs a value");
        assert_eq!(l.process_word("${A:?x}", &vars()).unwrap(), "a");
    }
}
