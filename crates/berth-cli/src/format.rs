//! `--format`: the subset of Go templates that docker users write, over JSON values.
//!
//! Supported: literal text, `{{.}}`, `{{.A.B}}`, `{{json X}}`, `{{join X "sep"}}`,
//! `{{index X "key"}}`, `{{upper X}}`, `{{lower X}}`, `{{len X}}`, `{{X | json}}`, and the
//! `table` prefix (a header row and tab-aligned columns, as docker's tabwriter lays them out).
//! `\t` and `\n` escapes in the format are expanded as docker expands them.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
enum Arg {
    Path(Vec<String>),
    Str(String),
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    /// `func args...`; `func` empty means "print the first argument".
    Action {
        func: String,
        args: Vec<Arg>,
    },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    table: bool,
}

impl Template {
    /// Parses a format string.
    pub fn parse(format: &str) -> Result<Self> {
        let mut f = format.replace("\\t", "\t").replace("\\n", "\n");
        let table = f.starts_with("table");
        if table {
            f = f["table".len()..].trim_start().to_string();
        }
        let mut nodes = Vec::new();
        let mut rest = f.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                nodes.push(Node::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow!("template: unclosed action in {format:?}"))?;
            let inner = after[..end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            nodes.push(parse_action(inner.trim())?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_string()));
        }
        Ok(Template { nodes, table })
    }

    /// Whether the format asked for a table.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Renders the template for one value.
    pub fn render(&self, v: &Value) -> Result<String> {
        let mut out = String::new();
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action { func, args } => out.push_str(&apply(func, args, v)?),
            }
        }
        Ok(out)
    }

    /// Renders the header row of a table: each field becomes its column title.
    pub fn header(&self, titles: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action { args, .. } => match args.first() {
                    Some(Arg::Path(p)) if p.len() > 1 => out.push_str(&titles(&p[1..].join("."))),
                    _ => {}
                },
            }
        }
        out
    }
}

fn parse_action(s: &str) -> Result<Node> {
    // `X | func` is the same as `func X`.
    if let Some((lhs, rhs)) = s.split_once('|') {
        let mut args = tokenize(lhs.trim())?;
        let mut rhs = tokenize(rhs.trim())?;
        let Some(Arg::Path(f)) = rhs.first().cloned() else {
            bail!("template: bad pipeline {s:?}");
        };
        let func = f.join(".");
        args.extend(rhs.drain(1..));
        return Ok(Node::Action { func, args });
    }
    let tokens = tokenize(s)?;
    match tokens.first() {
        Some(Arg::Path(p)) if p.len() == 1 && !p[0].starts_with('.') && is_func(&p[0]) => {
            Ok(Node::Action {
                func: p[0].clone(),
                args: tokens[1..].to_vec(),
            })
        }
        Some(Arg::Path(p)) if p.first().is_some_and(|f| f.starts_with('.')) => Ok(Node::Action {
            func: String::new(),
            args: tokens,
        }),
        _ => bail!("template: unsupported action {{{{{s}}}}}"),
    }
}

fn is_func(name: &str) -> bool {
    matches!(
        name,
        "json"
            | "join"
            | "index"
            | "upper"
            | "lower"
            | "len"
            | "println"
            | "print"
            | "title"
            | "pad"
            | "truncate"
    )
}

fn tokenize(s: &str) -> Result<Vec<Arg>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut lit = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => lit.push('\n'),
                        Some('t') => lit.push('\t'),
                        Some(o) => lit.push(o),
                        None => bail!("template: unterminated string in {s:?}"),
                    },
                    Some(o) => lit.push(o),
                    None => bail!("template: unterminated string in {s:?}"),
                }
            }
            out.push(Arg::Str(lit));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            if word == "." {
                out.push(Arg::Path(vec![".".into()]));
            } else if let Some(path) = word.strip_prefix('.') {
                let mut parts = vec![".".to_string()];
                parts.extend(path.split('.').map(str::to_string));
                out.push(Arg::Path(parts));
            } else if word.bytes().all(|b| b.is_ascii_digit()) {
                out.push(Arg::Str(word));
            } else {
                out.push(Arg::Path(vec![word]));
            }
        }
    }
    Ok(out)
}

fn resolve<'a>(arg: &'a Arg, root: &'a Value) -> Result<std::borrow::Cow<'a, Value>> {
    match arg {
        Arg::Str(s) => Ok(std::borrow::Cow::Owned(Value::String(s.clone()))),
        Arg::Path(parts) => {
            let mut cur = root;
            for part in parts.iter().skip(1) {
                cur = match cur {
                    Value::Object(m) => match m.get(part) {
                        Some(v) => v,
                        None => bail!("template: can't evaluate field {part}"),
                    },
                    Value::Null => return Ok(std::borrow::Cow::Owned(Value::Null)),
                    _ => bail!("template: can't evaluate field {part} in a non-object value"),
                };
            }
            Ok(std::borrow::Cow::Borrowed(cur))
        }
    }
}

