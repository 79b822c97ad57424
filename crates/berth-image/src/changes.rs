//! Dockerfile-instruction changes (`docker import --change`, `docker commit --change`):
//! CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL, ONBUILD, applied to
//! an image config's `config` object in Docker's field names; and Go's duration syntax, which
//! Dockerfile flags (`HEALTHCHECK --interval=30s`) and the docker CLI's duration flags use.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Parses a Go duration (`0`, `30s`, `1h30m`, `1.5s`, `250ms`) into nanoseconds; `None` if it
/// is not one. Durations written by hand stay far below `i64::MAX` nanoseconds.
pub fn go_duration(s: &str) -> Option<i64> {
    let mut rest = s.trim();
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

fn bad(change: &str, reason: impl Into<String>) -> Error {
    Error::InvalidChange {
        change: change.to_string(),
        reason: reason.into(),
    }
}

/// Split like a shell word list: whitespace separates, quotes group, backslash escapes.
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(bad(s, "unterminated quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `["a","b"]` (exec form) or a shell-form string.
fn exec_or_shell(args: &str) -> Value {
    if args.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(args) {
            return json!(v);
        }
    }
    json!(["/bin/sh", "-c", args])
}

fn key_values(change: &str, args: &str) -> Result<Vec<(String, String)>> {
    let ws = words(args)?;
    if ws.is_empty() {
        return Err(bad(change, "missing arguments"));
    }
    if !ws[0].contains('=') {
        // Legacy `ENV key value with spaces`.
        let (k, v) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad(change, "expected key value"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    ws.into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| bad(change, "expected key=value"))
        })
        .collect()
}

fn obj<'a>(cfg: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = cfg.entry(key.to_string()).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

fn arr<'a>(cfg: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = cfg.entry(key.to_string()).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("just made an array")
}

/// Apply `changes` to a container config object.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    for change in changes {
        let line = change.trim();
        if line.is_empty() {
            continue;
        }
        let (instr, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let args = args.trim();
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                cfg.insert("Cmd".into(), exec_or_shell(args));
            }
            "ENTRYPOINT" => {
                cfg.insert("Entrypoint".into(), exec_or_shell(args));
            }
            "ENV" => {
                for (k, v) in key_values(change, args)? {
                    let env = arr(cfg, "Env");
                    env.retain(|e| {
                        e.as_str()
                            .and_then(|s| s.split_once('='))
                            .map(|(ek, _)| ek != k)
                            .unwrap_or(true)
                    });
                    env.push(json!(format!("{k}={v}")));
                }
            }
            "LABEL" => {
                for (k, v) in key_values(change, args)? {
                    obj(cfg, "Labels").insert(k, json!(v));
                }
            }
            "EXPOSE" => {
                for p in words(args)? {
                    let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let ok = !port.is_empty()
                        && port.split('-').all(|x| x.parse::<u16>().is_ok())
                        && matches!(proto, "tcp" | "udp" | "sctp");
                    if !ok {
                        return Err(bad(change, format!("invalid port {p:?}")));
                    }
                    obj(cfg, "ExposedPorts").insert(format!("{port}/{proto}"), json!({}));
                }
            }
            "USER" => {
                cfg.insert("User".into(), json!(args));
            }
            "WORKDIR" => {
                let base = cfg
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string();
                let wd = if args.starts_with('/') {
                    args.to_string()
                } else {
                    format!("{}/{}", base.trim_end_matches('/'), args)
                };
                cfg.insert("WorkingDir".into(), json!(wd));
            }
            "VOLUME" => {
                let vols: Vec<String> = if args.starts_with('[') {
                    serde_json::from_str(args).map_err(|e| bad(change, e.to_string()))?
                } else {
                    words(args)?
                };
                for v in vols {
                    obj(cfg, "Volumes").insert(v, json!({}));
                }
            }
            "STOPSIGNAL" => {
                cfg.insert("StopSignal".into(), json!(args));
            }
            "ONBUILD" => {
                let inner = args
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(inner.as_str(), "" | "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(bad(change, "invalid ONBUILD trigger"));
                }
                arr(cfg, "OnBuild").push(json!(args));
            }
            other => {
                return Err(bad(
                    change,
                    format!("{other} is not a supported instruction"),
                ))
            }
        }
        if args.is_empty() && !instr.eq_ignore_ascii_case("CMD") {
            return Err(bad(change, "missing arguments"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_dockerfile_subset() {
        let mut c = Map::new();
        let ch: Vec<String> = [
            r#"CMD ["/bin/sh","-c","echo hi"]"#,
            "ENTRYPOINT /bin/busybox",
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=3",
            "EXPOSE 80 53/udp",
            "LABEL org.x=y \"k 2\"=v",
            "USER 1000:1000",
            "WORKDIR /app",
            "WORKDIR sub",
            "VOLUME /data /cache",
            r#"VOLUME ["/x"]"#,
            "STOPSIGNAL SIGTERM",
            "ONBUILD RUN echo hi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_changes(&mut c, &ch).unwrap();
        let v = Value::Object(c);
        assert_eq!(v["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(v["Entrypoint"], json!(["/bin/sh", "-c", "/bin/busybox"]));
        assert_eq!(v["Env"], json!(["B=two words", "C=three four", "A=3"]));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(v["Labels"], json!({"org.x": "y", "k 2": "v"}));
        assert_eq!(v["User"], json!("1000:1000"));
        assert_eq!(v["WorkingDir"], json!("/app/sub"));
        assert_eq!(v["Volumes"], json!({"/data": {}, "/cache": {}, "/x": {}}));
        assert_eq!(v["StopSignal"], json!("SIGTERM"));
        assert_eq!(v["OnBuild"], json!(["RUN echo hi"]));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("250ms"), Some(250_000_000));
        for bad in ["", "x", "10", "s", "5 s", "1d"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_changes() {
        for bad in [
            "RUN echo",
            "EXPOSE http",
            "ENV",
            "ONBUILD FROM x",
            "LABEL \"unterminated",
        ] {
            assert!(
                apply_changes(&mut Map::new(), &[bad.to_string()]).is_err(),
                "{bad}"
            );
        }
    }
}
