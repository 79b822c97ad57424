//! `docker commit --change` and `docker import --change`: Dockerfile instructions applied to a
//! container config (`Cmd`, `Env`, ... in Docker's field names) without a build.
//!
//! As dockerd's `BuildFromConfig`, the lines are joined into one Dockerfile text and go through
//! the build's own parser ([`crate::dockerfile`]) and per-instruction code (`instructions`),
//! so quoting, the exec and shell forms, `$VAR` substitution (from the config's `Env`), ENV and
//! LABEL pairs and HEALTHCHECK flags mean exactly what they mean in a Dockerfile. Only the
//! instructions that change nothing but the config are accepted, and dockerd's texts are
//! kept: they carry no line number.

use serde_json::{Map, Value};

use crate::dockerfile::{self, Instruction};
use crate::error::{Error, Result};
use crate::instructions::{self, env_pairs, StageConfig};
use crate::shell::Lexer;

/// The instructions `--change` accepts (dockerd's `validCommitCommands`).
pub const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Applies `--change` lines to `config`, in order.
///
/// Every line is checked before any is applied, and `config` is left as it was when one
/// fails, so callers can run this before they read a request body or write anything. No lines
/// (or only blank ones) leave `config` unchanged.
///
/// As in a build stage, an ENTRYPOINT clears the config's `Cmd` unless a CMD comes before it
/// in the same changes.
pub fn apply_changes<S: AsRef<str>>(config: &mut Map<String, Value>, changes: &[S]) -> Result<()> {
    let text = changes
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join("\n");
    let (escape, lines) = dockerfile::logical_lines(&text).map_err(without_line)?;
    // dockerd refuses what is not a change before it looks at any instruction's arguments.
    for (_, logical) in &lines {
        if let Some(word) = logical.split_whitespace().next() {
            if !CHANGE_INSTRUCTIONS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(word))
            {
                return Err(Error::NotAChange(word.to_string()));
            }
        }
    }
    let mut parsed: Vec<Instruction> = Vec::with_capacity(lines.len());
    for (line, logical) in &lines {
        if let Some(ins) = dockerfile::instruction(*line, logical).map_err(without_line)? {
            dockerfile::validate_instruction(&ins).map_err(without_line)?;
            parsed.push(ins);
        }
    }
    let lexer = Lexer::new(escape);
    let mut edited = config.clone();
    let mut cmd_set = false;
    // MAINTAINER is not a change: nothing sets it.
    let mut author = None;
    for ins in &parsed {
        // Substitution sees the config's environment as each change leaves it.
        let vars = env_pairs(&edited);
        let shell = instructions::shell(&edited);
        instructions::apply(
            ins,
            lexer,
            &vars,
            &mut StageConfig {
                config: &mut edited,
                shell: &shell,
                cmd_set: &mut cmd_set,
                author: &mut author,
            },
        )?;
    }
    *config = edited;
    Ok(())
}

