//! `POST /containers/{id}/update` (`docker update`): new resource limits and restart policy.
//!
//! The request is checked as dockerd checks it (the same messages, since clients show them),
//! merged into the record's `HostConfig`, applied to a running container's cgroup through
//! `berth-runtime`, and only then persisted, so a restart starts with the new limits and a
//! failed update leaves both the cgroup and the record as they were.

use std::sync::Arc;

use bollard_stubs::models::{ContainerUpdateBody, HostConfig, RestartPolicyNameEnum};

use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// dockerd's lower bound for memory limits and reservations.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Checks the request on its own (dockerd's `verifyContainerSettings` for an update).
fn verify(u: &ContainerUpdateBody, ncpu: usize) -> Result<()> {
    let bad = |m: &str| Err(Error::InvalidParameter(m.to_string()));
    let memory = u.memory.unwrap_or(0);
    if memory != 0 && memory < MIN_MEMORY {
        return bad("Minimum memory limit allowed is 6MB");
    }
    let swap = u.memory_swap.unwrap_or(0);
    if memory > 0 && swap > 0 && swap < memory {
        return bad("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    let reservation = u.memory_reservation.unwrap_or(0);
    if reservation != 0 && reservation < MIN_MEMORY {
        return bad("Minimum memory reservation allowed is 6MB");
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return bad(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        );
    }
    let nano = u.nano_cpus.unwrap_or(0);
    if nano > 0 && u.cpu_period.unwrap_or(0) > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    }
    if nano > 0 && u.cpu_quota.unwrap_or(0) > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
    }
    let ncpu = i64::try_from(ncpu).unwrap_or(i64::MAX);
    if nano < 0 || nano > ncpu.saturating_mul(1_000_000_000) {
        return Err(Error::InvalidParameter(format!(
            "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )));
    }
    let period = u.cpu_period.unwrap_or(0);
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return bad(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        );
    }
    let quota = u.cpu_quota.unwrap_or(0);
    if quota > 0 && quota < 1000 {
        return bad("CPU cfs quota can not be less than 1ms (i.e. 1000)");
    }
    let weight = u.blkio_weight.unwrap_or(0);
    if weight > 0 && !(10..=1000).contains(&weight) {
        return bad("Range of blkio weight is from 10 to 1000");
    }
    if let Some(cpus) = u.cpuset_cpus.as_deref().filter(|c| !c.is_empty()) {
        let available = ncpu.saturating_sub(1);
        let ok = cpus.split(',').all(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            matches!((a.trim().parse::<i64>(), b.trim().parse::<i64>()),
                (Ok(a), Ok(b)) if a <= b && b <= available)
        });
        if !ok {
            return Err(Error::InvalidParameter(format!(
                "Requested CPUs are not available - requested {cpus}, available: 0-{available}"
            )));
        }
    }
    Ok(())
}

/// The memory+swap limit in force: dockerd stores twice the memory when none was given.
fn effective_swap(hc: &HostConfig) -> i64 {
    match (hc.memory.unwrap_or(0), hc.memory_swap.unwrap_or(0)) {
        (m, 0) if m > 0 => m * 2,
        (_, s) => s,
    }
}

/// Merges an update into a host config (dockerd's `UpdateContainer`); returns the limits to
/// apply to a running container: only what changed.
fn merge(
    hc: &mut HostConfig,
    u: &ContainerUpdateBody,
) -> std::result::Result<berth_runtime::Limits, String> {
    let set = |v: Option<i64>| v.filter(|&v| v != 0);
    // NanoCpus is a quota over a fixed period: one may not be updated once the other is set.
    let (nano, period, quota) = (
        set(u.nano_cpus).unwrap_or(0),
        set(u.cpu_period).unwrap_or(0),
        set(u.cpu_quota).unwrap_or(0),
    );
    if nano > 0 && hc.cpu_period.unwrap_or(0) > 0 {
        return Err(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set"
                .into(),
        );
    }
    if nano > 0 && hc.cpu_quota.unwrap_or(0) > 0 {
        return Err(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"
                .into(),
        );
    }
    if period > 0 && hc.nano_cpus.unwrap_or(0) > 0 {
        return Err(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set"
                .into(),
        );
    }
    if quota > 0 && hc.nano_cpus.unwrap_or(0) > 0 {
        return Err(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"
                .into(),
        );
    }
    let mut live = berth_runtime::Limits::default();
    if let Some(w) = u.blkio_weight.filter(|&w| w != 0) {
        hc.blkio_weight = Some(w);
        live.blkio_weight = Some(w);
    }
    if let Some(s) = set(u.cpu_shares) {
        hc.cpu_shares = Some(s);
        live.cpu_shares = u64::try_from(s).ok();
    }
    if nano != 0 {
        hc.nano_cpus = Some(nano);
        live.cpu_period = Some(100_000);
        live.cpu_quota = Some(nano * 100_000 / 1_000_000_000);
    }
    if period != 0 {
        hc.cpu_period = Some(period);
        live.cpu_period = u64::try_from(period).ok();
    }
    if quota != 0 {
        hc.cpu_quota = Some(quota);
        live.cpu_quota = Some(quota);
    }
    if let Some(c) = u.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
        live.cpuset_cpus = Some(c.clone());
        hc.cpuset_cpus = Some(c);
    }
    if let Some(m) = u.cpuset_mems.clone().filter(|m| !m.is_empty()) {
        live.cpuset_mems = Some(m.clone());
        hc.cpuset_mems = Some(m);
    }
    let memory = set(u.memory);
    let swap = set(u.memory_swap);
    if let Some(m) = memory {
        let current_swap = effective_swap(hc);
        if m > current_swap && swap.is_none() {
            return Err("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time".into());
        }
        // The implicit swap limit stays what it was, as in dockerd (where it is stored).
        if hc.memory_swap.unwrap_or(0) == 0 && swap.is_none() {
            hc.memory_swap = Some(current_swap);
        }
        hc.memory = Some(m);
    }
    if let Some(s) = swap {
        hc.memory_swap = Some(s);
    }
    if memory.is_some() || swap.is_some() {
        live.memory = hc.memory.filter(|&m| m > 0);
        live.memory_swap = Some(effective_swap(hc)).filter(|&s| s != 0);
        live.oom_kill_disable = Some(hc.oom_kill_disable.unwrap_or(false));
    }
    if let Some(r) = set(u.memory_reservation) {
        hc.memory_reservation = Some(r);
        live.memory_reservation = Some(r);
    }
    if let Some(p) = u.pids_limit {
        // 0 and -1 both mean unlimited.
        hc.pids_limit = Some(p);
        live.pids_limit = Some(p);
    }
    Ok(live)
}

