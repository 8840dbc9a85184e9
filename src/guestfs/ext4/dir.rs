//! Directory entries (`ext4_dir_entry_2`, or `ext4_dir_entry` without the filetype feature).
//!
//! A linear scan reads every kind of directory block: htree directories keep their index in
//! entries whose inode is 0 or whose record spans the index (the `..` entry of the root block),
//! and metadata_csum's tail is an entry with inode 0.

use crate::formats::fields::{le16, le32};

/// The fixed part of an entry: inode (4), rec_len (2), name_len (1 or 2), file_type (1).
const HEADER: usize = 8;
/// Entries are 4-byte aligned.
const ALIGN: usize = 4;

/// One live entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub inode: u32,
    pub name: &'a [u8],
}

/// Why a block is not a valid directory block: the offset of the bad entry and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadEntry {
    pub offset: usize,
    pub reason: String,
}

/// The live entries (inode ≠ 0) of one directory block, in order.
pub fn entries(block: &[u8], filetype: bool) -> Result<Vec<Entry<'_>>, BadEntry> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let bad = |reason: String| BadEntry { offset: at, reason };
        if block.len() - at < HEADER {
            return Err(bad(format!(
                "{} bytes left, less than an entry",
                block.len() - at
            )));
        }
        let inode = le32(block, at);
        let rec_len = usize::from(le16(block, at + 4));
        let name_len = if filetype {
            usize::from(block[at + 6])
        } else {
            usize::from(le16(block, at + 6))
        };
        if rec_len < HEADER || rec_len % ALIGN != 0 || rec_len > block.len() - at {
            return Err(bad(format!("record length {rec_len}")));
        }
        if inode != 0 {
            if HEADER + name_len > rec_len {
                return Err(bad(format!(
                    "name of {name_len} bytes in a {rec_len}-byte record"
                )));
            }
            out.push(Entry {
                inode,
                name: &block[at + HEADER..at + HEADER + name_len],
            });
        }
        at += rec_len;
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    /// A 64-byte block: "." (inode 2, 12 bytes), ".." (inode 2, 12 bytes), "vmlinuz"
    /// (inode 12, 16 bytes), then a deleted entry (inode 0) spanning the rest.
    fn block() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        let mut put = |at: usize, inode: u32, rec: u16, name: &[u8], kind: u8| {
            b[at..at + 4].copy_from_slice(&inode.to_le_bytes()); // inode
            b[at + 4..at + 6].copy_from_slice(&rec.to_le_bytes()); // rec_len
            b[at + 6] = name.len() as u8; // name_len
            b[at + 7] = kind; // file_type
            b[at + 8..at + 8 + name.len()].copy_from_slice(name); // name
        };
        put(0, 2, 12, b".", 2);
        put(12, 2, 12, b"..", 2);
        put(24, 12, 16, b"vmlinuz", 1);
        put(40, 0, 24, b"gone", 1);
        b
    }

    #[test]
    fn live_entries_are_listed_in_order() {
        let b = block();
        let names: Vec<(u32, &[u8])> = entries(&b, true)
            .unwrap()
            .iter()
            .map(|e| (e.inode, e.name))
            .collect();
        assert_eq!(
            names,
            [(2, &b"."[..]), (2, &b".."[..]), (12, &b"vmlinuz"[..])]
        );
    }

    #[test]
    fn a_record_length_off_by_one_byte_is_refused() {
        let mut b = block();
        b[24 + 4] = 17; // rec_len 17: not aligned
        assert_eq!(entries(&b, true).unwrap_err().offset, 24);
        let mut b = block();
        b[40 + 4] = 28; // rec_len passes the block's end
        assert!(entries(&b, true).is_err());
        let mut b = block();
        b[24 + 6] = 9; // a 9-byte name in a 16-byte record
        assert!(entries(&b, true).is_err());
        let mut b = block();
        b[4] = 0; // rec_len 0 would loop forever
        assert!(entries(&b, true).is_err());
    }
}
