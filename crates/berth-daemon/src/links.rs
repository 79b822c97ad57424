//! Docker's legacy container links (`--link name:alias`, `HostConfig.Links`): the environment
//! a container gets about each container it links to, and removing a link
//! (`DELETE /containers/{name}/{alias}?link=1`). Name resolution for links is the network
//! crate's (hosts entries and the embedded DNS).

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::store::ContainerRecord;

/// One entry of `HostConfig.Links`, as clients send it (`name:alias`, or `name` alone) or as
/// dockerd stores it (`/name:/container/alias`): the linked container and the alias.
fn parse_link(link: &str) -> (&str, &str) {
    let (name, alias) = link.split_once(':').unwrap_or((link, link));
    let name = name.trim_start_matches('/');
    let alias = alias.rsplit('/').next().unwrap_or(alias);
    (name, alias)
}

impl Daemon {
    /// The variables Docker sets for `r`'s links: `ALIAS_NAME`, `ALIAS_ENV_*` from the linked
    /// container's environment, and `ALIAS_PORT*` for its exposed ports at its address on a
    /// shared network. A link to a container that does not exist is an error, as in dockerd.
    pub fn link_env(&self, r: &ContainerRecord) -> Result<Vec<String>> {
        let mut env = Vec::new();
        let own_name = r.name.trim_start_matches('/');
        for link in r.host_config.links.iter().flatten() {
            let (name, alias) = parse_link(link);
            let target = self.containers.get(name).map_err(|_| {
                Error::InvalidParameter(format!(
                    "could not get container for {name}: No such container: {name}"
                ))
            })?;
            let prefix = alias.to_ascii_uppercase().replace('-', "_");
            env.push(format!("{prefix}_NAME=/{own_name}/{alias}"));
            let ip = self
                .network
                .endpoints_of(&target.id)
                .into_iter()
                .map(|(_, ep)| ep.ip)
                .next();
            if let Some(ip) = ip {
                let mut ports: Vec<(u16, String)> = target
                    .config
                    .exposed_ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                        Some((port.parse().ok()?, proto.to_ascii_lowercase()))
                    })
                    .collect();
                ports.sort();
                if let Some((port, proto)) = ports.first() {
                    env.push(format!("{prefix}_PORT={proto}://{ip}:{port}"));
                }
                for (port, proto) in &ports {
                    let key = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
                    env.push(format!("{key}={proto}://{ip}:{port}"));
                    env.push(format!("{key}_ADDR={ip}"));
                    env.push(format!("{key}_PORT={port}"));
                    env.push(format!("{key}_PROTO={proto}"));
                }
            }
            for kv in target.config.env.iter().flatten() {
                if let Some((k, v)) = kv.split_once('=') {
                    if k != "HOME" && k != "PATH" {
                        env.push(format!("{prefix}_ENV_{k}={v}"));
                    }
                }
            }
        }
        Ok(env)
    }

    /// Removes container `parent`'s link named `alias` (dockerd's `rm --link`); the
    /// containers themselves stay.
    pub fn remove_link(&self, parent: &str, alias: &str) -> Result<()> {
        let record = self.containers.get(parent)?;
        let (_, found) = self.containers.update(&record.id, |r| {
            let Some(links) = r.host_config.links.as_mut() else {
                return Ok(false);
            };
            let before = links.len();
            links.retain(|l| parse_link(l).1 != alias);
            Ok(links.len() != before)
        })?;
        if !found {
            return Err(Error::NotFound(format!(
                "Could not find link {alias} of container {parent}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_link;

    #[test]
    fn link_notations() {
        assert_eq!(parse_link("db:database"), ("db", "database"));
        assert_eq!(parse_link("db"), ("db", "db"));
        assert_eq!(parse_link("/db:/web/database"), ("db", "database"));
    }
}
