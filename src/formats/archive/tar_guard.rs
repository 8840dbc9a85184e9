//! A `Read` adapter that follows the tar block structure and refuses oversized metadata entries.
//!
//! The tar crate reads GNU long names (`L`, `K`) and pax headers (`x`, `g`) wholly into memory,
//! as large as their header says; inside a compressed archive a few KiB can announce gigabytes.
//! This guard sees every header before the tar crate does and fails the read instead. It stops
//! watching (and lets everything through) at the end of the archive, on a header it cannot
//! make sense of (the tar crate then reports the error), or when told to.

use std::io::Read;

/// Tar block size.
const BLOCK: usize = 512;
/// Largest long name or pax header accepted: real ones are a few hundred bytes.
pub const METADATA_LIMIT: u64 = 1 << 20;
/// Header fields (offsets in the 512-byte ustar/GNU header).
const SIZE_FIELD: std::ops::Range<usize> = 124..136;
const CHECKSUM_FIELD: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
/// GNU sparse header: `isextended` flag of the header, and of each extension block.
const GNU_ISEXTENDED: usize = 482;
const GNU_EXT_ISEXTENDED: usize = 504;
/// Entry types whose data the tar crate keeps in memory.
const GNU_LONGNAME: u8 = b'L';
const GNU_LONGLINK: u8 = b'K';
const PAX_LOCAL: u8 = b'x';
const PAX_GLOBAL: u8 = b'g';
/// GNU old-style sparse file.
const GNU_SPARSE: u8 = b'S';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting the next header block.
    Header,
    /// Collecting a GNU sparse extension block; the entry's data follows the last one.
    SparseExtension { data: u64 },
    /// Passing over an entry's data (padded to whole blocks).
    Data { remaining: u64 },
    /// Not watching any more.
    Off,
}

pub struct TarGuard<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    /// The data of a pax local header being passed over (at most `METADATA_LIMIT`).
    pax: Option<Vec<u8>>,
    /// Size for the next entry from a pax `size=` record.
    pax_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            pax: None,
            pax_size: None,
        }
    }

    /// Stops watching: what follows is read without interpretation.
    pub fn disable(&mut self) {
        self.state = State::Off;
        self.pax = None;
    }

    fn feed(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Off => return Ok(()),
                State::Data { remaining } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    if let Some(pax) = self.pax.as_mut() {
                        pax.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    let remaining = remaining - n as u64;
                    self.state = State::Data { remaining };
                    if remaining == 0 {
                        self.end_of_data();
                    }
                }
                State::Header | State::SparseExtension { .. } => {
                    let n = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    data = &data[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.block_complete()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_complete(&mut self) -> std::io::Result<()> {
        match self.state {
            State::SparseExtension { data } => {
                if self.block[GNU_EXT_ISEXTENDED] == 0 {
                    self.start_data(data);
                }
                Ok(())
            }
            _ => self.header(),
        }
    }

    fn header(&mut self) -> std::io::Result<()> {
        let block = &self.block;
        if block.iter().all(|&b| b == 0) || !checksum_matches(block) {
            // The end of the archive, or garbage the tar crate will reject.
            self.disable();
            return Ok(());
        }
        let Some(header_size) = parse_size(&block[SIZE_FIELD]) else {
            self.disable();
            return Ok(());
        };
        let typeflag = block[TYPEFLAG];
        let is_metadata = matches!(
            typeflag,
            GNU_LONGNAME | GNU_LONGLINK | PAX_LOCAL | PAX_GLOBAL
        );
        let size = if is_metadata {
            header_size
        } else {
            self.pax_size.take().unwrap_or(header_size)
        };
        if is_metadata && size > METADATA_LIMIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "tar metadata entry (type {:?}) of {size} bytes, more than {METADATA_LIMIT}",
                    typeflag as char
                ),
            ));
        }
        let Some(data) = size.checked_next_multiple_of(BLOCK as u64) else {
            self.disable();
            return Ok(());
        };
        if typeflag == PAX_LOCAL {
            // Bounded by METADATA_LIMIT just above.
            self.pax = Some(Vec::with_capacity(size as usize));
        }
        if typeflag == GNU_SPARSE && block[GNU_ISEXTENDED] != 0 {
            self.state = State::SparseExtension { data };
        } else {
            self.start_data(data);
        }
        Ok(())
    }

    fn start_data(&mut self, data: u64) {
        self.state = State::Data { remaining: data };
        if data == 0 {
            self.end_of_data();
        }
    }

    fn end_of_data(&mut self) {
        if let Some(pax) = self.pax.take() {
            self.pax_size = pax_size(&pax);
        }
        self.state = State::Header;
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}

