//! Facts about the host that `/info` and `/version` report, read once at startup.

use std::path::Path;

/// Host facts.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` from os-release.
    pub operating_system: String,
    /// `VERSION_ID` from os-release.
    pub os_version: String,
    /// Go-style architecture name (`amd64`, `arm64`).
    pub arch: &'static str,
    /// `uname -m`.
    pub machine: String,
    /// CPUs available to the daemon.
    pub ncpu: usize,
    /// Total memory in bytes.
    pub mem_total: u64,
    /// Host name.
    pub hostname: String,
    /// `"2"` on a unified hierarchy, else `"1"`.
    pub cgroup_version: &'static str,
}

impl HostInfo {
    /// Reads the host facts; anything unreadable is reported empty rather than failing.
    pub fn detect() -> Self {
        let uname = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uname
                .as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let os_release = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        let os_field = |key: &str| {
            os_release
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024);
        HostInfo {
            kernel_version: field(|u| u.release()),
            operating_system: os_field("PRETTY_NAME"),
            os_version: os_field("VERSION_ID"),
            arch: go_arch(std::env::consts::ARCH),
            machine: field(|u| u.machine()),
            ncpu: std::thread::available_parallelism().map_or(1, usize::from),
            mem_total,
            hostname: field(|u| u.nodename()),
            cgroup_version: if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "2"
            } else {
                "1"
            },
        }
    }
}

/// Maps Rust's architecture names onto Go's, which Docker reports.
pub fn go_arch(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
