//! Validation and defaults of `HostConfig.LogConfig`, as dockerd applies them at create.
//!
//! Berth's monitor writes Docker's json-file format; `none` is accepted (the driver that keeps
//! nothing) so requests that name it are not refused. Any other driver is refused at create
//! with dockerd's message, rather than silently logging to json-file.

use std::collections::HashMap;

use bollard_stubs::models::{HostConfig, HostConfigLogConfig};

use crate::error::{Error, Result};

/// The driver used when a request names none, as dockerd's default `log-driver`.
pub const DEFAULT_DRIVER: &str = "json-file";

/// Drivers this daemon accepts.
const KNOWN_DRIVERS: &[&str] = &["json-file", "none"];

/// Fills in the default driver (an absent or empty `Type`) and an empty `Config`, and refuses
/// drivers that are not registered.
pub fn normalize(hc: &mut HostConfig) -> Result<()> {
    let lc = hc
        .log_config
        .get_or_insert_with(HostConfigLogConfig::default);
    let driver = match lc.typ.as_deref() {
        None | Some("") => DEFAULT_DRIVER,
        Some(t) => t,
    };
    if !KNOWN_DRIVERS.contains(&driver) {
        return Err(Error::InvalidParameter(format!(
            "logger: no log driver named '{driver}' is registered"
        )));
    }
    lc.typ = Some(driver.to_owned());
    lc.config.get_or_insert_with(HashMap::new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(typ: Option<&str>, config: Option<&[(&str, &str)]>) -> HostConfig {
        HostConfig {
            log_config: Some(HostConfigLogConfig {
                typ: typ.map(str::to_owned),
                config: config.map(|c| {
                    c.iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn absent_becomes_json_file_with_empty_config() {
        let mut hc = HostConfig::default();
        normalize(&mut hc).unwrap();
        let lc = hc.log_config.unwrap();
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        assert_eq!(lc.config, Some(HashMap::new()));
    }

    #[test]
    fn empty_type_keeps_options() {
        let mut hc = with(Some(""), Some(&[("max-file", "100")]));
        normalize(&mut hc).unwrap();
        let lc = hc.log_config.unwrap();
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        assert_eq!(
            lc.config.unwrap().get("max-file").map(String::as_str),
            Some("100")
        );
    }

    #[test]
    fn none_is_accepted_and_unknown_refused() {
        let mut hc = with(Some("none"), None);
        normalize(&mut hc).unwrap();
        assert_eq!(hc.log_config.unwrap().typ.as_deref(), Some("none"));
        let err = normalize(&mut with(Some("asdf"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "logger: no log driver named 'asdf' is registered"
        );
    }
}
