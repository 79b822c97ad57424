//! Adds and deletes elements of nftables sets and maps over netlink (`NETLINK_NETFILTER`), as
//! one batch, which the kernel applies as one transaction.
//!
//! Publishing a container's ports only changes elements of the port maps (see
//! [`crate::firewall`]); doing it with the `nft` binary cost a process start and a fetch of the
//! whole ruleset (~4 ms) on every start and removal with `-p`. Nothing else is written this
//! way: tables, chains and rules still go through `nft -f`, whose language is the reference.
//! The wire format is the kernel's `nf_tables` netlink API (`NFT_MSG_NEWSETELEM` /
//! `NFT_MSG_DELSETELEM` inside an `NFNL_MSG_BATCH_BEGIN` … `END` batch).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::error::{NetworkError, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFPROTO_IPV4: u8 = 2;

/// One element to add (with its value, for a map) or delete, in a set of an `ip` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    /// Add (`true`) or delete.
    pub add: bool,
    /// The set or map name.
    pub set: String,
    /// The key, in nftables' register layout (each field of a concatenation padded to 4
    /// bytes; ports and addresses in network order).
    pub key: Vec<u8>,
    /// The map value (same layout); `None` for a plain set or a deletion.
    pub data: Option<Vec<u8>>,
}

/// Applies `changes` to the sets of `ip` table `table` in one transaction.
pub fn apply(table: &str, changes: &[ElementChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let err = |what: &str, e: nix::Error| NetworkError::Nft(format!("netlink {what}: {e}"));
    let sock: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| err("socket", e))?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| err("bind", e))?;
    // The kernel answers at once; a lost answer must not hold a container start forever.
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )
    .map_err(|e| err("set a receive timeout", e))?;
    let batch = encode(table, changes);
    send(sock.as_raw_fd(), &batch, MsgFlags::empty()).map_err(|e| err("send", e))?;
    // One acknowledgement per element message; the first error aborts the transaction.
    let mut acked = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while acked < changes.len() {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| err("recv", e))?;
        let mut msg = &buf[..n];
        while msg.len() >= 16 {
            let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            if len < 16 || len > msg.len() {
                break;
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
                if code != 0 {
                    return Err(NetworkError::Nft(format!(
                        "netlink: updating set elements of table {table}: {}",
                        nix::errno::Errno::from_raw(-code)
                    )));
                }
                acked += 1;
            }
            msg = &msg[align(len).min(msg.len())..];
        }
    }
    Ok(())
}

/// The batch for `changes`: begin, one message per element, end.
fn encode(table: &str, changes: &[ElementChange]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 0u32;
    let mut message =
        |out: &mut Vec<u8>, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]| {
            seq += 1;
            let len = 16 + 4 + attrs.len();
            out.extend_from_slice(&(len as u32).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            // struct nfgenmsg: family, version, resource id (big endian).
            out.push(family);
            out.push(0);
            out.extend_from_slice(&res_id.to_be_bytes());
            out.extend_from_slice(attrs);
        };
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    for change in changes {
        let mut value = Vec::new();
        attr(&mut value, NFTA_DATA_VALUE, &change.key);
        let mut elem = Vec::new();
        attr(&mut elem, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &value);
        if let (true, Some(data)) = (change.add, &change.data) {
            let mut value = Vec::new();
            attr(&mut value, NFTA_DATA_VALUE, data);
            attr(&mut elem, NFTA_SET_ELEM_DATA | NLA_F_NESTED, &value);
        }
        let mut list = Vec::new();
        attr(&mut list, NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
        let mut attrs = Vec::new();
        attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &c_string(&change.set));
        attr(
            &mut attrs,
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
            &list,
        );
        let (kind, flags) = if change.add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            NFPROTO_IPV4,
            0,
            &attrs,
        );
    }
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    out
}

/// Appends one netlink attribute (header, payload, padding to 4 bytes).
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(out.len()), 0);
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real kernel: elements added and deleted over netlink are what `nft` lists, and a bad
    /// one (unknown set) fails the whole batch with the kernel's error.
    #[test]
    fn adds_and_deletes_map_elements_in_the_kernel() {
        let have_nft = std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have_nft {
            eprintln!("skipping: nft missing");
            return;
        }
        let table = format!("berth-nfset-{}", std::process::id());
        let nft = |script: &str| crate::firewall::nft(script);
        struct Drop_(String);
        impl Drop for Drop_ {
            fn drop(&mut self) {
                let _ = crate::firewall::nft(&format!("delete table ip {}", self.0));
            }
        }
        nft(&format!(
            "table ip {table} {{\n map m {{\n type inet_proto . inet_service : ipv4_addr . inet_service\n }}\n}}\n"
        ))
        .unwrap();
        let _cleanup = Drop_(table.clone());
        let key = |port: u16| {
            let [a, b] = port.to_be_bytes();
            vec![6, 0, 0, 0, a, b, 0, 0]
        };
        let add = |port: u16| ElementChange {
            add: true,
            set: "m".into(),
            key: key(port),
            data: Some(vec![10, 0, 0, 2, 0, 80, 0, 0]),
        };
        apply(&table, &[add(8080), add(8081)]).unwrap();
        let list = |t: &str| {
            let out = std::process::Command::new("nft")
                .args(["list", "map", "ip", t, "m"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let listed = list(&table);
        assert!(listed.contains("tcp . 8080 : 10.0.0.2 . 80"), "{listed}");
        assert!(listed.contains("tcp . 8081 : 10.0.0.2 . 80"), "{listed}");
        let delete = ElementChange {
            add: false,
            set: "m".into(),
            key: key(8080),
            data: None,
        };
        apply(&table, &[delete]).unwrap();
        let listed = list(&table);
        assert!(
            !listed.contains("8080") && listed.contains("8081"),
            "{listed}"
        );
        let bad = ElementChange {
            set: "nosuchmap".into(),
            ..add(9090)
        };
        assert!(apply(&table, &[add(9091), bad]).is_err());
        assert!(
            !list(&table).contains("9091"),
            "the batch is one transaction"
        );
    }

    #[test]
    fn encodes_a_batch_of_one_element() {
        let batch = encode(
            "t",
            &[ElementChange {
                add: true,
                set: "s".into(),
                key: vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                data: Some(vec![10, 0, 0, 2, 0, 80, 0, 0]),
            }],
        );
        // begin (20) + element message + end (20), every message 4-byte aligned.
        let begin = u32::from_ne_bytes(batch[0..4].try_into().unwrap()) as usize;
        assert_eq!(begin, 20);
        let elem = u32::from_ne_bytes(batch[20..24].try_into().unwrap()) as usize;
        assert_eq!(batch.len(), 20 + elem + 20);
        assert_eq!(elem % 4, 0);
        let kind = u16::from_ne_bytes(batch[24..26].try_into().unwrap());
        assert_eq!(kind, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
        assert_eq!(batch[36], NFPROTO_IPV4);
    }
}
