//! Config-only instructions: how ENV, LABEL, CMD, ENTRYPOINT, EXPOSE, WORKDIR, USER, VOLUME,
//! STOPSIGNAL, SHELL, MAINTAINER, ONBUILD and HEALTHCHECK change a stage's container config,
//! with their arguments substituted as dockerd substitutes them, and the history text dockerd
//! records for each. Pure functions: the executor commits the result, and `--change`
//! ([`crate::changes`]) applies them to a config of its own.

use serde_json::{json, Map, Value};

use crate::dockerfile::{self, Args, Instruction};
use crate::duration::go_duration;
use crate::error::{Error, Result};
use crate::shell::Lexer;

/// The parts of a stage an instruction may change.
pub(crate) struct StageConfig<'a> {
    /// The container config (`Cmd`, `Env`, ...).
    pub config: &'a mut Map<String, Value>,
    /// The stage's shell (`SHELL`, default `/bin/sh -c`), for shell-form CMD/ENTRYPOINT.
    pub shell: &'a [String],
    /// Whether this stage set CMD (ENTRYPOINT then keeps it).
    pub cmd_set: &'a mut bool,
    /// MAINTAINER's value (the image's `author`, outside the container config).
    pub author: &'a mut Option<String>,
}

/// Applies a config-only instruction (ENV, LABEL, CMD, ENTRYPOINT, EXPOSE, WORKDIR, USER,
/// VOLUME, STOPSIGNAL, SHELL, MAINTAINER, ONBUILD, HEALTHCHECK) to the stage's container
/// config; returns the history text dockerd records for it.
pub(crate) fn apply(
    ins: &Instruction,
    lexer: Lexer,
    vars: &[(String, String)],
    stage: &mut StageConfig<'_>,
) -> Result<String> {
    let config = &mut *stage.config;
    let kw = ins.keyword.as_str();
    let raw = ins.raw();
    let need = |ok: bool, msg: &str| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Instruction(msg.to_string()))
        }
    };
    match kw {
        "ENV" | "LABEL" => {
            let pairs = pairs(lexer, kw, &raw, vars)?;
            let mut shown = Vec::new();
            for (k, v) in pairs {
                shown.push(format!("{k}={v}"));
                if kw == "ENV" {
                    set_env(config, &k, &v);
                } else {
                    let labels = config.entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    labels[k] = json!(v);
                }
            }
            Ok(format!("{kw} {}", shown.join(" ")))
        }
        "CMD" | "ENTRYPOINT" => {
            let cmd = match &ins.args {
                Args::Json(v) => v.clone(),
                Args::Raw(r) => {
                    let mut s = stage.shell.to_vec();
                    s.push(r.clone());
                    s
                }
            };
            if kw == "CMD" {
                config.insert("Cmd".into(), json!(cmd));
                *stage.cmd_set = true;
            } else {
                config.insert("Entrypoint".into(), json!(cmd));
                if !*stage.cmd_set {
                    config.insert("Cmd".into(), Value::Null);
                }
            }
            Ok(format!("{kw} {}", go_quoted(&cmd)))
        }
        "EXPOSE" => {
            let ports = lexer.process_words(&raw, vars)?;
            need(!ports.is_empty(), "EXPOSE requires at least one argument")?;
            let map = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            if !map.is_object() {
                *map = json!({});
            }
            let mut shown = Vec::new();
            for p in ports {
                for port in expand_port(&p)? {
                    shown.push(port.clone());
                    map[port] = json!({});
                }
            }
            Ok(format!("EXPOSE {}", shown.join(" ")))
        }
        "WORKDIR" => {
            let w = lexer.process_word(&raw, vars)?;
            need(!w.is_empty(), "WORKDIR requires exactly one argument")?;
            let cur = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/");
            let joined = if w.starts_with('/') {
                w
            } else {
                format!("{}/{w}", cur.trim_end_matches('/'))
            };
            let clean = format!("/{}", crate::ignore::clean(&joined)).replace("/.", "/");
            let clean = if clean == "/" || clean.is_empty() {
                "/".to_string()
            } else {
                clean
            };
            config.insert("WorkingDir".into(), json!(clean));
            Ok(format!("WORKDIR {clean}"))
        }
        "USER" => {
            let u = lexer.process_word(&raw, vars)?;
            need(!u.is_empty(), "USER requires exactly one argument")?;
            config.insert("User".into(), json!(u));
            Ok(format!("USER {u}"))
        }
        "VOLUME" => {
            let vols = match &ins.args {
                Args::Json(v) => v
                    .iter()
                    .map(|x| lexer.process_word(x, vars))
                    .collect::<Result<Vec<_>>>()?,
                Args::Raw(r) => lexer.process_words(r, vars)?,
            };
            need(!vols.is_empty(), "VOLUME requires at least one argument")?;
            let map = config.entry("Volumes").or_insert_with(|| json!({}));
            if !map.is_object() {
                *map = json!({});
            }
            for v in &vols {
                need(
                    !v.trim().is_empty(),
                    "VOLUME specified can not be an empty string",
                )?;
                map[v.as_str()] = json!({});
            }
            Ok(format!("VOLUME [{}]", vols.join(" ")))
        }
        "STOPSIGNAL" => {
            let s = lexer.process_word(&raw, vars)?;
            need(!s.is_empty(), "STOPSIGNAL requires exactly one argument")?;
            need(is_signal(&s), &format!("Invalid signal: {s}"))?;
            config.insert("StopSignal".into(), json!(s));
            Ok(format!("STOPSIGNAL {s}"))
        }
        "SHELL" => {
            let Args::Json(v) = &ins.args else {
                return Err(Error::Instruction(
                    "SHELL requires the arguments to be in JSON form".into(),
                ));
            };
            need(!v.is_empty(), "SHELL requires at least one argument")?;
            config.insert("Shell".into(), json!(v));
            Ok(format!("SHELL [{}]", v.join(" ")))
        }
        "MAINTAINER" => {
            // The author lives outside the container config.
            *stage.author = Some(raw.clone());
            Ok(format!("MAINTAINER {raw}"))
        }
        "ONBUILD" => {
            let trigger = dockerfile::instruction(ins.line, &raw)?.ok_or_else(|| {
                Error::Instruction("ONBUILD requires at least one argument".into())
            })?;
            if matches!(trigger.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(Error::Instruction(format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    trigger.keyword
                )));
            }
            // Recorded as written (dockerd strips only the `ONBUILD` word); the trigger is
            // parsed again when a build starts from the image.
            let text = raw.trim().to_string();
            let list = config.entry("OnBuild").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            if let Some(a) = list.as_array_mut() {
                a.push(json!(text));
            }
            Ok(format!("ONBUILD {text}"))
        }
        "HEALTHCHECK" => {
            let words: Vec<&str> = raw.split_whitespace().collect();
            let first = words
                .first()
                .map(|w| w.to_ascii_uppercase())
                .unwrap_or_default();
            let hc = match first.as_str() {
                "NONE" => {
                    // As dockerd, the flags of `HEALTHCHECK NONE` are not read.
                    need(words.len() == 1, "HEALTHCHECK NONE takes no arguments")?;
                    json!({"Test": ["NONE"]})
                }
                "CMD" => {
                    let rest = raw.trim_start()[3..].trim_start().to_string();
                    need(!rest.is_empty(), "Missing command after HEALTHCHECK CMD")?;
                    let test = match serde_json::from_str::<Vec<String>>(&rest) {
                        Ok(v) if rest.starts_with('[') => {
                            let mut t = vec!["CMD".to_string()];
                            t.extend(v);
                            t
                        }
                        _ => vec!["CMD-SHELL".to_string(), rest],
                    };
                    let mut hc = json!({"Test": test});
                    for (flag, field) in [
                        ("interval", "Interval"),
                        ("timeout", "Timeout"),
                        ("start-period", "StartPeriod"),
                        ("start-interval", "StartInterval"),
                    ] {
                        if let Some(v) = ins.flag(flag).filter(|v| !v.is_empty()) {
                            hc[field] = json!(healthcheck_interval(flag, v)?);
                        }
                    }
                    if let Some(r) = ins.flag("retries").filter(|r| !r.is_empty()) {
                        let n: i32 = r.parse().map_err(|_| {
                            Error::Instruction(format!(
                                "strconv.ParseInt: parsing {}: invalid syntax",
                                quote(r)
                            ))
                        })?;
                        if n < 0 {
                            return Err(Error::Instruction(format!(
                                "--retries cannot be negative ({n})"
                            )));
                        }
                        hc["Retries"] = json!(n);
                    }
                    hc
                }
                _ => {
                    return Err(Error::Instruction(format!(
                        "Unknown type \"{first}\" in HEALTHCHECK (try CMD)"
                    )))
                }
            };
            config.insert("Healthcheck".into(), hc.clone());
            Ok(format!("HEALTHCHECK &{hc}"))
        }
        other => Err(Error::Instruction(format!("unknown instruction: {other}"))),
    }
}

