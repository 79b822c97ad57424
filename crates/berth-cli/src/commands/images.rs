//! `images`, `rmi`, `tag`, `load`, `save`, `import`, `history`, `image prune`, `image inspect`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use super::{filters_json, human_size};
use crate::client::{encode, Client};
use crate::format::{go_string, print_rows};

/// `berth images` flags.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    all: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template ('table', 'json', or a Go template)
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Repository to list
    reference: Option<String>,
}

const DEFAULT_IMAGES: &str =
    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

/// `berth images`.
pub async fn images(c: &Client, a: &ImagesArgs) -> Result<i32> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let list: Vec<Value> = c
        .get_json(&format!(
            "/images/json?filters={}{}",
            encode(&filters_json(&filters)?),
            if a.all { "&all=1" } else { "" }
        ))
        .await?;
    let now = chrono::Utc::now().timestamp();
    let mut rows = Vec::new();
    for img in &list {
        let id = img["Id"].as_str().unwrap_or("");
        let short = if a.no_trunc {
            id.to_string()
        } else {
            id.trim_start_matches("sha256:").chars().take(12).collect()
        };
        let created = img["Created"].as_i64().unwrap_or(0);
        let base = json!({
            "ID": short,
            "CreatedSince": format!("{} ago", berth_daemon::time::human_duration(now - created)),
            "CreatedAt": chrono::DateTime::from_timestamp(created, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
                .unwrap_or_default(),
            "Size": human_size(img["Size"].as_f64().unwrap_or(0.0)),
            "Containers": img["Containers"].as_i64().map_or("N/A".to_string(), |n| n.to_string()),
            "Digest": img["RepoDigests"][0].as_str().and_then(|d| d.split_once('@')).map_or("<none>", |(_, d)| d),
        });
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if tags.is_empty() {
            let mut row = base.clone();
            row["Repository"] = json!("<none>");
            row["Tag"] = json!("<none>");
            rows.push(row);
        }
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t, "<none>"));
            let mut row = base.clone();
            row["Repository"] = json!(repo);
            row["Tag"] = json!(tag);
            rows.push(row);
        }
    }
    if a.quiet {
        let mut seen = Vec::new();
        for r in &rows {
            let id = go_string(&r["ID"]);
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(0);
    }
    let format = match a.format.as_deref() {
        None | Some("") | Some("table") if a.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        }
        None | Some("") | Some("table") => DEFAULT_IMAGES,
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    print_rows(format, &rows, &|f| match f {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    })
}