/// The header checksum: the byte sum with the checksum field read as spaces, stored in octal.
fn checksum_matches(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&block[CHECKSUM_FIELD]) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if CHECKSUM_FIELD.contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    stored == sum
}

/// A size field: octal text, or GNU base-256 (high bit of the first byte set).
fn parse_size(field: &[u8]) -> Option<u64> {
    match field.split_first() {
        Some((&first, rest)) if first & 0x80 != 0 => {
            // The remaining 95 bits must fit in 64: leading bytes zero.
            let (high, low) = rest.split_at(rest.len().checked_sub(8)?);
            if first != 0x80 || high.iter().any(|&b| b != 0) {
                return None;
            }
            Some(u64::from_be_bytes(low.try_into().ok()?))
        }
        _ => parse_octal(field),
    }
}

/// Octal digits, surrounded by optional spaces and ended by NUL or space.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    let mut digits = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// The `size` record of pax header data (`"<len> size=<decimal>\n"` records).
fn pax_size(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.lines().find_map(|record| {
        let (_, pair) = record.split_once(' ')?;
        let value = pair.strip_prefix("size=")?;
        value.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header with `name`, `typeflag` and `size` and a valid checksum.
    fn header(name: &str, typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_cksum();
        *h.as_bytes()
    }

    fn read_through(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads so that blocks arrive split.
        let mut guard = TarGuard::new(std::io::Cursor::new(bytes));
        let mut buf = [0u8; 100];
        loop {
            match guard.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn huge_long_name_is_refused() {
        let mut bytes = header("././@LongLink", GNU_LONGNAME, METADATA_LIMIT + 1).to_vec();
        bytes.extend([b'a'; 1024]);
        let error = read_through(&bytes).unwrap_err();
        assert!(error.to_string().contains("metadata"), "{error}");
    }

    #[test]
    fn huge_pax_header_after_a_regular_entry_is_refused() {
        let mut bytes = header("a.ovf", b'0', 700).to_vec();
        bytes.extend([b'x'; 1024]);
        bytes.extend(header("PaxHeaders/b", PAX_LOCAL, 5 << 30));
        assert!(read_through(&bytes).is_err());
    }

    #[test]
    fn small_metadata_and_data_pass_unchanged() {
        let name = "n".repeat(300);
        let mut bytes = header("././@LongLink", GNU_LONGNAME, 301).to_vec();
        let mut data = name.into_bytes();
        data.resize(512, 0);
        bytes.extend(&data);
        // Data that looks like a huge long-name header must be passed over, not parsed.
        bytes.extend(header("disk.img", b'0', 1024));
        bytes.extend(header("x", GNU_LONGNAME, 1 << 40));
        bytes.extend([0u8; 512]);
        bytes.extend([0u8; 1024]);
        assert_eq!(read_through(&bytes).unwrap(), bytes);
    }

    #[test]
    fn pax_size_overrides_the_next_header() {
        let record = "16 size=1048576\n";
        let mut bytes = header("PaxHeaders/disk", PAX_LOCAL, record.len() as u64).to_vec();
        let mut data = record.as_bytes().to_vec();
        data.resize(512, 0);
        bytes.extend(data);
        // The header says 0 bytes; pax says 1 MiB, which holds a fake huge long-name header.
        bytes.extend(header("disk.img", b'0', 0));
        let mut disk = vec![0u8; 1 << 20];
        disk[..512].copy_from_slice(&header("y", GNU_LONGNAME, 1 << 40));
        bytes.extend(&disk);
        bytes.extend(header("next", GNU_LONGNAME, 2 << 20));
        let error = read_through(&bytes).unwrap_err();
        assert!(error.to_string().contains("2097152"), "{error}");
    }

    #[test]
    fn fields_parse_octal_and_base_256() {
        // Octal with NUL terminator, as GNU tar writes.
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        // Leading spaces, space terminator (old tars).
        assert_eq!(parse_size(b"   1750 \0\0\0\0"), Some(1000));
        // Base-256: 0x80 marker, then big-endian.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(parse_size(&big), Some(9 << 30));
        // Base-256 beyond 64 bits.
        big[3] = 1;
        assert_eq!(parse_size(&big), None);
        // A non-octal digit.
        assert_eq!(parse_size(b"00000001780\0"), None);
        assert_eq!(parse_size(&[0u8; 12]), None);
    }

    #[test]
    fn bad_checksum_stops_watching() {
        let mut block = header("x", GNU_LONGNAME, 1 << 40);
        block[0] ^= 1;
        let mut bytes = block.to_vec();
        bytes.extend([0u8; 512]);
        assert_eq!(read_through(&bytes).unwrap(), bytes);
    }
}
