//! Mount specifications, shared by the daemon and the CLI.
//!
//! - [`parse_bind`]: a `-v`/`HostConfig.Binds` entry (`src:dst[:opts]` or just `dst`) into
//!   Docker's API [`Mount`], as dockerd's Linux parser reads it.
//! - [`parse_mount_flag`]: a `--mount type=...,src=...,dst=...` value, as the docker CLI
//!   reads it.
//! - [`validate_mount`]: the daemon's checks of a [`Mount`], with dockerd's messages.
//! - [`tmpfs_options`], [`ram_in_bytes`]: tmpfs sizes and modes as mount options.

use std::path::{Component, Path};

use bollard_stubs::models::{
    Mount, MountBindOptions, MountBindOptionsPropagationEnum as Propagation, MountTmpfsOptions,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
};

use crate::error::{Error, Result};
use crate::store::valid_name;

/// A parsed `-v` entry: the mount, and the mode string as given (inspect's `Mode`).
#[derive(Debug, Clone, PartialEq)]
pub struct BindSpec {
    /// The equivalent API mount (`bind` for an absolute source, else `volume`).
    pub mount: Mount,
    /// The options after the second colon, verbatim (`ro,Z`).
    pub mode: String,
}

fn invalid_spec(raw: &str) -> Error {
    Error::InvalidSpec(format!("invalid volume specification: '{raw}'"))
}

/// Checks one `-v` mode list: each of ro/rw, z/Z, propagation, nocopy and consistency at
/// most once, nothing else.
fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut seen = [0u8; 5];
    for word in mode.split(',') {
        let group = match word {
            "ro" | "rw" => 0,
            // SELinux relabelling: Berth runs without SELinux labels, so these are accepted
            // (scripts written for Fedora hosts pass them) and have no effect, as on dockerd
            // without --selinux-enabled.
            "z" | "Z" => 1,
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => 2,
            "nocopy" => 3,
            "consistent" | "cached" | "delegated" => 4,
            _ => return false,
        };
        seen[group] += 1;
        if seen[group] > 1 {
            return false;
        }
    }
    true
}

/// Parses a `-v` / `Binds` entry. An absolute source is a bind mount, a name is a volume
/// (created on demand), and a lone destination is an anonymous volume.
pub fn parse_bind(raw: &str) -> Result<BindSpec> {
    if raw.matches(':').count() > 2 {
        return Err(invalid_spec(raw));
    }
    let parts: Vec<&str> = raw.splitn(3, ':').collect();
    if parts[0].is_empty() {
        return Err(invalid_spec(raw));
    }
    let (source, target, mode) = match parts.as_slice() {
        [t] => ("", *t, ""),
        [_, m] if valid_mode(m) => return Err(invalid_spec(raw)),
        [s, t] => (*s, *t, ""),
        [s, t, m] => (*s, *t, *m),
        _ => return Err(invalid_spec(raw)),
    };
    if !valid_mode(mode) {
        return Err(Error::InvalidSpec(format!("invalid mode: {mode}")));
    }
    let words: Vec<&str> = mode.split(',').filter(|w| !w.is_empty()).collect();
    let typ = if source.starts_with('/') {
        MountType::BIND
    } else {
        MountType::VOLUME
    };
    let mut mount = Mount {
        typ: Some(typ),
        source: (!source.is_empty()).then(|| source.to_string()),
        target: Some(target.to_string()),
        read_only: Some(words.contains(&"ro")),
        ..Default::default()
    };
    if words.contains(&"nocopy") {
        mount.volume_options = Some(MountVolumeOptions {
            no_copy: Some(true),
            ..Default::default()
        });
    }
    if let Some(p) = words.iter().find_map(|w| w.parse::<Propagation>().ok()) {
        mount.bind_options = Some(MountBindOptions {
            propagation: Some(p),
            // Binds create a missing source directory, unlike Mounts.
            create_mountpoint: Some(true),
            ..Default::default()
        });
    } else if typ == MountType::BIND {
        mount.bind_options = Some(MountBindOptions {
            create_mountpoint: Some(true),
            ..Default::default()
        });
    }
    validate_mount(&mount)?;
    Ok(BindSpec {
        mount,
        mode: mode.to_string(),
    })
}

