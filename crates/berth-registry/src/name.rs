//! Repository names and tags as the distribution spec restricts them.
//!
//! The grammar is berth-image's (`berth_image::reference`), the one image references are
//! parsed with, so the server and the client can never disagree on a name. A valid name can
//! be used as a relative path under the store with no further escaping: no component can be
//! empty, `.`/`..`, or start with `_`, and names stay under 256 bytes (well below PATH_MAX
//! under `<root>/repositories/`).

pub use berth_image::reference::{valid_repository_path as valid_name, valid_tag};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/busybox",
            "a.b_c__d---e/f0",
            "conformance/repo1",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "_a", "a-", "a/../b", "a/.b", "a:b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc"));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b"));
    }
}
