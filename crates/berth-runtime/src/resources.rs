//! Resource limits as plain data ([`Limits`], filled from Docker's `HostConfig`) and their
//! translation into the OCI `linux.resources` that libcgroups applies on cgroup v1 or v2.
//!
//! libcgroups picks the v1 or v2 backend from the host's layout ([`cgroup_layout`]); on v2 it
//! converts v1-style values (cpu shares → weight, blkio weight → io.weight) itself.

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Container resource limits, Docker's `HostConfig` names and units (bytes, microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory + swap limit in bytes; -1 for unlimited swap.
    pub memory_swap: Option<i64>,
    /// Soft memory limit in bytes.
    pub memory_reservation: Option<i64>,
    /// Disable the OOM killer (v1 only).
    pub oom_kill_disable: Option<bool>,
    /// Relative CPU weight (v1 `cpu.shares`, 2..262144).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period; -1 for none.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CPUs the container may use (`0-3,5`).
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes; 0 or -1 for unlimited.
    pub pids_limit: Option<i64>,
    /// Block IO weight (10..1000).
    pub blkio_weight: Option<u16>,
}

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a (possibly empty) v2 mount.
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

/// Detects the host's cgroup layout.
pub fn cgroup_layout() -> Result<CgroupLayout> {
    use libcgroups::common::CgroupSetup;
    match libcgroups::common::get_cgroup_setup() {
        Ok(CgroupSetup::Legacy) => Ok(CgroupLayout::Legacy),
        Ok(CgroupSetup::Hybrid) => Ok(CgroupLayout::Hybrid),
        Ok(CgroupSetup::Unified) => Ok(CgroupLayout::Unified),
        Err(e) => Err(Error::Cgroup {
            path: "/sys/fs/cgroup".into(),
            message: crate::error::one_line(&e),
        }),
    }
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self == &Limits::default()
    }

    /// Checks values the kernel would reject with a less helpful error.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.memory {
            if m != 0 && m < 6 * 1024 * 1024 {
                return Err(Error::InvalidOption(format!(
                    "memory limit {m} is below the minimum of 6 MiB"
                )));
            }
        }
        if let (Some(m), Some(s)) = (self.memory, self.memory_swap) {
            if s > 0 && m > 0 && s < m {
                return Err(Error::InvalidOption(format!(
                    "memory+swap limit {s} is below the memory limit {m}"
                )));
            }
        }
        if let Some(w) = self.blkio_weight {
            if w != 0 && !(10..=1000).contains(&w) {
                return Err(Error::InvalidOption(format!(
                    "blkio weight {w} is outside 10..1000"
                )));
            }
        }
        if let Some(p) = self.cpu_period {
            if p != 0 && !(1000..=1_000_000).contains(&p) {
                return Err(Error::InvalidOption(format!(
                    "cpu period {p} is outside 1000..1000000"
                )));
            }
        }
        Ok(())
    }

    /// The OCI `linux.resources` for these limits (devices are left to the spec builder).
    pub fn to_oci(&self) -> Result<LinuxResources> {
        self.validate()?;
        let bad = |e: oci_spec::OciSpecError| Error::InvalidOption(e.to_string());
        let mut res = LinuxResourcesBuilder::default();
        if self.memory.is_some()
            || self.memory_swap.is_some()
            || self.memory_reservation.is_some()
            || self.oom_kill_disable.is_some()
        {
            let mut mem = LinuxMemoryBuilder::default();
            if let Some(v) = self.memory.filter(|v| *v > 0) {
                mem = mem.limit(v);
                // Docker: without an explicit swap limit, memory+swap is twice the memory.
                if self.memory_swap.is_none() {
                    mem = mem.swap(v * 2);
                }
            }
            if let Some(v) = self.memory_swap.filter(|v| *v != 0) {
                mem = mem.swap(v);
            }
            if let Some(v) = self.memory_reservation.filter(|v| *v > 0) {
                mem = mem.reservation(v);
            }
            if let Some(v) = self.oom_kill_disable {
                mem = mem.disable_oom_killer(v);
            }
            res = res.memory(mem.build().map_err(bad)?);
        }
        if self.cpu_shares.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_period.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
        {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(v) = self.cpu_shares.filter(|v| *v > 0) {
                cpu = cpu.shares(v);
            }
            if let Some(v) = self.cpu_quota.filter(|v| *v != 0) {
                cpu = cpu.quota(v);
            }
            if let Some(v) = self.cpu_period.filter(|v| *v > 0) {
                cpu = cpu.period(v);
            }
            if let Some(v) = self.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
                cpu = cpu.cpus(v.clone());
            }
            if let Some(v) = self.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
                cpu = cpu.mems(v.clone());
            }
            res = res.cpu(cpu.build().map_err(bad)?);
        }
        if let Some(v) = self.pids_limit {
            let limit = if v <= 0 { -1 } else { v };
            res = res.pids(
                LinuxPidsBuilder::default()
                    .limit(limit)
                    .build()
                    .map_err(bad)?,
            );
        }
        if let Some(v) = self.blkio_weight.filter(|v| *v > 0) {
            res = res.block_io(
                LinuxBlockIoBuilder::default()
                    .weight(v)
                    .build()
                    .map_err(bad)?,
            );
        }
        res.build().map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_defaults_swap_to_twice_the_limit() {
        let limits = Limits {
            memory: Some(64 << 20),
            ..Default::default()
        };
        let res = limits.to_oci().unwrap();
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(128 << 20));
    }

    #[test]
    fn rejects_nonsense() {
        let limits = Limits {
            memory: Some(1024),
            ..Default::default()
        };
        assert!(limits.to_oci().is_err());
        let limits = Limits {
            blkio_weight: Some(5),
            ..Default::default()
        };
        assert!(limits.to_oci().is_err());
    }

    #[test]
    fn pids_unlimited_is_minus_one() {
        let limits = Limits {
            pids_limit: Some(0),
            ..Default::default()
        };
        assert_eq!(
            limits.to_oci().unwrap().pids().as_ref().unwrap().limit(),
            -1
        );
    }
}
