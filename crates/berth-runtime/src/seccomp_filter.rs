//! Precompiled seccomp filters for container processes (inits and execs).
//!
//! libseccomp needs ~10 ms to turn Docker's default profile (~370 syscalls, for the native
//! architecture and its compat ABIs) into BPF, and libcontainer does it inside every
//! container's init, on the critical path of `start`. A profile only has a handful of
//! distinct shapes (one per capability set), so Berth compiles each once with the same
//! libseccomp translation libcontainer uses, caches the program under the runtime root keyed
//! by the profile's digest, and lets the init load the ready program just before it execs
//! the workload ([`PrecompiledSeccomp`], loaded by [`crate::executor::WorkloadExecutor`]).
//!
//! Loading a filter needs `CAP_SYS_ADMIN` or `no_new_privs`. libcontainer loads its own
//! filter before dropping capabilities; the executor runs after, so for a container without
//! `no_new_privs` the init keeps `CAP_SYS_ADMIN` in its permitted and effective sets only
//! (see [`grant_filter_loading`]): not in the bounding, inheritable or ambient sets, so the
//! `execve` of the workload drops it, as capabilities(7) computes
//! `P'(permitted) = (P(inheritable) & F(inheritable)) | (F(permitted) & P(bounding)) | P'(ambient)`.
//! Between the two points only libcontainer's code, this module's and the spec's own
//! `startContainer` hooks (provided by the bundle's author, like the spec itself) run.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Process,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Size of one BPF instruction (`struct sock_filter`).
const INSN_LEN: usize = 8;

/// libseccomp's binary-tree layout (`SCMP_FLTATR_CTL_OPTIMIZE` = 2): the syscall number is
/// found in O(log n) comparisons instead of a linear scan of ~370 rules. Besides every
/// syscall of the container, it shortens the load: the kernel emulates the filter once per
/// syscall number and ABI to fill its always-allowed cache. Docker's profile for x86_64 (with
/// its x86 and x32 ABIs) loads in ~0.27 ms instead of ~0.72 ms on a 2-vCPU VM, although the
/// program grows from 975 to 1218 instructions.
const OPTIMIZE_BINARY_TREE: u32 = 2;

/// Whether the profile can be precompiled: a user-notification profile hands a listener fd
/// to another process from inside the init, which only libcontainer's own path does.
pub(crate) fn precompilable(profile: &LinuxSeccomp) -> bool {
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    profile.listener_path().is_none()
        && !notify(profile.default_action())
        && !profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| notify(s.action()))
}

/// The BPF program for `profile`, from `cache_dir` or compiled and stored there.
pub(crate) fn compiled(cache_dir: &Path, profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(profile).map_err(|e| Error::json("encode seccomp profile", e))?;
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut digest = Sha256::new();
    digest.update(version.as_bytes());
    digest.update([0]);
    digest.update(OPTIMIZE_BINARY_TREE.to_le_bytes());
    digest.update(&json);
    let path = cache_dir.join(format!("{}.bpf", hex::encode(digest.finalize())));
    if let Ok(program) = fs::read(&path) {
        if !program.is_empty() && program.len().is_multiple_of(INSN_LEN) {
            return Ok(program);
        }
    }
    let filter = compile(profile)?;
    // Exported into a temporary file renamed into place: a concurrent start reads either no
    // program or a whole one.
    fs::create_dir_all(cache_dir)
        .map_err(|e| Error::io(format!("create {}", cache_dir.display()), e))?;
    let (tmp, file) = tempfile_in(cache_dir)?;
    let exported = filter
        .export_bpf(&file)
        .map_err(|e| Error::Seccomp(format!("export bpf: {e}")))
        .and_then(|()| fs::read(&tmp).map_err(|e| Error::io(format!("read {}", tmp.display()), e)));
    let program = match exported {
        Ok(p) => p,
        Err(err) => {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
    };
    fs::rename(&tmp, &path).map_err(|e| Error::io(format!("rename {}", path.display()), e))?;
    Ok(program)
}

/// A uniquely named new file in `dir`.
fn tempfile_in(dir: &Path) -> Result<(std::path::PathBuf, fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), unique_suffix());
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    Ok((path, file))
}