/// `berth rmi`.
pub async fn rmi(c: &Client, force: bool, names: &[String]) -> Result<i32> {
    let mut code = 0;
    for n in names {
        let path = format!("/images/{}?force={}", encode(n), u8::from(force));
        let result = async {
            let resp = c.request(Method::DELETE, &path, None).await?;
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(serde_json::from_slice::<Vec<Value>>(&bytes)?)
        }
        .await;
        match result {
            Ok(items) => {
                for item in items {
                    if let Some(t) = item["Untagged"].as_str() {
                        println!("Untagged: {t}");
                    }
                    if let Some(d) = item["Deleted"].as_str() {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(err) => {
                eprintln!("{err}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `berth tag SOURCE TARGET`.
pub async fn tag(c: &Client, source: &str, target: &str) -> Result<i32> {
    let (repo, tag) = match target.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (target, "latest"),
    };
    let path = format!(
        "/images/{}/tag?repo={}&tag={}",
        encode(source),
        encode(repo),
        encode(tag)
    );
    c.request(Method::POST, &path, None).await?;
    Ok(0)
}

/// Prints a JSON-message stream (`{"stream":..}`, `{"status":..}`, `{"error":..}`).
async fn print_messages(resp: hyper::Response<hyper::body::Incoming>) -> Result<i32> {
    let outcome = crate::progress::Renderer::stdout().render(resp).await?;
    match outcome.error {
        Some(e) => {
            eprintln!("{e}");
            Ok(1)
        }
        None => Ok(0),
    }
}

/// `berth load [-i FILE]` (stdin when no file).
pub async fn load(c: &Client, input: Option<&str>) -> Result<i32> {
    let data = match input {
        Some(p) => tokio::fs::read(p)
            .await
            .with_context(|| format!("read {p}"))?,
        None => {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            tokio::io::stdin().read_to_end(&mut buf).await?;
            buf
        }
    };
    if data.is_empty() {
        bail!("requested load from stdin, but stdin is empty");
    }
    let resp = c
        .request_body(
            Method::POST,
            "/images/load?quiet=1",
            data,
            "application/x-tar",
        )
        .await?;
    print_messages(resp).await
}

/// `berth import FILE|- [REPO[:TAG]] [-c CHANGE] [-m MESSAGE]`.
pub async fn import(
    c: &Client,
    file: &str,
    reference: Option<&str>,
    changes: &[String],
    message: Option<&str>,
) -> Result<i32> {
    let data = if file == "-" {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        tokio::io::stdin().read_to_end(&mut buf).await?;
        buf
    } else {
        tokio::fs::read(file)
            .await
            .with_context(|| format!("read {file}"))?
    };
    let mut q = vec!["fromSrc=-".to_string()];
    if let Some(r) = reference {
        let (repo, tag) = match r.rsplit_once(':') {
            Some((repo, t)) if !t.contains('/') => (repo, t),
            _ => (r, ""),
        };
        q.push(format!("repo={}", encode(repo)));
        if !tag.is_empty() {
            q.push(format!("tag={}", encode(tag)));
        }
    }
    for ch in changes {
        q.push(format!("changes={}", encode(ch)));
    }
    if let Some(m) = message {
        q.push(format!("message={}", encode(m)));
    }
    let resp = c
        .request_body(
            Method::POST,
            &format!("/images/create?{}", q.join("&")),
            data,
            "application/x-tar",
        )
        .await?;
    print_messages(resp).await
}

/// `berth save [-o FILE] IMAGE...` (stdout when no file).
pub async fn save(c: &Client, output: Option<&str>, names: &[String]) -> Result<i32> {
    let q: Vec<String> = names
        .iter()
        .map(|n| format!("names={}", encode(n)))
        .collect();
    if output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let resp = c
        .request(Method::GET, &format!("/images/get?{}", q.join("&")), None)
        .await?;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("create {p}"))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// `berth history IMAGE`.
pub async fn history(c: &Client, name: &str, no_trunc: bool, format: Option<&str>) -> Result<i32> {
    let items: Vec<Value> = c
        .get_json(&format!("/images/{}/history", encode(name)))
        .await?;
    let now = chrono::Utc::now().timestamp();
    let rows: Vec<Value> = items
        .iter()
        .map(|h| {
            let id = h["Id"].as_str().unwrap_or("<missing>");
            let id = if no_trunc || id == "<missing>" {
                id.to_string()
            } else {
                id.trim_start_matches("sha256:").chars().take(12).collect()
            };
            let by = h["CreatedBy"].as_str().unwrap_or("");
            let by = if no_trunc || by.chars().count() <= 45 {
                by.to_string()
            } else {
                by.chars().take(44).collect::<String>() + "…"
            };
            json!({
                "ID": id,
                "CreatedSince": format!("{} ago", berth_daemon::time::human_duration(now - h["Created"].as_i64().unwrap_or(0))),
                "CreatedBy": by,
                "Size": human_size(h["Size"].as_f64().unwrap_or(0.0)),
                "Comment": h["Comment"],
            })
        })
        .collect();
    print_rows(
        format
            .unwrap_or("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"),
        &rows,
        &|f| match f {
            "ID" => "IMAGE".into(),
            "CreatedSince" => "CREATED".into(),
            "CreatedBy" => "CREATED BY".into(),
            other => other.to_uppercase(),
        },
    )
}

/// `berth image prune [-a] [-f]`.
pub async fn prune(c: &Client, all: bool, force: bool) -> Result<i32> {
    if !force {
        let what = if all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let filters = if all {
        r#"{"dangling":{"false":true}}"#
    } else {
        "{}"
    };
    let resp = c
        .request(
            Method::POST,
            &format!("/images/prune?filters={}", encode(filters)),
            Some(Vec::new()),
        )
        .await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    if let Some(items) = v["ImagesDeleted"].as_array().filter(|a| !a.is_empty()) {
        println!("Deleted Images:");
        for item in items {
            if let Some(t) = item["Untagged"].as_str() {
                println!("untagged: {t}");
            }
            if let Some(d) = item["Deleted"].as_str() {
                println!("deleted: {d}");
            }
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(v["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}
