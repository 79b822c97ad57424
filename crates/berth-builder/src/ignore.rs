//! `.dockerignore` patterns as Docker matches them: one pattern a line, `#` comments, blanks
//! trimmed, `!` exceptions re-including what an earlier pattern excluded, `*`, `?`, `[...]`,
//! `\` escapes and `**` for any number of directories. A path is excluded when it, or one of
//! its parent directories, is matched by the last pattern that decides it.
//!
//! The same glob matcher serves COPY/ADD source wildcards (`filepath.Match` semantics: `*`
//! never crosses a `/`).

/// One `.dockerignore` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern, relative to the context root.
    pub text: String,
    /// A `!` exception.
    pub exclusion: bool,
}

/// The patterns of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Lexically cleans a slash-separated relative path (`filepath.Clean` without a leading `/`).
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

impl Matcher {
    /// Parses a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Matcher {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                exclusion = true;
                p = rest.trim();
                if p.is_empty() {
                    continue;
                }
            }
            let text = clean(p.trim_start_matches('/'));
            patterns.push(Pattern { text, exclusion });
        }
        Matcher { patterns }
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any `!` exception exists (then an excluded directory must still be walked).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context root) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path.trim_start_matches('/'));
        let parts: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = glob_match(&p.text, &path);
            if !hit && parts.len() > 1 {
                hit = (1..parts.len()).any(|i| glob_match(&p.text, &parts[..i].join("/")));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Whether `name` matches the glob `pattern` (`**` crosses directories, `*` and `?` do not).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    matches_at(&p, &s)
}

/// Whether `pattern` holds glob metacharacters.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn matches_at(p: &[char], s: &[char]) -> bool {
    let Some(&c) = p.first() else {
        return s.is_empty();
    };
    match c {
        '*' if p.get(1) == Some(&'*') => {
            let mut rest = &p[2..];
            while rest.first() == Some(&'*') {
                rest = &rest[1..];
            }
            if let Some(after) = rest.strip_prefix(&['/']) {
                // `**/x`: zero or more whole directories.
                (0..=s.len())
                    .filter(|&k| k == 0 || s[k - 1] == '/')
                    .any(|k| matches_at(after, &s[k..]))
            } else {
                (0..=s.len()).any(|k| matches_at(rest, &s[k..]))
            }
        }
        '*' => {
            let rest = &p[1..];
            for k in 0..=s.len() {
                if matches_at(rest, &s[k..]) {
                    return true;
                }
                if k < s.len() && s[k] == '/' {
                    break;
                }
            }
            false
        }
        '?' => !s.is_empty() && s[0] != '/' && matches_at(&p[1..], &s[1..]),
        '[' => {
            let Some((&ch, rest_s)) = s.split_first() else {
                return false;
            };
            match class(&p[1..], ch) {
                Some((ok, used)) => ok && ch != '/' && matches_at(&p[1 + used..], rest_s),
                // An unterminated class is a literal `[`.
                None => ch == '[' && matches_at(&p[1..], rest_s),
            }
        }
        '\\' if p.len() > 1 => !s.is_empty() && s[0] == p[1] && matches_at(&p[2..], &s[1..]),
        _ => !s.is_empty() && s[0] == c && matches_at(&p[1..], &s[1..]),
    }
}

/// Matches `ch` against a class body (after `[`): `(matched, chars used including ])`.
fn class(p: &[char], ch: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        let mut lo = p[i];
        if lo == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if lo == '\\' && i + 1 < p.len() {
            i += 1;
            lo = p[i];
        }
        let mut hi = lo;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hi = p[i + 2];
            if hi == '\\' && i + 3 < p.len() {
                hi = p[i + 3];
                i += 1;
            }
            i += 2;
        }
        if lo <= ch && ch <= hi {
            hit = true;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("**/*.txt", "a.txt"));
        assert!(glob_match("**/*.txt", "d/e/a.txt"));
        assert!(glob_match("d/**", "d/e/f"));
        assert!(glob_match("**", "x/y"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "a"));
        assert!(glob_match("#*", "#file.txt"));
    }

    #[test]
    fn docker_py_dockerignore() {
        // The file docker-py's test_build_with_dockerignore writes.
        let m = Matcher::parse(
            "ignored\nDockerfile\n.dockerignore\n ignored-with-spaces \n\
             !ignored/subdir/excepted-file\n! ignored/subdir/excepted-with-spaces  \n\n#*\n",
        );
        assert!(m.excludes("ignored"));
        assert!(m.excludes("ignored/subdir/file"));
        assert!(!m.excludes("ignored/subdir/excepted-file"));
        assert!(!m.excludes("ignored/subdir/excepted-with-spaces"));
        assert!(m.excludes("ignored-with-spaces"));
        assert!(m.excludes("Dockerfile"));
        assert!(!m.excludes("#file.txt"));
        assert!(!m.excludes("not-ignored"));
        assert!(m.has_exclusions());
    }

    #[test]
    fn exceptions_order_and_cleaning() {
        let m = Matcher::parse("*.md\n!README.md\n/docs/../tmp/\n**/*.log\n");
        assert!(m.excludes("a.md"));
        assert!(!m.excludes("README.md"));
        assert!(m.excludes("tmp/x"));
        assert!(m.excludes("a/b/c.log"));
        assert!(m.excludes("./x.log"));
        assert!(!m.excludes("docs/a"));
        let m = Matcher::parse("!keep\n*\n");
        assert!(m.excludes("keep"));
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("../.."), ".");
    }
}
