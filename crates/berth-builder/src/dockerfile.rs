//! The Dockerfile parser: parser directives (`# escape=`, `# syntax=`), comments, line
//! continuations, instruction keywords, `--flag[=value]` words and the JSON (exec) form.
//! Arguments are kept raw here; the executor interprets and substitutes them per instruction,
//! as dockerd does, because substitution depends on the ARG/ENV state at that step.

use crate::error::{Error, Result};

/// Instructions the classic builder knows.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Instructions whose arguments may be a JSON array of strings.
const JSON_FORM: &[&str] = &["ADD", "CMD", "COPY", "ENTRYPOINT", "RUN", "SHELL", "VOLUME"];

/// An instruction's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// The JSON (exec) form: `["a", "b"]`.
    Json(Vec<String>),
    /// Everything after the keyword and flags, continuations joined.
    Raw(String),
}

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// The keyword, upper case.
    pub keyword: String,
    /// `--name[=value]` flags in order.
    pub flags: Vec<(String, Option<String>)>,
    /// The arguments.
    pub args: Args,
    /// The instruction as `docker build` shows it in `Step n/m : ...`.
    pub original: String,
}

impl Instruction {
    /// The value of flag `name` (`--name=value`), if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Refuses flags outside `allowed`, with dockerd's message.
    pub fn check_flags(&self, allowed: &[&str]) -> Result<()> {
        for (name, _) in &self.flags {
            if !allowed.contains(&name.as_str()) {
                return Err(Error::Parse {
                    line: self.line,
                    message: format!("Unknown flag: {name}"),
                });
            }
        }
        Ok(())
    }

    /// The raw argument text (the JSON form re-joined with spaces).
    pub fn raw(&self) -> String {
        match &self.args {
            Args::Raw(s) => s.clone(),
            Args::Json(v) => v.join(" "),
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// Every instruction in order.
    pub instructions: Vec<Instruction>,
}

/// Splits `# key=value` parser directives off the top.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim().to_ascii_lowercase();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((k, v.trim().to_string()))
}

/// Strips a trailing escape character (ignoring trailing blanks): `Some(rest)` for a
/// continued line.
fn continued(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end_matches([' ', '\t']);
    t.strip_suffix(escape)
}

/// Parses a Dockerfile's text.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let (escape, lines) = logical_lines(text)?;
    let mut instructions = Vec::new();
    for (line, logical) in lines {
        if let Some(ins) = instruction(line, &logical)? {
            instructions.push(ins);
        }
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// The escape character and the logical lines of a Dockerfile's text, each with the 1-based
/// line it starts on: parser directives read, comments and blank lines dropped, continuations
/// joined. Nothing is interpreted yet, so callers may check keywords before
/// [`instruction`] refuses unknown ones (`--change` answers those with its own message).
pub(crate) fn logical_lines(text: &str) -> Result<(char, Vec<(usize, String)>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let mut escape = '\\';
    let mut i = 0;
    let mut seen = std::collections::HashSet::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        if !seen.insert(k.clone()) {
            return Err(Error::Parse {
                line: i + 1,
                message: format!("only one {k} parser directive can be used"),
            });
        }
        if k == "escape" {
            escape = match v.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(Error::Parse {
                        line: i + 1,
                        message: format!("invalid escape token '{v}' does not match ` or \\"),
                    })
                }
            };
        }
        i += 1;
    }
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    while i < lines.len() {
        let line = lines[i];
        let lineno = i + 1;
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (piece, more) = match continued(line, escape) {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let (start, mut logical) = pending.take().unwrap_or((lineno, String::new()));
        if logical.is_empty() {
            logical.push_str(piece.trim_start());
        } else {
            logical.push_str(piece);
        }
        if more {
            pending = Some((start, logical));
        } else {
            out.push((start, logical));
        }
    }
    out.extend(pending);
    Ok((escape, out))
}