/// The current time in nanoseconds: with the pid, unique among concurrent writers.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Builds the libseccomp filter for `profile` exactly as libcontainer translates it before
/// loading it.
fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let err =
        |what: &str, e: libseccomp::error::SeccompError| Error::Seccomp(format!("{what}: {e}"));
    let default_action = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default_action).map_err(|e| err("new filter", e))?;
    for &arch in profile.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(arch))
            .map_err(|e| err(&format!("add architecture {arch:?}"), e))?;
    }
    // Whether no_new_privs is set is the spec's business, not the filter's.
    ctx.set_ctl_nnp(false).map_err(|e| err("clear nnp", e))?;
    ctx.set_ctl_optimize(OPTIMIZE_BINARY_TREE)
        .map_err(|e| err("optimize for a binary tree", e))?;
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default_action {
            continue;
        }
        let comparators: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                ScmpArgCompare::new(
                    a.index() as u32,
                    compare_op(a.op(), a.value_two()),
                    a.value(),
                )
            })
            .collect();
        let mut indexes: Vec<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated_index = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall the kernel cannot have.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if comparators.is_empty() {
                ctx.add_rule(rule_action, syscall).map(drop)
            } else if repeated_index {
                // One comparison per argument and rule: separate rules, as runc does.
                comparators.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(rule_action, syscall, std::slice::from_ref(c))
                        .map(drop)
                })
            } else {
                ctx.add_rule_conditional(rule_action, syscall, &comparators)
                    .map(drop)
            };
            added.map_err(|e| err(&format!("rule for {name}"), e))?;
        }
    }
    Ok(ctx)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| Error::Seccomp(format!("trace action value {errno} out of range")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "notify actions cannot be precompiled".into(),
            ))
        }
    })
}

fn compare_op(op: LinuxSeccompOperator, mask: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask.unwrap_or(0)),
    }
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The `seccomp(2)` flags for the profile's OCI flags.
fn filter_flags(profile: &LinuxSeccomp) -> libc::c_ulong {
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful for user notification, which is never precompiled.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    flags
}

/// Lets a process without `no_new_privs` load the filter after libcontainer dropped its
/// capabilities: `CAP_SYS_ADMIN` stays permitted and effective until the workload's execve.
pub(crate) fn grant_filter_loading(process: &mut Process) {
    if process.no_new_privileges() == Some(true) {
        return;
    }
    // Without a capabilities section libcontainer leaves the process's own (all) in place.
    let Some(mut caps) = process.capabilities().clone() else {
        return;
    };
    let admin = oci_spec::runtime::Capability::SysAdmin;
    let mut effective = caps.effective().clone().unwrap_or_default();
    let mut permitted = caps.permitted().clone().unwrap_or_default();
    effective.insert(admin);
    permitted.insert(admin);
    caps.set_effective(Some(effective))
        .set_permitted(Some(permitted));
    process.set_capabilities(Some(caps));
}

/// A compiled program, ready to load (see [`crate::executor::WorkloadExecutor`]).
#[derive(Clone)]
pub(crate) struct PrecompiledSeccomp {
    program: Arc<[libc::sock_filter]>,
    flags: libc::c_ulong,
}

impl PrecompiledSeccomp {
    /// `program` as [`compiled`] returns it: native-endian `struct sock_filter`s.
    pub(crate) fn new(program: &[u8], profile: &LinuxSeccomp) -> Result<Self> {
        if program.is_empty() || !program.len().is_multiple_of(INSN_LEN) {
            return Err(Error::Seccomp(format!(
                "a BPF program of {} bytes is not whole instructions",
                program.len()
            )));
        }
        let program = program
            .chunks_exact(INSN_LEN)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        Ok(Self {
            program,
            flags: filter_flags(profile),
        })
    }

    /// Installs the filter on the calling thread.
    pub(crate) fn load(&self) -> std::io::Result<()> {
        let len = u16::try_from(self.program.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?;
        let prog = libc::sock_fprog {
            len,
            // The kernel only reads the program.
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `len` instructions that live as long as `self`;
        // seccomp(SECCOMP_SET_MODE_FILTER) copies them into the kernel before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_profile_compiles_and_is_cached() {
        let caps = crate::spec::capabilities(&crate::spec::RunOptions::default()).unwrap();
        let profile = crate::spec::seccomp::default_profile(&caps).unwrap();
        assert!(precompilable(&profile));
        let dir = tempfile::tempdir().unwrap();
        let first = compiled(dir.path(), &profile).unwrap();
        assert!(first.len().is_multiple_of(INSN_LEN));
        assert!(
            first.len() > 100 * INSN_LEN,
            "a real program: {} bytes",
            first.len()
        );
        let second = compiled(dir.path(), &profile).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
