//! Content digests: `sha256:<64 hex>` names of blobs, DiffIDs and ChainIDs, and the
//! reader and writer that hash what passes through them.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// The hex form of a sha256 hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `data`.
pub fn of(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest, if it is one (64 lowercase hex digits);
/// nothing else is ever used as a file name in the store.
pub fn hex_of(digest: &str) -> Result<&str, String> {
    let h = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unsupported digest '{digest}' (only sha256 is)"))?;
    if h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(h)
    } else {
        Err(format!("malformed digest '{digest}'"))
    }
}

/// The ChainIDs of a stack of DiffIDs, bottom first: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A reader that hashes and counts the bytes read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    pub count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left (a tar's padding after its end), then gives the digest,
    /// the byte count and the inner reader.
    pub fn finish(mut self) -> io::Result<(String, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        let d = format!("sha256:{}", hex(&self.hasher.finalize()));
        Ok((d, self.count, self.inner))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts the bytes written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    pub count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest of what was written, the byte count and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        let d = format!("sha256:{}", hex(&self.hasher.finalize()));
        (d, self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that copies what it reads to a writer (the blob being kept verbatim while
/// its contents are unpacked).
pub struct TeeReader<R, W> {
    pub inner: R,
    pub copy: W,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = of(b"a");
        let b = of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn only_sha256_hex_digests_name_files() {
        let d = of(b"x");
        assert_eq!(hex_of(&d).unwrap().len(), 64);
        assert!(hex_of("sha512:00").is_err());
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of(&d.to_uppercase()).is_err());
    }
}