fn mount_config_error(typ: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(format!("invalid mount config for type \"{typ}\": {what}"))
}

/// Validates an API mount as dockerd does before creating a container. The existence of
/// bind sources is checked separately ([`check_bind_source`]).
pub fn validate_mount(m: &Mount) -> Result<()> {
    let typ = m.typ.map(|t| t.to_string()).unwrap_or_default();
    let err = |what: String| mount_config_error(&typ, what);
    let target = m.target.as_deref().unwrap_or("");
    if target.is_empty() {
        return Err(err("field Target must not be empty".into()));
    }
    if !target.starts_with('/') {
        return Err(err(format!(
            "invalid mount path: '{target}' mount path must be absolute"
        )));
    }
    if Path::new(target) == Path::new("/") {
        return Err(err("invalid specification: destination can't be '/'".into()));
    }
    let source = m.source.as_deref().unwrap_or("");
    match m.typ {
        Some(MountType::BIND) => {
            if source.is_empty() {
                return Err(err("field Source must not be empty".into()));
            }
            if m.volume_options.is_some() {
                return Err(err("field VolumeOptions must not be specified".into()));
            }
            if m.tmpfs_options.is_some() {
                return Err(err("field TmpfsOptions must not be specified".into()));
            }
            if !source.starts_with('/') {
                return Err(err(format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
        }
        Some(MountType::VOLUME) => {
            if m.bind_options
                .as_ref()
                .is_some_and(|b| b.propagation.is_some())
            {
                return Err(err("field BindOptions must not be specified".into()));
            }
            if m.tmpfs_options.is_some() {
                return Err(err("field TmpfsOptions must not be specified".into()));
            }
            if !source.is_empty() && !valid_name(source) {
                return Err(err(format!(
                    "\"{source}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                )));
            }
            let subpath = m
                .volume_options
                .as_ref()
                .and_then(|v| v.subpath.as_deref())
                .unwrap_or("");
            if !subpath.is_empty() {
                let p = Path::new(subpath);
                if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
                    return Err(err(format!(
                        "subpath must be a relative path within the volume: {subpath}"
                    )));
                }
            }
        }
        Some(MountType::TMPFS) => {
            if !source.is_empty() {
                return Err(err("field Source must not be specified".into()));
            }
            if m.bind_options.is_some() {
                return Err(err("field BindOptions must not be specified".into()));
            }
            if m.volume_options.is_some() {
                return Err(err("field VolumeOptions must not be specified".into()));
            }
            tmpfs_options(m.tmpfs_options.as_ref()).map_err(|e| err(e.to_string()))?;
        }
        _ => return Err(err("mount type unknown".into())),
    }
    Ok(())
}

/// Dockerd's check of a `Mount`'s bind source, which must exist unless `CreateMountpoint`.
pub fn check_bind_source(m: &Mount) -> Result<()> {
    let source = m.source.as_deref().unwrap_or("");
    let create = m
        .bind_options
        .as_ref()
        .and_then(|b| b.create_mountpoint)
        .unwrap_or(false);
    if m.typ == Some(MountType::BIND) && !create && !Path::new(source).exists() {
        return Err(mount_config_error(
            "bind",
            format!("bind source path does not exist: {source}"),
        ));
    }
    Ok(())
}

/// The propagation a bind mount gets: its own, else `rprivate` (dockerd's default).
pub fn propagation(m: &Mount) -> String {
    m.bind_options
        .as_ref()
        .and_then(|b| b.propagation)
        .filter(|p| *p != Propagation::EMPTY)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "rprivate".into())
}

/// tmpfs mount options (`size=N`, `mode=O`, and the raw `Options`) of a `Mount`.
pub fn tmpfs_options(opts: Option<&MountTmpfsOptions>) -> Result<Vec<String>> {
    let Some(o) = opts else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(size) = o.size_bytes.filter(|s| *s != 0) {
        if size < 0 {
            return Err(Error::InvalidSpec(format!("invalid tmpfs size {size}")));
        }
        out.push(format!("size={size}"));
    }
    if let Some(mode) = o.mode.filter(|m| *m != 0) {
        if !(0..=0o7777).contains(&mode) {
            return Err(Error::InvalidSpec(format!("invalid tmpfs mode {mode:o}")));
        }
        out.push(format!("mode={mode:o}"));
    }
    for opt in o.options.iter().flatten() {
        match opt.as_slice() {
            [flag] => out.push(flag.clone()),
            [k, v] => out.push(format!("{k}={v}")),
            _ => return Err(Error::InvalidSpec(format!("invalid tmpfs option {opt:?}"))),
        }
    }
    Ok(out)
}

/// Docker's `RAMInBytes`: `10m`, `1.5g`, `512k`, `64MiB`, `1024` (binary units).
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "p" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    // Sizes given on a command line are far below i64::MAX.
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as i64)
}

/// Splits a CSV record as Go's `encoding/csv` reads one line: commas separate fields, and a
/// field in double quotes may contain commas (`""` is a quote).
fn csv_fields(s: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(Error::InvalidSpec(format!(
            "invalid argument \"{s}\" for \"--mount\" flag: extraneous or missing \" in quoted-field"
        )));
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(Error::InvalidSpec(format!("invalid value for {key}: {v}"))),
    }
}

/// Parses a `--mount` value as the docker CLI does (`type` defaults to `volume`).
pub fn parse_mount_flag(value: &str) -> Result<Mount> {
    let mut m = Mount {
        typ: Some(MountType::VOLUME),
        ..Default::default()
    };
    let mut bind = MountBindOptions::default();
    let mut vol = MountVolumeOptions::default();
    let mut tmpfs = MountTmpfsOptions::default();
    let (mut has_bind, mut has_vol, mut has_tmpfs) = (false, false, false);
    for field in csv_fields(value)? {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => m.read_only = Some(true),
                "volume-nocopy" => {
                    vol.no_copy = Some(true);
                    has_vol = true;
                }
                "bind-nonrecursive" => {
                    bind.non_recursive = Some(true);
                    has_bind = true;
                }
                _ => {
                    return Err(Error::InvalidSpec(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )))
                }
            }
            continue;
        };
        match key.as_str() {
            "type" => {
                let t = val.to_ascii_lowercase();
                m.typ = Some(
                    t.parse::<MountType>()
                        .map_err(|()| Error::InvalidSpec(format!("invalid mount type {t:?}")))?,
                );
            }
            "source" | "src" => m.source = Some(val),
            "target" | "dst" | "destination" => m.target = Some(val),
            "readonly" | "ro" => m.read_only = Some(parse_bool(&key, &val)?),
            "consistency" => m.consistency = Some(val.to_ascii_lowercase()),
            "bind-propagation" => {
                let p = val
                    .to_ascii_lowercase()
                    .parse::<Propagation>()
                    .map_err(|_| Error::InvalidSpec(format!("invalid value for {key}: {val}")))?;
                bind.propagation = Some(p);
                has_bind = true;
            }
            "bind-nonrecursive" => {
                bind.non_recursive = Some(parse_bool(&key, &val)?);
                has_bind = true;
            }
            "bind-create-mountpoint" => {
                bind.create_mountpoint = Some(parse_bool(&key, &val)?);
                has_bind = true;
            }
            "volume-subpath" => {
                vol.subpath = Some(val);
                has_vol = true;
            }
            "volume-nocopy" => {
                vol.no_copy = Some(parse_bool(&key, &val)?);
                has_vol = true;
            }
            "volume-label" => {
                let (k, v) = val.split_once('=').unwrap_or((val.as_str(), ""));
                vol.labels
                    .get_or_insert_with(Default::default)
                    .insert(k.to_string(), v.to_string());
                has_vol = true;
            }
            "volume-driver" => {
                vol.driver_config
                    .get_or_insert_with(MountVolumeOptionsDriverConfig::default)
                    .name = Some(val);
                has_vol = true;
            }
            "volume-opt" => {
                let Some((k, v)) = val.split_once('=') else {
                    return Err(Error::InvalidSpec(format!(
                        "invalid value for volume-opt: {val}"
                    )));
                };
                vol.driver_config
                    .get_or_insert_with(MountVolumeOptionsDriverConfig::default)
                    .options
                    .get_or_insert_with(Default::default)
                    .insert(k.to_string(), v.to_string());
                has_vol = true;
            }
            "tmpfs-size" => {
                let size = ram_in_bytes(&val)
                    .ok_or_else(|| Error::InvalidSpec(format!("invalid value for {key}: {val}")))?;
                tmpfs.size_bytes = Some(size);
                has_tmpfs = true;
            }
            "tmpfs-mode" => {
                let mode = i64::from_str_radix(&val, 8)
                    .map_err(|_| Error::InvalidSpec(format!("invalid value for {key}: {val}")))?;
                tmpfs.mode = Some(mode);
                has_tmpfs = true;
            }
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "unexpected key '{key}' in '{field}'"
                )))
            }
        }
    }
    let typ = m.typ.unwrap_or(MountType::VOLUME);
    if m.target.as_deref().is_none_or(str::is_empty) {
        return Err(Error::InvalidSpec("target is required".into()));
    }
    let mix = |prefix: &str| {
        Error::InvalidSpec(format!(
            "cannot mix '{prefix}-*' options with mount type '{typ}'"
        ))
    };
    if has_bind && typ != MountType::BIND {
        return Err(mix("bind"));
    }
    if has_vol && typ != MountType::VOLUME {
        return Err(mix("volume"));
    }
    if has_tmpfs && typ != MountType::TMPFS {
        return Err(mix("tmpfs"));
    }
    m.bind_options = has_bind.then_some(bind);
    m.volume_options = has_vol.then_some(vol);
    m.tmpfs_options = has_tmpfs.then_some(tmpfs);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let b = parse_bind("/src:/dst").unwrap();
        assert_eq!(b.mount.typ, Some(MountType::BIND));
        assert_eq!(b.mount.source.as_deref(), Some("/src"));
        assert_eq!(b.mount.target.as_deref(), Some("/dst"));
        assert_eq!(b.mount.read_only, Some(false));
        assert_eq!(propagation(&b.mount), "rprivate");
        assert!(
            check_bind_source(&b.mount).is_ok(),
            "binds create their source"
        );

        let b = parse_bind("/src:/dst:ro,rshared,Z").unwrap();
        assert_eq!(b.mount.read_only, Some(true));
        assert_eq!(propagation(&b.mount), "rshared");
        assert_eq!(b.mode, "ro,rshared,Z");

        let b = parse_bind("data:/var/lib/data:nocopy").unwrap();
        assert_eq!(b.mount.typ, Some(MountType::VOLUME));
        assert_eq!(b.mount.volume_options.unwrap().no_copy, Some(true));

        let b = parse_bind("/anon").unwrap();
        assert_eq!(b.mount.typ, Some(MountType::VOLUME));
        assert_eq!(b.mount.source, None);
    }

    #[test]
    fn bad_binds() {
        let msg = |s: &str| parse_bind(s).unwrap_err().to_string();
        assert_eq!(msg(""), "invalid volume specification: ''");
        assert_eq!(msg("a:b:c:d"), "invalid volume specification: 'a:b:c:d'");
        assert_eq!(msg("/foo:rw"), "invalid volume specification: '/foo:rw'");
        assert_eq!(msg("/a:/b:bogus"), "invalid mode: bogus");
        assert_eq!(msg("/a:/b:ro,rw"), "invalid mode: ro,rw");
        assert_eq!(
            msg("/a:rel"),
            "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"
        );
        assert_eq!(
            msg("/a:/"),
            "invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        assert!(msg("bad name:/x").contains("includes invalid characters for a local volume name"));
    }

    #[test]
    fn mount_flags() {
        let m =
            parse_mount_flag("type=bind,src=/h,dst=/c,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(m.typ, Some(MountType::BIND));
        assert_eq!(m.read_only, Some(true));
        assert_eq!(propagation(&m), "rslave");
        assert!(validate_mount(&m).is_ok());

        let m = parse_mount_flag(
            "source=v1,target=/data,volume-nocopy,volume-subpath=sub,volume-opt=type=tmpfs,volume-label=a=b",
        )
        .unwrap();
        assert_eq!(m.typ, Some(MountType::VOLUME));
        let vo = m.volume_options.clone().unwrap();
        assert_eq!(vo.no_copy, Some(true));
        assert_eq!(vo.subpath.as_deref(), Some("sub"));
        assert_eq!(
            vo.driver_config
                .unwrap()
                .options
                .unwrap()
                .get("type")
                .map(String::as_str),
            Some("tmpfs")
        );
        assert!(validate_mount(&m).is_ok());

        let m = parse_mount_flag("type=tmpfs,dst=/t,tmpfs-size=10m,tmpfs-mode=1770").unwrap();
        assert_eq!(
            tmpfs_options(m.tmpfs_options.as_ref()).unwrap(),
            vec!["size=10485760".to_string(), "mode=1770".into()]
        );
        assert!(validate_mount(&m).is_ok());

        let m = parse_mount_flag("\"type=bind\",\"src=/a,b\",dst=/c").unwrap();
        assert_eq!(m.source.as_deref(), Some("/a,b"));

        let msg = |s: &str| parse_mount_flag(s).unwrap_err().to_string();
        assert_eq!(msg("type=bind,src=/a"), "target is required");
        assert_eq!(msg("dst=/a,foo=bar"), "unexpected key 'foo' in 'foo=bar'");
        assert_eq!(
            msg("dst=/a,junk"),
            "invalid field 'junk' must be a key=value pair"
        );
        assert_eq!(
            msg("type=bind,src=/a,dst=/b,volume-nocopy"),
            "cannot mix 'volume-*' options with mount type 'bind'"
        );
        assert_eq!(
            msg("dst=/a,readonly=maybe"),
            "invalid value for readonly: maybe"
        );
    }

    #[test]
    fn mount_validation() {
        let bind = |src: &str| Mount {
            typ: Some(MountType::BIND),
            source: Some(src.into()),
            target: Some("/x".into()),
            ..Default::default()
        };
        assert_eq!(
            check_bind_source(&bind("/nonexistent-berth")).unwrap_err().to_string(),
            "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-berth"
        );
        assert!(check_bind_source(&bind("/tmp")).is_ok());
        let tmpfs_with_source = Mount {
            typ: Some(MountType::TMPFS),
            source: Some("x".into()),
            target: Some("/t".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_mount(&tmpfs_with_source).unwrap_err().to_string(),
            "invalid mount config for type \"tmpfs\": field Source must not be specified"
        );
        let escape = Mount {
            typ: Some(MountType::VOLUME),
            source: Some("v".repeat(2)),
            target: Some("/t".into()),
            volume_options: Some(MountVolumeOptions {
                subpath: Some("../etc".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(validate_mount(&escape).is_err());
        let no_target = Mount {
            typ: Some(MountType::VOLUME),
            ..Default::default()
        };
        assert_eq!(
            validate_mount(&no_target).unwrap_err().to_string(),
            "invalid mount config for type \"volume\": field Target must not be empty"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("10m"), Some(10 << 20));
        assert_eq!(ram_in_bytes("3M"), Some(3 << 20));
        assert_eq!(ram_in_bytes("64MiB"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5g"), Some(3 << 29));
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("ten"), None);
        assert_eq!(ram_in_bytes("1x"), None);
    }
}
