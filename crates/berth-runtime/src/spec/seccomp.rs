//! Docker's default seccomp profile, as Rust data.
//!
//! The profile denies everything with `EPERM` and allows a large list of syscalls. Some rules
//! only apply on some architectures or when the container holds a capability; like Docker,
//! [`default_profile`] resolves those conditions when the spec is built (for the host's
//! architecture and the container's final capability set), so the spec carries a flat list.
//! Without `CAP_SYS_ADMIN`, `clone` is allowed only without namespace flags and `clone3`
//! fails with `ENOSYS` (so that libc falls back to `clone`, which the filter can inspect).

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::{Error, Result};

/// Syscalls allowed in every container.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` is allowed only for these personas (Linux, PER_LINUX32, UNAME26, query).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`: sockets of this family are denied (host/guest channel).
const AF_VSOCK: u64 = 40;

/// The namespace flags of `clone(2)`: NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Syscalls allowed only on some architectures (Rust `std::env::consts::ARCH` names).
const ARCH_RULES: &[(&[&str], &[&str])] = &[
    (&["x86_64"], &["arch_prctl", "modify_ldt"]),
    (&["x86"], &["modify_ldt"]),
    (
        &["arm", "aarch64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["powerpc64"], &["sync_file_range2", "swapcontext"]),
    (
        &["s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// Syscalls allowed when the container holds the capability.
const CAP_RULES: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Seccomp architectures for the host (the native one plus its compat ABIs), as Docker's
/// `archMap`.
fn architectures(arch: &str) -> Vec<Arch> {
    match arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "x86" => vec![Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "arm" => vec![Arch::ScmpArchArm],
        "powerpc64" => vec![Arch::ScmpArchPpc64le],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![Arch::ScmpArchNative],
    }
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .action(action);
    if !args.is_empty() {
        b = b.args(args);
    }
    b.build()
        .map_err(|e| Error::InvalidOption(format!("seccomp rule: {e}")))
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
) -> Result<LinuxSeccompArg> {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(value_two)
        .build()
        .map_err(|e| Error::InvalidOption(format!("seccomp argument: {e}")))
}

/// Docker's default profile for a container with capabilities `caps` (`CAP_*` names) on the
/// host's architecture.
pub fn default_profile(caps: &[String]) -> Result<LinuxSeccomp> {
    profile_for(std::env::consts::ARCH, caps)
}

/// Docker's default profile for architecture `arch` (Rust `std::env::consts::ARCH` name).
pub fn profile_for(arch: &str, caps: &[String]) -> Result<LinuxSeccomp> {
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut syscalls = vec![rule(ALLOWED, allow, vec![])?];
    for persona in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            allow,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, *persona, 0)?],
        )?);
    }
    syscalls.push(rule(
        &["socket"],
        allow,
        vec![arg(0, LinuxSeccompOperator::ScmpCmpNe, AF_VSOCK, 0)?],
    )?);
    for (arches, names) in ARCH_RULES {
        if arches.contains(&arch) {
            syscalls.push(rule(names, allow, vec![])?);
        }
    }
    for (cap, names) in CAP_RULES {
        if has(cap) {
            syscalls.push(rule(names, allow, vec![])?);
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // On s390 the flags are the second argument of clone.
        let index = if arch == "s390x" { 1 } else { 0 };
        syscalls.push(rule(
            &["clone"],
            allow,
            vec![arg(
                index,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                0,
            )?],
        )?);
        let mut enosys = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![])?;
        enosys.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(enosys);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(architectures(arch))
        .syscalls(syscalls)
        .build()
        .map_err(|e| Error::InvalidOption(format!("seccomp profile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        profile.syscalls().as_ref().unwrap().iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().is_none()
                && r.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn denies_dangerous_syscalls_by_default() {
        let p = profile_for("x86_64", &["CAP_CHOWN".into()]).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
        for name in [
            "keyctl", "add_key", "unshare", "mount", "ptrace", "reboot", "clone3",
        ] {
            assert!(!allowed(&p, name), "{name} must not be allowed");
        }
        assert!(allowed(&p, "read"));
        assert!(allowed(&p, "arch_prctl"));
        assert!(!allowed(&p, "cacheflush"));
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let p = profile_for("x86_64", &["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()]).unwrap();
        for name in ["mount", "unshare", "clone", "clone3", "ptrace"] {
            assert!(allowed(&p, name), "{name} must be allowed");
        }
    }

    #[test]
    fn arm_gets_arm_rules() {
        let p = profile_for("aarch64", &[]).unwrap();
        assert!(allowed(&p, "cacheflush"));
        assert!(!allowed(&p, "arch_prctl"));
        assert!(p
            .architectures()
            .as_ref()
            .unwrap()
            .contains(&Arch::ScmpArchArm));
    }
}
