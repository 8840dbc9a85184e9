//! Formats qemu-img knows that cloudimg does not read: recognised by content so that they are
//! refused by name instead of being read as raw (unknown is not raw).
//!
//! Each probe is a pure function of the [`Probe`] bytes and checks what qemu's own probe (or the
//! format's spec) checks: a magic number plus, where the format has one, a version field, so a
//! raw disk that merely starts with the magic text is not mistaken for the format.
//!
//! To add native support for one of these, give it a [`super::DiskFormat`] variant and a probe
//! in its own module, call that probe in [`super::detect`] before [`probe`], and drop its
//! variant here (as VHDX was: [`super::vhdx`]).

use super::Probe;

/// QED header magic `QED\0` (qemu docs/interop/qed_spec), little-endian u32 at offset 0.
const QED_MAGIC: &[u8] = b"QED\0";
/// Parallels header magics (qemu block/parallels.c), 16 bytes at offset 0, followed by a
/// little-endian u32 version that is always 2.
const PARALLELS_MAGICS: [&[u8]; 2] = [b"WithoutFreeSpace", b"WithouFreSpacExt"];
const PARALLELS_VERSION_OFFSET: usize = 16;
const PARALLELS_VERSION: u32 = 2;
/// LUKS header magic (LUKS1 and LUKS2 on-disk format), then a big-endian u16 version 1 or 2.
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";
const LUKS_VERSION_OFFSET: usize = 6;
const LUKS_VERSIONS: [u16; 2] = [1, 2];
/// Bochs sparse image header (qemu block/bochs.c): a 32-byte magic, then a 16-byte type that
/// is "Redolog" for every image qemu reads; both NUL-padded.
const BOCHS_MAGIC: &[u8] = b"Bochs Virtual HD Image\0";
const BOCHS_TYPE_OFFSET: usize = 32;
const BOCHS_TYPE: &[u8] = b"Redolog\0";
/// cloop v2.0 images start with this shell preamble (qemu block/cloop.c compares its prefix).
const CLOOP_MAGIC: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
/// Apple UDIF (dmg) trailer: the last 512 bytes, "koly", a big-endian u32 version 4 and a u32
/// header size of 512.
const DMG_MAGIC: &[u8] = b"koly";
const DMG_VERSION: u32 = 4;
const DMG_TRAILER_LEN: u32 = 512;
/// ISO 9660: the first volume descriptor is at sector 16 (0x8000); its standard identifier
/// "CD001" follows the one-byte type.
pub const ISO_IDENTIFIER_OFFSET: usize = 0x8001;
const ISO_IDENTIFIER: &[u8] = b"CD001";

/// A format recognised by content that cloudimg does not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForeignFormat {
    Qed,
    Parallels,
    Dmg,
    Cloop,
    Bochs,
    Luks,
    /// An ISO 9660 filesystem: Glance's `iso` disk format, which a user may upload as it is,
    /// but which is not a disk image to convert.
    Iso,
}

impl ForeignFormat {
    /// qemu-img's name for the format (Glance's `iso` for ISO 9660).
    pub fn name(self) -> &'static str {
        match self {
            ForeignFormat::Qed => "qed",
            ForeignFormat::Parallels => "parallels",
            ForeignFormat::Dmg => "dmg",
            ForeignFormat::Cloop => "cloop",
            ForeignFormat::Bochs => "bochs",
            ForeignFormat::Luks => "luks",
            ForeignFormat::Iso => "iso",
        }
    }

    /// "a QED image", for messages.
    pub fn described(self) -> &'static str {
        match self {
            ForeignFormat::Qed => "a QED image",
            ForeignFormat::Parallels => "a Parallels image",
            ForeignFormat::Dmg => "a dmg image",
            ForeignFormat::Cloop => "a cloop image",
            ForeignFormat::Bochs => "a Bochs image",
            ForeignFormat::Luks => "a LUKS container",
            ForeignFormat::Iso => "an ISO 9660 image",
        }
    }

    /// What the user can do instead, shown after the refusal.
    pub fn advice(self) -> &'static str {
        match self {
            ForeignFormat::Iso => {
                "an ISO goes to Glance as it is (disk_format iso), not converted; pass -f raw to treat its bytes as a raw disk"
            }
            ForeignFormat::Luks => {
                "open it with cryptsetup or qemu-img first (cloudimg does not decrypt), or pass -f raw to copy the ciphertext"
            }
            _ => "convert it with qemu-img first, or pass -f raw to treat its bytes as a raw disk",
        }
    }
}

