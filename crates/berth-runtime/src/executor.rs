//! The last steps of every container process before `execve`, run inside its init by
//! libcontainer: the terminal's initial size (libcontainer ignores `process.consoleSize`, and
//! an exec'd process would otherwise race the monitor's resize) and the precompiled seccomp
//! filter (see [`crate::seccomp_filter`]). Then libcontainer's default executor runs the
//! workload.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

use crate::seccomp_filter::PrecompiledSeccomp;

/// libcontainer's default executor with Berth's last steps before it.
#[derive(Clone)]
pub(crate) struct WorkloadExecutor {
    /// The filter to load, when the spec's profile was precompiled.
    pub seccomp: Option<PrecompiledSeccomp>,
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(process) = spec.process() {
            if let (Some(true), Some(size)) = (process.terminal(), process.console_size()) {
                let ws = libc::winsize {
                    ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
                    ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize that lives across the call; stdin is
                // the process's terminal here (libcontainer set it up), and a failure only
                // leaves the size unset.
                unsafe {
                    libc::ioctl(libc::STDIN_FILENO, libc::TIOCSWINSZ, &ws);
                }
            }
        }
        if let Some(filter) = &self.seccomp {
            filter
                .load()
                .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