impl Daemon {
    /// `POST /containers/{id}/update`; returns dockerd's warnings (none).
    pub async fn update_container(
        self: &Arc<Self>,
        key: &str,
        u: ContainerUpdateBody,
    ) -> Result<Vec<String>> {
        verify(&u, self.host.ncpu)?;
        let record = self.containers.get(key)?;
        // dockerd answers 409 for an update that conflicts with the container's settings.
        let cannot =
            |m: String| Error::Conflict(format!("Cannot update container {}: {m}", record.id));
        let policy = u
            .restart_policy
            .clone()
            .filter(|p| !matches!(p.name, None | Some(RestartPolicyNameEnum::EMPTY)));
        if let Some(p) = &policy {
            let none = matches!(p.name, Some(RestartPolicyNameEnum::NO));
            if record.host_config.auto_remove == Some(true) && !none {
                return Err(cannot(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                ));
            }
            let retries = p.maximum_retry_count.unwrap_or(0);
            let on_failure = matches!(p.name, Some(RestartPolicyNameEnum::ON_FAILURE));
            if retries < 0 && on_failure {
                return Err(Error::InvalidParameter(
                    "invalid restart policy: maximum retry count can't be negative".into(),
                ));
            }
            if retries != 0 && !on_failure {
                return Err(Error::InvalidParameter(format!(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure' (got '{}')",
                    p.name.map(|n| n.to_string()).unwrap_or_default()
                )));
            }
        }
        let mut hc = record.host_config.clone();
        let live = merge(&mut hc, &u).map_err(cannot)?;
        if let Some(p) = policy {
            hc.restart_policy = Some(p);
        }
        if record.state.running && !live.is_empty() {
            let resources = live
                .to_oci()
                .map_err(|e| Error::InvalidParameter(e.to_string()))?;
            let rt = self.runtime.clone();
            let id = record.id.clone();
            let id2 = &record.id;
            tokio::task::spawn_blocking(move || rt.update_resources(&id, &resources))
                .await
                .map_err(|e| Error::Internal(format!("update task: {e}")))?
                .map_err(|e| Error::Runtime(format!("Cannot update container {id2}: {e}")))?;
        }
        let (record, ()) = self.containers.update(&record.id, |r| {
            r.host_config = hc;
            Ok(())
        })?;
        self.container_event("update", &record, &[]);
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ContainerUpdateBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn verify_like_dockerd() {
        assert!(verify(&body(r#"{"Memory": 1024}"#), 2)
            .unwrap_err()
            .to_string()
            .contains("6MB"));
        assert!(verify(&body(r#"{"NanoCpus": 3000000000}"#), 2).is_err());
        assert!(verify(&body(r#"{"CpusetCpus": "0-3"}"#), 2).is_err());
        assert!(verify(&body(r#"{"CpusetCpus": "0,1"}"#), 2).is_ok());
        assert!(verify(&body(r#"{"BlkioWeight": 5}"#), 2).is_err());
        assert!(verify(&body(r#"{"Memory": 0, "RestartPolicy": {"Name": ""}}"#), 2).is_ok());
    }

    #[test]
    fn merge_keeps_implicit_swap_and_refuses_conflicts() {
        let mut hc = HostConfig {
            memory: Some(400 << 20),
            ..Default::default()
        };
        let live = merge(&mut hc, &body(r#"{"Memory": 314572800}"#)).unwrap();
        assert_eq!(hc.memory, Some(300 << 20));
        assert_eq!(hc.memory_swap, Some(800 << 20));
        assert_eq!(live.memory, Some(300 << 20));
        assert_eq!(live.memory_swap, Some(800 << 20));
        assert!(live.cpu_shares.is_none());

        let mut none = HostConfig::default();
        let err = merge(&mut none, &body(r#"{"Memory": 314572800}"#)).unwrap_err();
        assert!(err.contains("update the memoryswap at the same time"));
        let live = merge(
            &mut none,
            &body(r#"{"Memory": 314572800, "MemorySwap": -1, "PidsLimit": 0}"#),
        )
        .unwrap();
        assert_eq!(live.memory_swap, Some(-1));
        assert_eq!(live.pids_limit, Some(0));

        let mut nano = HostConfig {
            nano_cpus: Some(1_000_000_000),
            ..Default::default()
        };
        assert!(merge(&mut nano, &body(r#"{"CpuQuota": 50000}"#)).is_err());
        let live = merge(&mut nano, &body(r#"{"NanoCpus": 500000000}"#)).unwrap();
        assert_eq!(live.cpu_quota, Some(50_000));
        assert_eq!(live.cpu_period, Some(100_000));
    }
}