impl std::fmt::Display for ForeignFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A test of a file's leading bytes.
type HeadCheck = fn(&[u8]) -> bool;

/// The foreign format `probe` holds, if any.
pub fn probe(probe: &Probe) -> Option<ForeignFormat> {
    probe_head(&probe.head).or_else(|| is_dmg(&probe.tail).then_some(ForeignFormat::Dmg))
}

/// The foreign format whose signature is in the leading bytes `head` (all but dmg, whose
/// signature is a trailer); used for disks inside archives too.
pub fn probe_head(head: &[u8]) -> Option<ForeignFormat> {
    let checks: [(ForeignFormat, HeadCheck); 6] = [
        (ForeignFormat::Qed, is_qed),
        (ForeignFormat::Parallels, is_parallels),
        (ForeignFormat::Luks, is_luks),
        (ForeignFormat::Bochs, is_bochs),
        (ForeignFormat::Cloop, is_cloop),
        (ForeignFormat::Iso, is_iso),
    ];
    checks
        .iter()
        .find(|(_, check)| check(head))
        .map(|(format, _)| *format)
}

fn u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u32_be(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn is_qed(head: &[u8]) -> bool {
    head.starts_with(QED_MAGIC)
}

fn is_parallels(head: &[u8]) -> bool {
    PARALLELS_MAGICS.iter().any(|magic| head.starts_with(magic))
        && u32_le(head, PARALLELS_VERSION_OFFSET) == Some(PARALLELS_VERSION)
}

fn is_luks(head: &[u8]) -> bool {
    let version = head
        .get(LUKS_VERSION_OFFSET..LUKS_VERSION_OFFSET + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    head.starts_with(LUKS_MAGIC) && version.is_some_and(|v| LUKS_VERSIONS.contains(&v))
}

fn is_bochs(head: &[u8]) -> bool {
    head.starts_with(BOCHS_MAGIC)
        && head
            .get(BOCHS_TYPE_OFFSET..)
            .is_some_and(|rest| rest.starts_with(BOCHS_TYPE))
}

fn is_cloop(head: &[u8]) -> bool {
    head.starts_with(CLOOP_MAGIC)
}

fn is_iso(head: &[u8]) -> bool {
    head.get(ISO_IDENTIFIER_OFFSET..)
        .is_some_and(|rest| rest.starts_with(ISO_IDENTIFIER))
}

fn is_dmg(tail: &[u8]) -> bool {
    tail.len() == DMG_TRAILER_LEN as usize
        && tail.starts_with(DMG_MAGIC)
        && u32_be(tail, 4) == Some(DMG_VERSION)
        && u32_be(tail, 8) == Some(DMG_TRAILER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_of(head: &[u8], tail: &[u8]) -> Probe {
        Probe {
            head: head.to_vec(),
            tail: tail.to_vec(),
            len: (head.len() + tail.len()) as u64,
        }
    }

    fn detect_head(head: &[u8]) -> Option<ForeignFormat> {
        probe(&probe_of(head, &[]))
    }

    /// Every byte of the signature matters: flipping any one of them leaves no match.
    fn each_flip_is_rejected(head: &[u8], upto: usize, tail: &[u8]) {
        let expected = probe(&probe_of(head, tail));
        assert!(expected.is_some());
        for at in 0..upto {
            let (mut h, mut t) = (head.to_vec(), tail.to_vec());
            if tail.is_empty() {
                h[at] ^= 0x01;
            } else {
                t[at] ^= 0x01;
            }
            assert_eq!(probe(&probe_of(&h, &t)), None, "{expected:?} byte {at}");
        }
    }

    fn bochs_header() -> Vec<u8> {
        let mut head = vec![0u8; 512];
        // magic[32]: "Bochs Virtual HD Image", NUL-padded
        head[..22].copy_from_slice(b"Bochs Virtual HD Image");
        // type[16] at 32: "Redolog"
        head[32..39].copy_from_slice(b"Redolog");
        // subtype[16] at 48: "Growing"
        head[48..55].copy_from_slice(b"Growing");
        // version (LE u32) at 64: 0x00020000
        head[64..68].copy_from_slice(&0x0002_0000u32.to_le_bytes());
        // header size (LE u32) at 68: 512
        head[68..72].copy_from_slice(&512u32.to_le_bytes());
        head
    }

    #[test]
    fn bochs_is_recognised_by_magic_and_type() {
        let head = bochs_header();
        assert_eq!(detect_head(&head), Some(ForeignFormat::Bochs));
        // The magic with its NUL terminator, and the type "Redolog\0".
        each_flip_is_rejected(&head, 23, &[]);
        let mut other_type = head.clone();
        other_type[32] = b'r';
        assert_eq!(detect_head(&other_type), None);
    }

    #[test]
    fn cloop_is_recognised_by_its_preamble() {
        let mut head = CLOOP_MAGIC.to_vec();
        // block size (BE u32) and block count (BE u32) follow the preamble at 128.
        head.resize(136, 0);
        head[128..132].copy_from_slice(&65536u32.to_be_bytes());
        head[132..136].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(detect_head(&head), Some(ForeignFormat::Cloop));
        each_flip_is_rejected(&head, CLOOP_MAGIC.len(), &[]);
    }

    fn koly() -> Vec<u8> {
        let mut tail = vec![0u8; 512];
        // signature "koly"
        tail[..4].copy_from_slice(b"koly");
        // version (BE u32): 4
        tail[4..8].copy_from_slice(&4u32.to_be_bytes());
        // header size (BE u32): 512
        tail[8..12].copy_from_slice(&512u32.to_be_bytes());
        // flags (BE u32): 1 (flattened)
        tail[12..16].copy_from_slice(&1u32.to_be_bytes());
        tail
    }

    #[test]
    fn dmg_is_recognised_by_its_koly_trailer() {
        let tail = koly();
        assert_eq!(probe(&probe_of(&[0; 512], &tail)), Some(ForeignFormat::Dmg));
        each_flip_is_rejected(&[0; 512], 12, &tail);
        // "koly" at the start of the file is not a trailer.
        assert_eq!(probe(&probe_of(&tail, &[0; 512])), None);
        // A file shorter than a trailer has none.
        assert_eq!(probe(&probe_of(&[], &tail[..511])), None);
    }

    #[test]
    fn iso_is_recognised_by_its_volume_descriptor() {
        let mut head = vec![0u8; ISO_IDENTIFIER_OFFSET + 2047];
        // volume descriptor type 1 (primary), then "CD001", then version 1
        head[0x8000] = 1;
        head[0x8001..0x8006].copy_from_slice(b"CD001");
        head[0x8006] = 1;
        assert_eq!(detect_head(&head), Some(ForeignFormat::Iso));
        for at in 0x8001..0x8006 {
            let mut flipped = head.clone();
            flipped[at] ^= 1;
            assert_eq!(detect_head(&flipped), None, "byte {at:#x}");
        }
        // "CD001" at an earlier offset is not an ISO 9660 descriptor.
        assert_eq!(detect_head(&head[1..]), None);
    }

    #[test]
    fn header_magics_with_versions() {
        let mut luks = b"LUKS\xba\xbe\x00\x02".to_vec();
        luks.resize(512, 0);
        assert_eq!(detect_head(&luks), Some(ForeignFormat::Luks));
        each_flip_is_rejected(&luks, 8, &[]);

        let mut parallels = b"WithoutFreeSpace\x02\x00\x00\x00".to_vec();
        parallels.resize(64, 0);
        assert_eq!(detect_head(&parallels), Some(ForeignFormat::Parallels));
        each_flip_is_rejected(&parallels, 20, &[]);

        let mut qed = b"QED\0".to_vec();
        qed.resize(64, 0);
        assert_eq!(detect_head(&qed), Some(ForeignFormat::Qed));
        each_flip_is_rejected(&qed, 4, &[]);

        // VHDX is read natively now: no longer foreign.
        let mut vhdx = b"vhdxfile".to_vec();
        vhdx.resize(64, 0);
        assert_eq!(detect_head(&vhdx), None);
    }

    #[test]
    fn foreign_disks_inside_archives_are_named() {
        let mut head = vec![0u8; 512];
        head[..4].copy_from_slice(b"QED\0");
        assert_eq!(probe_head(&head), Some(ForeignFormat::Qed));
        head[0] = b'q';
        assert_eq!(probe_head(&head), None);
    }

    #[test]
    fn short_and_empty_inputs_match_nothing() {
        assert_eq!(detect_head(&[]), None);
        assert_eq!(detect_head(b"LUKS\xba\xbe\x00"), None);
        assert_eq!(detect_head(b"WithoutFreeSpace\x02"), None);
    }
}
