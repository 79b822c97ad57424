//! `berth runtime` on a pure cgroup v2 layout, as far as this cgroup-v1 host allows.
//!
//! The host mounts every controller on v1 and leaves an empty v2 hierarchy at
//! /sys/fs/cgroup/unified. In a private mount namespace (`unshare -m`) the v1 mounts are
//! replaced by that v2 hierarchy at /sys/fs/cgroup, so libcgroups detects a unified layout and
//! uses its v2 manager: cgroup creation, membership, cgroup.freeze (pause/resume), process
//! listing, kill --all and removal are exercised for real. Resource limits cannot be: the
//! memory, cpu, io and pids controllers are bound to v1 here and absent from v2.

mod common;

use std::process::Command;

use common::{berth_bin, stderr, stdout, TestContainer};

const SCRIPT: &str = r#"
set -e
for d in /sys/fs/cgroup/*; do umount "$d" 2>/dev/null || true; done
umount /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
R="$BERTH runtime --root $ROOT"
$R create --bundle "$BUNDLE" --pid-file "$PIDFILE" "$ID" </dev/null >/dev/null 2>"$ERR"
$R start "$ID"
echo "layout $(stat -f -c %T /sys/fs/cgroup)"
echo "member $(grep '^0::' /proc/$(cat $PIDFILE)/cgroup)"
$R pause "$ID"
echo "frozen $(cat /sys/fs/cgroup/berth-test/$ID/cgroup.freeze)"
$R state "$ID" | grep -o '"status": "[a-z]*"'
$R resume "$ID"
echo "frozen $(cat /sys/fs/cgroup/berth-test/$ID/cgroup.freeze)"
echo "pids $($R ps --format json "$ID")"
$R kill --all "$ID" KILL
while [ -d /proc/$(cat $PIDFILE) ] && ! grep -q '^State:.*Z' /proc/$(cat $PIDFILE)/status 2>/dev/null; do sleep 0.01; done
$R delete "$ID"
[ -d /sys/fs/cgroup/berth-test/$ID ] && echo "cgroup left" || echo "cgroup removed"
"#;

#[test]
fn lifecycle_on_unified_hierarchy() {
    if !std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        eprintln!("skipped: no v2 hierarchy at /sys/fs/cgroup/unified to borrow");
        return;
    }
    let c = TestContainer::new("v2", &["sleep", "60"], |_| {});
    let pid_file = c.dir.path().join("pid");
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", SCRIPT])
        .env("BERTH", berth_bin())
        .env("ROOT", &c.root)
        .env("BUNDLE", &c.bundle)
        .env("PIDFILE", &pid_file)
        .env("ERR", c.dir.path().join("create.err"))
        .env("ID", &c.id)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}{}",
        stderr(&out),
        std::fs::read_to_string(c.dir.path().join("create.err")).unwrap_or_default()
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let expected = [
        "layout cgroup2fs".to_owned(),
        format!("member 0::/berth-test/{}", c.id),
        "frozen 1".to_owned(),
        "\"status\": \"paused\"".to_owned(),
        "frozen 0".to_owned(),
        format!("pids [{}]", pid.trim()),
        "cgroup removed".to_owned(),
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, expected, "{text}");
}
