//! The on-disk names of the formats stratafs reads and writes, in one table (the
//! kernel's `enum ovl_xattr` and its name table): the overlay xattrs, each in the
//! `trusted.overlay.` and `user.overlay.` namespaces, and the AUFS names. Which
//! namespace an upper takes is probed at mount (`work::XattrNs`).

use std::ffi::CStr;

/// The overlay xattr prefixes: kernel overlayfs's (`trusted.`), and the one a user
/// namespace or a rootless mount uses (`user.`).
pub const PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// The overlay xattrs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ovl {
    /// `y` on an opaque directory; `x` on one that may hold xattr whiteouts.
    Opaque,
    /// The old path of a renamed directory (`redirect_dir=on`).
    Redirect,
    /// The kernel's origin file handle (read from its index entries).
    Origin,
    /// A directory some of whose entries carry origins.
    Impure,
    /// A zero-size file that is a whiteout (inside an `opaque=x` directory).
    Whiteout,
    /// stratafs's own origin record: the inode number an object had before copy-up.
    StratafsOrigin,
}

impl Ovl {
    /// The name after the namespace prefix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Ovl::Opaque => "opaque",
            Ovl::Redirect => "redirect",
            Ovl::Origin => "origin",
            Ovl::Impure => "impure",
            Ovl::Whiteout => "whiteout",
            Ovl::StratafsOrigin => "stratafs.origin",
        }
    }

    /// The full names, in the `trusted.` and `user.` namespaces.
    pub const fn names(self) -> [&'static CStr; 2] {
        match self {
            Ovl::Opaque => [c"trusted.overlay.opaque", c"user.overlay.opaque"],
            Ovl::Redirect => [c"trusted.overlay.redirect", c"user.overlay.redirect"],
            Ovl::Origin => [c"trusted.overlay.origin", c"user.overlay.origin"],
            Ovl::Impure => [c"trusted.overlay.impure", c"user.overlay.impure"],
            Ovl::Whiteout => [c"trusted.overlay.whiteout", c"user.overlay.whiteout"],
            Ovl::StratafsOrigin => [
                c"trusted.overlay.stratafs.origin",
                c"user.overlay.stratafs.origin",
            ],
        }
    }

    /// Is `name` this xattr, in either namespace?
    pub fn is(self, name: &[u8]) -> bool {
        self.names().iter().any(|n| n.to_bytes() == name)
    }
}

/// fuse-overlayfs's opaque xattr (read; never written).
pub const FUSE_OVERLAYFS_OPAQUE: &CStr = c"user.fuseoverlayfs.opaque";
/// The prefix of fuse-overlayfs's private xattrs.
pub const FUSE_OVERLAYFS_PREFIX: &str = "user.fuseoverlayfs.";

/// The AUFS whiteout prefix.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The AUFS opaque-directory marker.
pub const OPAQUE_MARKER: &CStr = c".wh..wh..opq";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_its_prefix_and_suffix() {
        for x in [
            Ovl::Opaque,
            Ovl::Redirect,
            Ovl::Origin,
            Ovl::Impure,
            Ovl::Whiteout,
            Ovl::StratafsOrigin,
        ] {
            for (name, prefix) in x.names().iter().zip(PREFIXES) {
                assert_eq!(name.to_str().unwrap(), format!("{prefix}{}", x.suffix()));
                assert!(x.is(name.to_bytes()));
            }
        }
    }
}
