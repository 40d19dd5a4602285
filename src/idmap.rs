//! Owner mapping between the layers and the mount, as fuse-overlayfs does it for
//! podman's `--uidmap`/`--userns=keep-id` (`uidmapping=`, `gidmapping=`) and for
//! `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`.
//!
//! A mapping `uidmapping=:A:B:N[:A2:B2:N2...]` shows an owner `A+i` found in the layers
//! as `B+i` through the mount (`i < N`), and stores an owner `B+i` given through the
//! mount as `A+i`; an owner outside every range becomes the overflow id (65534) either
//! way, as with fuse-overlayfs. Squashing shows every owner as the given id (root for
//! `squash_to_root`), and owner changes then succeed without changing anything.

/// One direction-independent range: layer ids `disk..disk+len` are mount ids
/// `shown..shown+len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    disk: u32,
    shown: u32,
    len: u32,
}

#[derive(Clone, Debug, Default)]
pub struct IdMap {
    uids: Vec<Range>,
    gids: Vec<Range>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
}

const OVERFLOW_ID: u32 = 65534;

/// Parses `:A:B:N[:A:B:N...]` (the leading `:` podman writes is optional).
fn parse_ranges(v: &str) -> Result<Vec<Range>, String> {
    let nums: Vec<u32> = v
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| format!("invalid mapping specified: {v}"))
        })
        .collect::<Result<_, _>>()?;
    if nums.is_empty() || !nums.len().is_multiple_of(3) {
        return Err(format!("invalid mapping specified: {v}"));
    }
    Ok(nums
        .chunks_exact(3)
        .map(|c| Range {
            disk: c[0],
            shown: c[1],
            len: c[2],
        })
        .collect())
}

fn show(ranges: &[Range], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.disk && id - r.disk < r.len)
        .map_or(OVERFLOW_ID, |r| r.shown + (id - r.disk))
}

fn store(ranges: &[Range], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.shown && id - r.shown < r.len)
        .map_or(OVERFLOW_ID, |r| r.disk + (id - r.shown))
}

impl IdMap {
    pub fn new(
        uidmapping: Option<&str>,
        gidmapping: Option<&str>,
        squash_to_root: bool,
        squash_to_uid: Option<u32>,
        squash_to_gid: Option<u32>,
    ) -> Result<IdMap, String> {
        Ok(IdMap {
            uids: uidmapping
                .map(parse_ranges)
                .transpose()?
                .unwrap_or_default(),
            gids: gidmapping
                .map(parse_ranges)
                .transpose()?
                .unwrap_or_default(),
            squash_uid: squash_to_uid.or(squash_to_root.then_some(0)),
            squash_gid: squash_to_gid.or(squash_to_root.then_some(0)),
        })
    }

    /// Are owner changes to be accepted without effect?
    pub fn squashing(&self) -> bool {
        self.squash_uid.is_some() || self.squash_gid.is_some()
    }

    /// The owner the mount shows for a layer object owned by (`uid`, `gid`).
    pub fn show(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            self.squash_uid.unwrap_or_else(|| show(&self.uids, uid)),
            self.squash_gid.unwrap_or_else(|| show(&self.gids, gid)),
        )
    }

    /// The layer owner for a uid given through the mount.
    pub fn store_uid(&self, uid: u32) -> u32 {
        store(&self.uids, uid)
    }

    /// The layer owner for a gid given through the mount.
    pub fn store_gid(&self, gid: u32) -> u32 {
        store(&self.gids, gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_keep_id_mapping() {
        // podman --userns=keep-id for uid 1001
        let m = IdMap::new(
            Some(":0:1:1001:1001:0:1:1002:1002:64535"),
            None,
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(m.show(0, 5), (1, 5));
        assert_eq!(m.show(1001, 5), (0, 5));
        assert_eq!(m.show(1002, 5), (1002, 5));
        assert_eq!(m.store_uid(0), 1001);
        assert_eq!(m.store_uid(1), 0);
        assert_eq!(m.show(70000, 0).0, OVERFLOW_ID);
        assert_eq!(m.store_uid(70000), OVERFLOW_ID);
    }

    #[test]
    fn squash_and_bad_values() {
        let m = IdMap::new(None, None, true, None, Some(7)).unwrap();
        assert_eq!(m.show(1234, 5678), (0, 7));
        assert!(m.squashing());
        assert!(IdMap::new(Some("0:1"), None, false, None, None).is_err());
        assert!(IdMap::new(Some("a:b:c"), None, false, None, None).is_err());
    }
}
