//! Copy-up on real mounts: what triggers it (and what does not), what it keeps
//! (owner, mode, times, xattrs, symlink targets, holes, special files), parents
//! first, leftovers in the work dir cleaned at mount, and concurrent writers to one
//! lower file (one copy-up, no write lost).

mod common;
use common::*;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

fn set_times(p: &Path, sec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: sec + 1,
            tv_nsec: 500,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

#[test]
fn copy_up_keeps_times_holes_links_and_special_files() {
    assert_root();
    let t = TempDir::new("cu-keep");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    // a sparse file: 8 MiB with 4 KiB of data in the middle
    let sparse = fs::File::create(l.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    sparse.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
    drop(sparse);
    std::os::unix::fs::symlink("some/where", l.join("sym")).unwrap();
    mknod(&l.join("fifo"), libc::S_IFIFO | 0o640, 0);
    mknod(&l.join("null"), libc::S_IFCHR | 0o644, libc::makedev(1, 3));
    let sock = std::os::unix::net::UnixListener::bind(l.join("sock")).unwrap();
    drop(sock);
    for (i, n) in ["sparse", "sym", "fifo", "null", "sock"].iter().enumerate() {
        lchown(&l.join(n), 1000 + i as u32, 2000 + i as u32);
        set_times(&l.join(n), 1_000_000 + i as i64);
    }
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    // ownership set to what it is: a metadata change that keeps times
    for (i, n) in ["sparse", "sym", "fifo", "null", "sock"].iter().enumerate() {
        lchown(&m.p(n), 1000 + i as u32, 2000 + i as u32);
    }
    for (i, n) in ["sparse", "sym", "fifo", "null", "sock"].iter().enumerate() {
        let (lo, up) = (
            fs::symlink_metadata(l.join(n)).unwrap(),
            fs::symlink_metadata(u.join(n)).unwrap_or_else(|e| panic!("{n} not copied up: {e}")),
        );
        assert_eq!(lo.mode(), up.mode(), "{n}: mode");
        assert_eq!(
            (up.uid(), up.gid()),
            (1000 + i as u32, 2000 + i as u32),
            "{n}"
        );
        assert_eq!(lo.rdev(), up.rdev(), "{n}: rdev");
        assert_eq!(
            (lo.mtime(), lo.mtime_nsec()),
            (up.mtime(), up.mtime_nsec()),
            "{n}: mtime"
        );
        let mm = fs::symlink_metadata(m.p(n)).unwrap();
        assert_eq!((mm.mtime(), mm.mtime_nsec()), (up.mtime(), up.mtime_nsec()));
    }
    assert!(fs::symlink_metadata(u.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(u.join("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    assert!(fs::symlink_metadata(u.join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        fs::read_link(u.join("sym")).unwrap(),
        Path::new("some/where")
    );
    let up = fs::metadata(u.join("sparse")).unwrap();
    assert_eq!(up.len(), 8 << 20);
    assert!(
        up.blocks() * 512 < 1 << 20,
        "the holes were filled: {} blocks",
        up.blocks()
    );
    let data = fs::read(m.p("sparse")).unwrap();
    assert_eq!(data, fs::read(l.join("sparse")).unwrap());
    m.unmount();
}

#[test]
fn every_change_copies_up_parents_first_and_reads_never_do() {
    assert_root();
    let t = TempDir::new("cu-trig");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    let ops = [
        "open", "trunc", "chmod", "chown", "utimens", "setx", "rmx", "link",
    ];
    for op in ops {
        write(&l.join(format!("d/{op}/sub/f")), "data\n");
    }
    set_xattr(&l.join("d/rmx/sub/f"), "user.gone", b"1");
    write(&l.join("r/f"), "read me\n");
    // a leftover of an earlier crash
    write(&w.join("work/#dead.1"), "half a copy");
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    assert!(
        fs::read_dir(w.join("work")).unwrap().next().is_none(),
        "the work dir was not emptied at mount"
    );
    let f = |op: &str| m.p(&format!("d/{op}/sub/f"));
    fs::OpenOptions::new().write(true).open(f("open")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(f("trunc"))
        .unwrap()
        .set_len(2)
        .unwrap();
    chmod(&f("chmod"), 0o600);
    std::os::unix::fs::chown(f("chown"), Some(5), Some(6)).unwrap();
    set_times(&f("utimens"), 12345);
    set_xattr(&f("setx"), "user.new", b"v");
    let c = CString::new(f("rmx").as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::removexattr(c.as_ptr(), c"user.gone".as_ptr()) },
        0
    );
    fs::hard_link(f("link"), m.p("d/link/sub/f2")).unwrap();
    for op in ops {
        let up = u.join(format!("d/{op}/sub/f"));
        assert!(up.exists(), "{op}: not copied up");
    }
    assert_eq!(fs::read(u.join("d/open/sub/f")).unwrap(), b"data\n");
    assert_eq!(fs::read(m.p("d/trunc/sub/f")).unwrap(), b"da");
    assert_eq!(fs::metadata(m.p("d/link/sub/f")).unwrap().nlink(), 2);
    // reads, listings, stats and a read-only open copy nothing
    fs::read(m.p("r/f")).unwrap();
    fs::read_dir(m.p("r")).unwrap().for_each(drop);
    fs::metadata(m.p("r/f")).unwrap();
    fs::File::open(m.p("r/f")).unwrap();
    assert!(!u.join("r").exists());
    // the lower never changed
    assert_eq!(fs::read(l.join("d/trunc/sub/f")).unwrap(), b"data\n");
    m.unmount();
}

#[test]
fn concurrent_writers_copy_up_once_and_lose_no_write() {
    assert_root();
    let t = TempDir::new("cu-conc");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    const MB: usize = 1 << 20;
    let base: Vec<u8> = (0..32 * MB).map(|i| (i % 251) as u8).collect();
    fs::write(l.join("big"), &base).unwrap();
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    let path = m.p("big");
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&[b'A' + i; 4096], i as u64 * 4 * MB as u64)
                    .unwrap();
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    let mut want = base;
    for i in 0..8usize {
        want[i * 4 * MB..i * 4 * MB + 4096].fill(b'A' + i as u8);
    }
    let check = |m: &Mount| {
        let got = fs::read(m.p("big")).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "a write was lost");
    };
    check(&m);
    assert!(fs::read(u.join("big")).unwrap() == want);
    assert!(fs::read_dir(w.join("work")).unwrap().next().is_none());
    m.unmount();
    drop(m);
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    check(&m);
    m.unmount();
}

/// Lower data, then pwrite in the middle, O_APPEND, ftruncate down and up, a
/// MAP_SHARED write and chmod: right through the mount, in the upper, after a remount.
#[test]
fn writes_after_copy_up_read_back_everywhere() {
    assert_root();
    let t = TempDir::new("cu-rw");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    let base: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(l.join("f"), &base).unwrap();
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    let mut want = base.clone();

    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    f.write_all_at(b"middle", 100_000).unwrap();
    want[100_000..100_006].copy_from_slice(b"middle");
    drop(f);

    use std::io::Write;
    let mut a = fs::OpenOptions::new().append(true).open(m.p("f")).unwrap();
    a.write_all(b"appended").unwrap();
    want.extend_from_slice(b"appended");
    drop(a);

    let f = fs::OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.set_len(150_000).unwrap();
    want.truncate(150_000);
    f.set_len(160_000).unwrap();
    want.resize(160_000, 0);
    drop(f);

    // a shared mapping written through memory
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    unsafe {
        let len = 160_000usize;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let s = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        s[5000..5006].copy_from_slice(b"mapped");
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
    want[5000..5006].copy_from_slice(b"mapped");
    drop(f);
    chmod(&m.p("f"), 0o600);

    let check = |m: &Mount, when: &str| {
        let got = fs::read(m.p("f")).unwrap();
        assert!(got == want, "{when}: content differs through the mount");
        assert_eq!(fs::metadata(m.p("f")).unwrap().mode() & 0o777, 0o600);
    };
    check(&m, "mounted");
    assert!(fs::read(u.join("f")).unwrap() == want, "upper file differs");
    assert!(fs::read(l.join("f")).unwrap() == base, "lower changed");
    m.unmount();
    drop(m);
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    check(&m, "after remount");
    drop_caches();
    check(&m, "after dropping caches");
    m.unmount();
}

/// A reader of the lower file stays open while a writer copies it up: it reads the
/// copy from then on, as with kernel overlayfs (which reopens the real file after a
/// copy-up), whether the kernel has the pages or not; and later opens of the upper
/// file mix with them (as root the upper file's I/O may go through FUSE passthrough,
/// the lower's through the daemon: the kernel allows one way per inode at a time).
#[test]
fn readers_and_writers_across_copy_up_mix() {
    use std::io::{Read, Seek, SeekFrom, Write};
    assert_root();
    let t = TempDir::new("cu-mix");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    fs::write(l.join("f"), "lower data\n").unwrap();
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    let mut reader = fs::File::open(m.p("f")).unwrap();
    let mut writer = fs::OpenOptions::new().append(true).open(m.p("f")).unwrap();
    writer.write_all(b"appended\n").unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "lower data\nappended\n",
        "the open reader reads the copy"
    );
    // Also where the kernel has no pages of it: the read comes to the daemon.
    writer.sync_all().unwrap();
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap(); // the page cache
    let mut fresh = String::new();
    reader.seek(SeekFrom::Start(0)).unwrap();
    reader.read_to_string(&mut fresh).unwrap();
    assert_eq!(fresh, "lower data\nappended\n", "after drop_caches");
    let mut second = fs::File::open(m.p("f")).unwrap();
    s.clear();
    second.read_to_string(&mut s).unwrap();
    assert_eq!(s, "lower data\nappended\n");
    drop(reader);
    drop(second);
    drop(writer);
    // all closed: new opens of the upper file, several at once
    let mut a = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    let mut b = fs::File::open(m.p("f")).unwrap();
    a.seek(SeekFrom::End(0)).unwrap();
    a.write_all(b"more\n").unwrap();
    s.clear();
    b.read_to_string(&mut s).unwrap();
    assert_eq!(s, "lower data\nappended\nmore\n");
    assert_eq!(fs::metadata(m.p("f")).unwrap().len(), 25);
    drop((a, b));
    assert_eq!(
        fs::read_to_string(u.join("f")).unwrap(),
        "lower data\nappended\nmore\n"
    );
    m.unmount();
}

/// The other name of a lower hard link, in a directory that a rename moved, is
/// linked to the copy too: after a write through one name, both show the new data
/// and a link count of 2, also after a remount.
#[test]
fn hard_link_in_a_moved_directory_follows_the_copy_up() {
    assert_root();
    let t = TempDir::new("cu-moved-link");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    fs::create_dir_all(l.join("a")).unwrap();
    fs::create_dir_all(l.join("opq")).unwrap();
    write(&l.join("hl1"), "lower data\n");
    fs::hard_link(l.join("hl1"), l.join("a/hl2")).unwrap();
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mnt = t.dir("m");
    let check = |m: &Mount| {
        for n in ["hl1", "opq/n4/hl2"] {
            let md = fs::symlink_metadata(m.p(n)).unwrap();
            assert_eq!((md.len(), md.nlink()), (20, 2), "{n}");
            assert_eq!(
                fs::read_to_string(m.p(n)).unwrap(),
                "lower data\nappended\n",
                "{n}"
            );
        }
    };
    {
        let m = Mount::new(&opts, &mnt);
        fs::rename(m.p("a"), m.p("opq/n4")).unwrap();
        let f = fs::OpenOptions::new()
            .append(true)
            .open(m.p("hl1"))
            .unwrap();
        f.write_at(b"appended\n", 0).unwrap();
        drop(f);
        drop_caches();
        check(&m);
        m.unmount();
    }
    let m = Mount::new(&opts, &mnt);
    check(&m);
}