/// dockerd reports a `--change` error by its message alone (there is no Dockerfile to point
/// into).
fn without_line(e: Error) -> Error {
    match e {
        Error::Parse { message, .. } => Error::Instruction(message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `changes` applied to `base` (an object).
    fn applied(base: Value, changes: &[&str]) -> Value {
        let Value::Object(mut config) = base else {
            panic!("base is not an object");
        };
        apply_changes(&mut config, changes).unwrap_or_else(|e| panic!("{changes:?}: {e}"));
        Value::Object(config)
    }

    fn error(changes: &[&str]) -> String {
        let mut config = Map::new();
        config.insert("Cmd".into(), json!(["keep"]));
        let before = config.clone();
        let err = apply_changes(&mut config, changes).expect_err("changes should fail");
        assert_eq!(config, before, "a failed change left the config edited");
        err.to_string()
    }

    #[test]
    fn cmd_exec_and_shell_forms() {
        let c = applied(json!({}), &[r#"CMD ["/bin/echo", "a b"]"#]);
        assert_eq!(c["Cmd"], json!(["/bin/echo", "a b"]));
        let c = applied(json!({}), &["CMD echo $HOME 'x y'"]);
        // The shell form is the text as written: the shell in the container expands it.
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo $HOME 'x y'"]));
        // Not JSON after all: the shell form.
        let c = applied(json!({}), &["CMD [not json"]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "[not json"]));
        // A config's SHELL runs the shell form.
        let c = applied(json!({"Shell": ["/bin/bash", "-ec"]}), &["cmd true"]);
        assert_eq!(c["Cmd"], json!(["/bin/bash", "-ec", "true"]));
    }

    #[test]
    fn entrypoint_forms_and_cmd() {
        let c = applied(json!({"Cmd": ["old"]}), &[r#"ENTRYPOINT ["/e", "-x"]"#]);
        assert_eq!(c["Entrypoint"], json!(["/e", "-x"]));
        // As in a build: an ENTRYPOINT drops the CMD it would otherwise be given.
        assert!(c["Cmd"].is_null(), "{c}");
        let c = applied(
            json!({"Cmd": ["old"]}),
            &[r#"CMD ["new"]"#, "ENTRYPOINT /bin/busybox sh"],
        );
        assert_eq!(c["Cmd"], json!(["new"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/busybox sh"]));
    }

    #[test]
    fn env_pairs_quoting_and_substitution() {
        let c = applied(
            json!({"Env": ["PATH=/bin", "A=0"]}),
            &[
                r#"ENV A=1 B="two words" C='$PATH' D=\$x E=${PATH}:/sbin"#,
                "ENV OLD form with  spaces",
                "env F=$A",
            ],
        );
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/bin",
                "A=1",
                "B=two words",
                "C=$PATH",
                "D=$x",
                "E=/bin:/sbin",
                "OLD=form with  spaces",
                "F=1"
            ])
        );
    }

    #[test]
    fn label_pairs_and_quoting() {
        let c = applied(
            json!({"Labels": {"keep": "1", "over": "old"}}),
            &[
                r#"LABEL org.x=y "k 2"=v over="new value""#,
                "LABEL single word value",
            ],
        );
        assert_eq!(
            c["Labels"],
            json!({"keep": "1", "org.x": "y", "k 2": "v", "over": "new value", "single": "word value"})
        );
    }

    #[test]
    fn expose_user_workdir_volume_stopsignal_onbuild() {
        let c = applied(
            json!({"WorkingDir": "/srv", "Env": ["P=8080"]}),
            &[
                "EXPOSE 80 53/udp $P 9000-9001/tcp",
                "USER 1000:1000",
                "WORKDIR app/../data",
                "VOLUME /data /cache",
                r#"VOLUME ["/x y"]"#,
                "STOPSIGNAL SIGQUIT",
                "ONBUILD RUN echo hi",
            ],
        );
        assert_eq!(
            c["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8080/tcp": {}, "9000/tcp": {}, "9001/tcp": {}})
        );
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["WorkingDir"], "/srv/data");
        assert_eq!(c["Volumes"], json!({"/data": {}, "/cache": {}, "/x y": {}}));
        assert_eq!(c["StopSignal"], "SIGQUIT");
        // Kept as written, in every form dockerd reads.
        for sig in ["term", "9", "SIGRTMIN+3", "rtmax-1", "RTMAX", "Sigkill"] {
            let c = applied(json!({}), &[&format!("STOPSIGNAL {sig}")]);
            assert_eq!(c["StopSignal"], sig);
        }
        assert_eq!(c["OnBuild"], json!(["RUN echo hi"]));
    }

    #[test]
    fn healthcheck_flags_forms_and_none() {
        let c = applied(
            json!({}),
            &[
                "HEALTHCHECK --interval=1m30s --timeout=5s --start-period=1s \
               --start-interval=500ms --retries=3 CMD [\"check\", \"-q\"]",
            ],
        );
        assert_eq!(
            c["Healthcheck"],
            json!({
                "Test": ["CMD", "check", "-q"],
                "Interval": 90_000_000_000i64,
                "Timeout": 5_000_000_000i64,
                "StartPeriod": 1_000_000_000i64,
                "StartInterval": 500_000_000i64,
                "Retries": 3
            })
        );
        let c = applied(
            json!({}),
            &["HEALTHCHECK CMD curl -f http://localhost/ || exit 1"],
        );
        assert_eq!(
            c["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]})
        );
        let c = applied(
            json!({"Healthcheck": {"Test": ["CMD", "x"], "Retries": 2}}),
            &["HEALTHCHECK NONE"],
        );
        assert_eq!(c["Healthcheck"], json!({"Test": ["NONE"]}));
    }

    #[test]
    fn lines_join_as_one_dockerfile() {
        // A directive, a comment, a continuation and blank changes, as dockerd joins them.
        let c = applied(
            json!({}),
            &[
                "# escape=`",
                "# just a note",
                "LABEL a=1 `",
                "  b=2",
                "",
                "  ",
            ],
        );
        assert_eq!(c["Labels"], json!({"a": "1", "b": "2"}));
        let before = json!({"Cmd": ["x"]});
        assert_eq!(applied(before.clone(), &[] as &[&str]), before);
        assert_eq!(applied(before.clone(), &["", " "]), before);
    }

    #[test]
    fn refuses_what_is_not_a_change() {
        assert_eq!(
            error(&["FROM busybox"]),
            "FROM is not a valid change command"
        );
        assert_eq!(error(&["run echo hi"]), "run is not a valid change command");
        assert_eq!(
            error(&["MAINTAINER me"]),
            "MAINTAINER is not a valid change command"
        );
        // Checked before any other line is parsed or applied.
        assert_eq!(
            error(&["ENV", "LABEL a=b", "FOO bar"]),
            "FOO is not a valid change command"
        );
        for word in ["ADD", "ARG", "COPY", "SHELL"] {
            assert_eq!(
                error(&[&format!("{word} x y")]),
                format!("{word} is not a valid change command")
            );
        }
    }

    #[test]
    fn malformed_changes_have_dockerds_messages() {
        for (changes, message) in [
            (&["ENV"][..], "ENV requires at least one argument"),
            (&["LABEL a=1 b"], "Syntax error - can't find = in \"b\". Must be of the form: name=value"),
            (&["ENV =x"], "ENV names can not be blank"),
            (&["ENV A"], "ENV must have two arguments"),
            (&["STOPSIGNAL SIGFOO"], "Invalid signal: SIGFOO"),
            (&["STOPSIGNAL 0"], "Invalid signal: 0"),
            (&["STOPSIGNAL RTMIN+16"], "Invalid signal: RTMIN+16"),
            (&["LABEL a"], "LABEL must have two arguments"),
            (&["EXPOSE http"], "Invalid containerPort: http"),
            (&["EXPOSE 80/ip"], "invalid proto: ip"),
            (&["USER"], "USER requires exactly one argument"),
            (&["WORKDIR"], "WORKDIR requires exactly one argument"),
            (&["VOLUME"], "VOLUME requires at least one argument"),
            (&["ONBUILD FROM x"], "FROM isn't allowed as an ONBUILD trigger"),
            (&["ONBUILD"], "ONBUILD requires at least one argument"),
            (&["HEALTHCHECK WHAT"], "Unknown type \"WHAT\" in HEALTHCHECK (try CMD)"),
            (&["HEALTHCHECK NONE x"], "HEALTHCHECK NONE takes no arguments"),
            (&["HEALTHCHECK CMD"], "Missing command after HEALTHCHECK CMD"),
            (&["HEALTHCHECK --interval=5 CMD true"], "time: invalid duration \"5\""),
            (&["HEALTHCHECK --timeout=10us CMD true"], "Interval \"timeout\" cannot be less than 1ms"),
            (&["HEALTHCHECK --retries=-1 CMD true"], "--retries cannot be negative (-1)"),
            (&["HEALTHCHECK --retries=x CMD true"], "strconv.ParseInt: parsing \"x\": invalid syntax"),
            (&["HEALTHCHECK --every=5s CMD true"], "Unknown flag: every"),
            (&["CMD --mount=type=cache x"], "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"),
            (&["LABEL \"unterminated=1"], "unexpected end of statement while looking for matching double-quote"),
            (&["USER ${X:?must be set}"], "X: must be set"),
            (&["# escape=x", "CMD x"], "invalid escape token 'x' does not match ` or \\"),
            (&["CMD [\"ok\"]", "EXPOSE 1/tcp 99999"], "Invalid containerPort: 99999"),
        ] {
            assert_eq!(error(changes), message, "{changes:?}");
        }
    }
}