/// Parses one logical line; `None` when it holds nothing.
pub fn instruction(line: usize, logical: &str) -> Result<Option<Instruction>> {
    let logical = logical.trim();
    if logical.is_empty() {
        return Ok(None);
    }
    let (word, mut rest) = match logical.find(char::is_whitespace) {
        Some(n) => (&logical[..n], logical[n..].trim_start()),
        None => (logical, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(Error::Parse {
            line,
            message: format!("unknown instruction: {word}"),
        });
    }
    let mut flags = Vec::new();
    // ONBUILD's argument is a whole instruction with flags of its own.
    while keyword != "ONBUILD" && rest.starts_with("--") {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let f = &rest[2..end];
        rest = rest[end..].trim_start();
        if f.is_empty() {
            // `--` alone ends the flags.
            break;
        }
        match f.split_once('=') {
            Some((n, v)) => flags.push((n.to_string(), Some(v.to_string()))),
            None => flags.push((f.to_string(), None)),
        }
    }
    let args = if JSON_FORM.contains(&keyword.as_str()) && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Json(v),
            Err(_) => Args::Raw(rest.to_string()),
        }
    } else {
        Args::Raw(rest.to_string())
    };
    if let Args::Raw(r) = &args {
        if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") && has_heredoc(r) {
            return Err(Error::Parse {
                line,
                message: format!(
                    "{keyword} with a heredoc (<<) is not supported by the classic builder"
                ),
            });
        }
    }
    Ok(Some(Instruction {
        line,
        keyword,
        flags,
        args,
        original: logical.to_string(),
    }))
}

/// Checks every instruction's shape (flags, argument counts, JSON where required) before
/// anything runs, so a malformed Dockerfile fails as a whole with dockerd's
/// `dockerfile parse error line N: ...`, as the classic builder does.
pub fn validate(df: &Dockerfile) -> Result<()> {
    df.instructions.iter().try_for_each(validate_instruction)
}

const BUILDKIT_FLAGS: &[&str] = &[
    "mount",
    "network",
    "security",
    "link",
    "checksum",
    "keep-git-dir",
    "parents",
    "exclude",
];