fn apply(func: &str, args: &[Arg], root: &Value) -> Result<String> {
    let arg = |i: usize| -> Result<std::borrow::Cow<'_, Value>> {
        let a = args
            .get(i)
            .ok_or_else(|| anyhow!("template: {func}: missing argument"))?;
        resolve(a, root)
    };
    Ok(match func {
        "" | "print" => go_string(&*arg(0)?),
        "println" => go_string(&*arg(0)?) + "\n",
        "json" => serde_json::to_string(&*arg(0)?)?,
        "upper" => go_string(&*arg(0)?).to_uppercase(),
        "lower" => go_string(&*arg(0)?).to_lowercase(),
        "title" => {
            let s = go_string(&*arg(0)?);
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
        "len" => match &*arg(0)? {
            Value::Array(a) => a.len().to_string(),
            Value::Object(m) => m.len().to_string(),
            Value::String(s) => s.len().to_string(),
            _ => bail!("template: len of a non-collection"),
        },
        "join" => {
            let sep = go_string(&*arg(1)?);
            match &*arg(0)? {
                Value::Array(a) => a.iter().map(go_string).collect::<Vec<_>>().join(&sep),
                other => go_string(other),
            }
        }
        "index" => {
            let key = arg(1)?;
            match (&*arg(0)?, &*key) {
                (Value::Object(m), Value::String(k)) => m
                    .get(k)
                    .map(go_string)
                    .unwrap_or_else(|| "<no value>".into()),
                (Value::Array(a), Value::String(k)) => {
                    let i: usize = k.parse()?;
                    a.get(i)
                        .map(go_string)
                        .ok_or_else(|| anyhow!("template: index out of range: {i}"))?
                }
                _ => bail!("template: cannot index this value"),
            }
        }
        "pad" | "truncate" => {
            let s = go_string(&*arg(0)?);
            let n: usize = go_string(&*arg(1)?).parse()?;
            if func == "pad" {
                format!("{s:n$}")
            } else {
                s.chars().take(n).collect()
            }
        }
        other => bail!("template: function {other:?} not defined"),
    })
}

/// Prints a value as Go's `fmt` prints it in templates.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Lays out tab-separated lines as docker's tabwriter does (minimum cell width 10,
/// padding 3); the last column is not padded.
pub fn tabulate(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i < last {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

/// Prints `rows` through the `--format` template: a table with a header (titles from
/// `titles`) and aligned columns, or one rendered line per row.
pub fn print_rows(format: &str, rows: &[Value], titles: &dyn Fn(&str) -> String) -> Result<i32> {
    let tpl = Template::parse(format)?;
    let mut lines = Vec::with_capacity(rows.len() + 1);
    if tpl.is_table() {
        lines.push(tpl.header(titles));
    }
    for r in rows {
        lines.push(tpl.render(r)?);
    }
    if tpl.is_table() {
        print!("{}", tabulate(&lines));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(0)
}

/// Prints inspected objects as `inspect` does: through the `--format` template one per line,
/// or as one indented JSON array.
pub fn print_inspected(found: &[Value], format: Option<&str>) -> Result<()> {
    match format {
        Some(f) => {
            let tpl = Template::parse(f)?;
            for v in found {
                println!("{}", tpl.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(found)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_functions_tables() {
        let v = json!({"ID": "abc", "State": {"Status": "running"}, "Names": ["a", "b"], "L": {"k": "v"}});
        let t = |f: &str| Template::parse(f).unwrap().render(&v).unwrap();
        assert_eq!(t("{{.ID}}: {{.State.Status}}"), "abc: running");
        assert_eq!(t("{{json .State}}"), r#"{"Status":"running"}"#);
        assert_eq!(t("{{.State | json}}"), r#"{"Status":"running"}"#);
        assert_eq!(t(r#"{{join .Names ","}}"#), "a,b");
        assert_eq!(t(r#"{{index .L "k"}}"#), "v");
        assert_eq!(t("{{upper .ID}}"), "ABC");
        assert_eq!(t("{{.Names}}"), "[a b]");
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{.Nope}}").unwrap().render(&v).is_err());

        let tpl = Template::parse(r"table {{.ID}}\t{{.State.Status}}").unwrap();
        assert!(tpl.is_table());
        let header = tpl.header(&|f| f.to_uppercase());
        let lines = vec![header, tpl.render(&v).unwrap()];
        assert_eq!(
            tabulate(&lines),
            "ID        STATE.STATUS\nabc       running\n"
        );
    }
}