/// A HEALTHCHECK duration flag in nanoseconds: 0 (the default) or at least 1ms, with
/// dockerd's messages.
fn healthcheck_interval(flag: &str, value: &str) -> Result<i64> {
    const MINIMUM: i64 = 1_000_000;
    let ns = go_duration(value)
        .ok_or_else(|| Error::Instruction(format!("time: invalid duration {}", quote(value))))?;
    if ns != 0 && ns < MINIMUM {
        return Err(Error::Instruction(format!(
            "Interval {} cannot be less than 1ms",
            quote(flag)
        )));
    }
    Ok(ns)
}

/// Whether dockerd's `signal.ParseSignal` takes `s`: a non-zero number, or a signal name
/// with or without `SIG` in any case, the real-time ones as `RTMIN+n` / `RTMAX-n`.
fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<i64>() {
        return n != 0;
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: &str, sign: char| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sign)
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| (1..=15).contains(&n))
        })
    };
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .is_ok()
        || realtime("RTMIN", '+')
        || realtime("RTMAX", '-')
}

/// The shell a config's shell-form CMD and ENTRYPOINT run under: its `Shell`, else
/// `/bin/sh -c`.
pub(crate) fn shell(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("Shell")
        .and_then(|s| serde_json::from_value::<Vec<String>>(s.clone()).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// ENV/LABEL arguments: `k=v k2="v 2"` or the old `k value with spaces`.
fn pairs(
    lexer: Lexer,
    kw: &str,
    raw: &str,
    vars: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let words = split_unquoted(raw, lexer);
    if words.is_empty() {
        return Err(Error::Instruction(format!(
            "{kw} requires at least one argument"
        )));
    }
    if !words[0].contains('=') {
        let key = words[0].to_string();
        let rest = raw.trim_start()[words[0].len()..].trim_start();
        if rest.is_empty() {
            return Err(Error::Instruction(format!("{kw} must have two arguments")));
        }
        return Ok(vec![(key, lexer.process_word(rest, vars)?)]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(Error::Instruction(format!(
                "Syntax error - can't find = in \"{w}\". Must be of the form: name=value"
            )));
        };
        if k.is_empty() {
            return Err(Error::Instruction(format!("{kw} names can not be blank")));
        }
        let k = lexer.process_word(k, vars)?;
        out.push((k, lexer.process_word(v, vars)?));
    }
    Ok(out)
}

/// The image config's `Env` as pairs.
pub(crate) fn env_pairs(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `key` in the config's `Env`, replacing an earlier value.
pub(crate) fn set_env(config: &mut Map<String, Value>, key: &str, value: &str) {
    let mut env: Vec<Value> = config
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let entry = json!(format!("{key}={value}"));
    match env.iter().position(|e| {
        e.as_str()
            .is_some_and(|s| s.split_once('=').map_or(s, |(k, _)| k) == key)
    }) {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    config.insert("Env".into(), Value::Array(env));
}

/// A string quoted as Go's `%q` quotes it (JSON's escaping is close enough for text).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A list as Go's `%q` prints it (`["a" "b c"]`), which is how dockerd records CMD and
/// ENTRYPOINT in the history.
pub(crate) fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|x| quote(x)).collect();
    format!("[{}]", items.join(" "))
}

/// Splits on unquoted whitespace, keeping quotes (they are removed per value later).
pub(crate) fn split_unquoted(raw: &str, lexer: Lexer) -> Vec<String> {
    let escape = lexer.escape();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (_, c) if c == escape => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ...
pub(crate) fn expand_port(p: &str) -> Result<Vec<String>> {
    let (range, proto) = match p.split_once('/') {
        Some((r, pr)) => (r, pr.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    // As dockerd (go-connections' nat), the protocol is checked before the port.
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::Instruction(format!("invalid proto: {proto}")));
    }
    let bad = || Error::Instruction(format!("Invalid containerPort: {p}"));
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let n = range.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(lines: &[&str], config: &mut Map<String, Value>) -> Vec<String> {
        let vars = vec![("V".to_string(), "val".to_string())];
        let shell = vec!["/bin/sh".to_string(), "-c".to_string()];
        let mut cmd_set = false;
        let mut author = None;
        lines
            .iter()
            .map(|l| {
                let ins = dockerfile::instruction(1, l).unwrap().unwrap();
                apply(
                    &ins,
                    Lexer::default(),
                    &vars,
                    &mut StageConfig {
                        config,
                        shell: &shell,
                        cmd_set: &mut cmd_set,
                        author: &mut author,
                    },
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn config_instructions() {
        let mut c = Map::new();
        c.insert("Cmd".into(), json!(["base"]));
        let texts = apply_all(
            &[
                "ENV A=1 B=\"two words\" C=$V",
                "ENV OLD form with spaces",
                "ENV A=replaced",
                "LABEL x=$V \"y z\"=w",
                "ENTRYPOINT run",
                "EXPOSE 80 8000-8001/udp",
                "WORKDIR /a",
                "WORKDIR b/../c",
                "USER $V",
                "VOLUME [\"/v1\", \"/v2\"]",
                "VOLUME /v3 /v4",
                "STOPSIGNAL SIGTERM",
                "SHELL [\"/bin/bash\", \"-c\"]",
                "ONBUILD run echo hi",
                "HEALTHCHECK --interval=1m30s --timeout=5s --retries=3 CMD [\"check\", \"-q\"]",
            ],
            &mut c,
        );
        assert_eq!(
            c["Env"],
            json!(["A=replaced", "B=two words", "C=val", "OLD=form with spaces"])
        );
        assert_eq!(c["Labels"], json!({"x": "val", "y z": "w"}));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "run"]));
        // ENTRYPOINT without a CMD of this stage clears the inherited one.
        assert!(c["Cmd"].is_null());
        assert_eq!(
            c["ExposedPorts"],
            json!({"80/tcp": {}, "8000/udp": {}, "8001/udp": {}})
        );
        assert_eq!(c["WorkingDir"], "/a/c");
        assert_eq!(c["User"], "val");
        assert_eq!(
            c["Volumes"],
            json!({"/v1": {}, "/v2": {}, "/v3": {}, "/v4": {}})
        );
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(c["Shell"], json!(["/bin/bash", "-c"]));
        assert_eq!(c["OnBuild"], json!(["run echo hi"]));
        assert_eq!(
            c["Healthcheck"],
            json!({"Test": ["CMD", "check", "-q"], "Interval": 90_000_000_000i64, "Timeout": 5_000_000_000i64, "Retries": 3})
        );
        assert_eq!(texts[4], "ENTRYPOINT [\"/bin/sh\" \"-c\" \"run\"]");
        assert_eq!(texts[9], "VOLUME [/v1 /v2]");
    }

    #[test]
    fn cmd_after_entrypoint_is_kept_and_errors() {
        let mut c = Map::new();
        apply_all(&["CMD [\"x\"]", "ENTRYPOINT [\"e\"]"], &mut c);
        assert_eq!(c["Cmd"], json!(["x"]));
        let vars: Vec<(String, String)> = Vec::new();
        let shell = vec!["/bin/sh".to_string(), "-c".to_string()];
        for (line, msg) in [
            (
                "SHELL /bin/sh",
                "SHELL requires the arguments to be in JSON form",
            ),
            ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
            (
                "HEALTHCHECK WHAT",
                "Unknown type \"WHAT\" in HEALTHCHECK (try CMD)",
            ),
            ("EXPOSE abc", "Invalid containerPort: abc"),
            (
                "ENV a=1 b",
                "Syntax error - can't find = in \"b\". Must be of the form: name=value",
            ),
        ] {
            let ins = dockerfile::instruction(1, line).unwrap().unwrap();
            let (mut cmd_set, mut author) = (false, None);
            let err = apply(
                &ins,
                Lexer::default(),
                &vars,
                &mut StageConfig {
                    config: &mut c,
                    shell: &shell,
                    cmd_set: &mut cmd_set,
                    author: &mut author,
                },
            )
            .unwrap_err();
            assert_eq!(err.to_string(), msg, "{line}");
        }
    }

    #[test]
    fn ports_and_words() {
        assert_eq!(expand_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_port("1-2").unwrap(), vec!["1/tcp", "2/tcp"]);
        assert!(expand_port("x").is_err());
        assert_eq!(expand_port("7/SCTP").unwrap(), vec!["7/sctp"]);
        assert_eq!(
            expand_port("80/http").unwrap_err().to_string(),
            "invalid proto: http"
        );
        assert_eq!(
            split_unquoted(r#"a=1 b="x y" c='p q' d=e\ f"#, Lexer::default()),
            vec!["a=1", "b=\"x y\"", "c='p q'", "d=e\\ f"]
        );
        assert_eq!(go_quoted(&["a".into(), "b c".into()]), "[\"a\" \"b c\"]");
    }
}