/// Checks one instruction's shape (see [`validate`]).
pub(crate) fn validate_instruction(ins: &Instruction) -> Result<()> {
    let fail = |message: String| {
        Err(Error::Parse {
            line: ins.line,
            message,
        })
    };
    let kw = ins.keyword.as_str();
    let allowed: &[&str] = match kw {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod"],
        "ADD" => &["chown", "chmod"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    };
    for (name, _) in &ins.flags {
        if BUILDKIT_FLAGS.contains(&name.as_str()) && !allowed.contains(&name.as_str()) {
            return fail(format!(
                "the --{name} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"
            ));
        }
    }
    ins.check_flags(allowed)?;
    let raw = ins.raw();
    let words: Vec<&str> = match &ins.args {
        Args::Json(v) => v.iter().map(String::as_str).collect(),
        Args::Raw(r) => r.split_whitespace().collect(),
    };
    match kw {
        "FROM" => {
            let ok = words.len() == 1 || (words.len() == 3 && words[1].eq_ignore_ascii_case("as"));
            if !ok {
                return fail("FROM requires either one or three arguments".into());
            }
        }
        "ARG" | "ENV" | "LABEL" | "EXPOSE" | "VOLUME" | "ONBUILD" if words.is_empty() => {
            return fail(format!("{kw} requires at least one argument"));
        }
        "USER" | "WORKDIR" | "STOPSIGNAL" | "MAINTAINER" if words.is_empty() => {
            return fail(format!("{kw} requires exactly one argument"));
        }
        "COPY" | "ADD" if words.len() < 2 => {
            return fail(format!(
                "{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
            ));
        }
        "SHELL" if !matches!(ins.args, Args::Json(_)) => {
            return fail("SHELL requires the arguments to be in JSON form".into());
        }
        "SHELL" if words.is_empty() => {
            return fail("SHELL requires at least one argument".into());
        }
        "HEALTHCHECK" => {
            let kind = words
                .first()
                .map(|w| w.to_ascii_uppercase())
                .unwrap_or_default();
            match kind.as_str() {
                "NONE" if words.len() > 1 => {
                    return fail("HEALTHCHECK NONE takes no arguments".into());
                }
                "NONE" => {}
                "CMD" if words.len() < 2 => {
                    return fail("Missing command after HEALTHCHECK CMD".into());
                }
                "CMD" => {}
                _ => {
                    return fail(format!(
                        "Unknown type {} in HEALTHCHECK (try CMD)",
                        serde_json::to_string(&kind).unwrap_or(kind.clone())
                    ))
                }
            }
        }
        "ONBUILD" => match instruction(ins.line, &raw)? {
            Some(t) if matches!(t.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") => {
                return fail(format!("{} isn't allowed as an ONBUILD trigger", t.keyword));
            }
            Some(t) => validate_instruction(&t)?,
            None => return fail("ONBUILD requires at least one argument".into()),
        },
        _ => {}
    }
    Ok(())
}

/// Whether the arguments start a heredoc (`<<EOF`, `<<-"EOF"`) outside quotes: one that
/// would need the following lines, which the classic builder does not read.
fn has_heredoc(raw: &str) -> bool {
    let chars: Vec<char> = raw.chars().collect();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '<' && chars.get(i + 1) == Some(&'<') => {
                let mut j = i + 2;
                if chars.get(j) == Some(&'-') {
                    j += 1;
                }
                while matches!(chars.get(j), Some('"') | Some('\'')) {
                    j += 1;
                }
                if chars
                    .get(j)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
                {
                    return true;
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_forms() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n\
             # escape=\\\n\
             \n\
             from busybox AS base\n\
             # a comment\n\
             RUN echo a \\\n\
             # comment inside\n\
             \n\
               && echo b\n\
             CMD [\"echo\", \"hi\"]\n\
             ENTRYPOINT [not json\n\
             COPY --from=base --chown=1:2 /a /b\n\
             HEALTHCHECK --interval=5s CMD true\n",
        )
        .unwrap();
        let k: Vec<&str> = df.instructions.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(
            k,
            ["FROM", "RUN", "CMD", "ENTRYPOINT", "COPY", "HEALTHCHECK"]
        );
        assert_eq!(df.instructions[0].raw(), "busybox AS base");
        assert_eq!(df.instructions[0].line, 4);
        assert_eq!(df.instructions[1].raw(), "echo a && echo b");
        assert_eq!(df.instructions[1].line, 6);
        assert_eq!(
            df.instructions[2].args,
            Args::Json(vec!["echo".into(), "hi".into()])
        );
        assert_eq!(df.instructions[3].args, Args::Raw("[not json".into()));
        let copy = &df.instructions[4];
        assert_eq!(copy.flag("from"), Some("base"));
        assert_eq!(copy.flag("chown"), Some("1:2"));
        assert_eq!(copy.raw(), "/a /b");
        assert!(copy.check_flags(&["from"]).is_err());
        assert_eq!(df.instructions[5].flag("interval"), Some("5s"));
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  /w\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].raw(), "dir c:\\   /w");
        // A directive after an instruction is a comment.
        let df = parse("FROM x\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert_eq!(df.instructions[1].raw(), "a  b");
        assert!(parse("# escape=x\nFROM a").is_err());
    }

    #[test]
    fn unknown_instruction_and_heredoc() {
        let e = parse("FROM a\nFOO bar\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error line 2: unknown instruction: FOO"
        );
        assert!(parse("FROM a\nRUN <<EOF\necho\nEOF\n").is_err());
        assert!(parse("FROM a\nRUN echo $((1<<2))\n").is_ok());
        assert!(parse("FROM a\nRUN echo \"a <<b\" 'c <<d'\n").is_ok());
        assert!(parse("FROM a\nRUN cat <<-'EOF' > f\n").is_err());
        assert!(parse("FROM a\nCOPY <<EOF /x\n").is_err());
    }

    #[test]
    fn validation_uses_dockerds_texts() {
        let err = |text: &str| validate(&parse(text).unwrap()).unwrap_err().to_string();
        assert_eq!(
            err("FROM a\nARG\n"),
            "dockerfile parse error line 2: ARG requires at least one argument"
        );
        assert_eq!(
            err("FROM a\nONBUILD FROM x\n"),
            "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err("FROM a\nSHELL /bin/sh\n"),
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK WHAT\n"),
            "dockerfile parse error line 2: Unknown type \"WHAT\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            err("FROM a\nCOPY a.txt\n"),
            "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            err("FROM a\nCOPY --foo=1 a b\n"),
            "dockerfile parse error line 2: Unknown flag: foo"
        );
        assert!(err("FROM a\nRUN --mount=type=cache true\n")
            .contains("the --mount option requires BuildKit"));
        assert!(err("FROM a\nONBUILD RUN --mount=x true\n").contains("requires BuildKit"));
        assert_eq!(
            err("FROM a b\n"),
            "dockerfile parse error line 1: FROM requires either one or three arguments"
        );
        assert!(validate(
            &parse("FROM a AS b\nCOPY --from=b --chown=1 x y\nHEALTHCHECK NONE\nONBUILD RUN x\n")
                .unwrap()
        )
        .is_ok());
    }

    #[test]
    fn trailing_continuation_and_crlf() {
        let df = parse("FROM a\r\nRUN x \\\r\n").unwrap();
        assert_eq!(df.instructions[1].raw(), "x");
        assert_eq!(df.instructions.len(), 2);
    }
}
