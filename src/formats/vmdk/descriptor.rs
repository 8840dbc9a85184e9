//! The text descriptor: embedded in sparse extents, or a file of its own for monolithicFlat.

/// First line of every descriptor (libvmdk insists on it exactly).
pub const SIGNATURE: &str = "# Disk DescriptorFile";
/// `parentCID` of a disk without a parent.
pub const NO_PARENT: u32 = 0xffff_ffff;
/// Largest descriptor we read, in bytes; real ones are under 2 KiB.
pub const MAX_DESCRIPTOR_LEN: u64 = 1 << 20;
/// VMware's "unknown/third-party tools" version, qemu's default `ddb.toolsVersion`.
pub const DEFAULT_TOOLS_VERSION: &str = "2147483647";

/// One `RW <sectors> <type> "<file>" [offset]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: String,
    pub sectors: u64,
    pub kind: String,
    pub file: String,
    pub offset: u64,
}

/// The facts of a descriptor cloudimg uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    pub adapter_type: Option<String>,
    pub hw_version: Option<String>,
}

impl Descriptor {
    /// Parses descriptor text (trailing NULs of an embedded descriptor are ignored). Errors
    /// give the 1-based line number.
    pub fn parse(text: &str) -> Result<Descriptor, (usize, String)> {
        let mut d = Descriptor::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = n + 1;
            if let Some((key, value)) = line.split_once('=') {
                let key = key.trim();
                let value = value.trim().trim_matches('"');
                match key {
                    "CID" => {
                        d.cid =
                            Some(parse_hex(value).ok_or((number, format!("bad CID {value:?}")))?)
                    }
                    "parentCID" => {
                        d.parent_cid = Some(
                            parse_hex(value).ok_or((number, format!("bad parentCID {value:?}")))?,
                        )
                    }
                    "createType" => d.create_type = Some(value.to_owned()),
                    "parentFileNameHint" => d.parent_hint = Some(value.to_owned()),
                    "ddb.adapterType" => d.adapter_type = Some(value.to_owned()),
                    "ddb.virtualHWVersion" => d.hw_version = Some(value.to_owned()),
                    _ => {}
                }
            } else {
                d.extents
                    .push(parse_extent(line).ok_or((number, format!("bad extent line {line:?}")))?);
            }
        }
        Ok(d)
    }

    /// Whether the descriptor names a parent disk (a snapshot/delta link).
    pub fn has_parent(&self) -> bool {
        self.parent_cid.is_some_and(|c| c != NO_PARENT) || self.parent_hint.is_some()
    }
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value, 16).ok()
}

fn parse_extent(line: &str) -> Option<ExtentLine> {
    let (head, rest) = line.split_once('"')?;
    let (file, tail) = rest.split_once('"')?;
    let mut words = head.split_whitespace();
    let access = words.next()?.to_owned();
    if !matches!(access.as_str(), "RW" | "RDONLY" | "NOACCESS") {
        return None;
    }
    let sectors = words.next()?.parse().ok()?;
    let kind = words.next()?.to_owned();
    if words.next().is_some() {
        return None;
    }
    let offset = match tail.trim() {
        "" => 0,
        t => t.parse().ok()?,
    };
    Some(ExtentLine {
        access,
        sectors,
        kind,
        file: file.to_owned(),
        offset,
    })
}

/// What a writer puts in its descriptor.
#[derive(Clone, Debug)]
pub struct DescriptorSpec<'a> {
    pub cid: u32,
    pub create_type: &'a str,
    /// `SPARSE` or `FLAT`.
    pub extent_kind: &'a str,
    pub extent_file: &'a str,
    /// Virtual size in bytes (a whole number of sectors).
    pub size: u64,
    pub hw_version: &'a str,
    pub adapter_type: &'a str,
    pub tools_version: &'a str,
}

impl DescriptorSpec<'_> {
    fn heads(&self) -> u64 {
        // VMware uses 16 heads for IDE disks and 255 for every SCSI adapter.
        if self.adapter_type == "ide" {
            16
        } else {
            255
        }
    }

    fn cylinders(&self) -> u64 {
        self.size / (63 * self.heads() * 512)
    }

    fn extent_line(&self) -> String {
        let sectors = self.size.div_ceil(512);
        match self.extent_kind {
            "FLAT" => format!("RW {sectors} FLAT \"{}\" 0\n", self.extent_file),
            kind => format!("RW {sectors} {kind} \"{}\"\n", self.extent_file),
        }
    }

    /// qemu-img's descriptor, byte for byte (CID in unpadded hex, as qemu prints it).
    pub fn render_qemu(&self) -> String {
        format!(
            "{SIGNATURE}\nversion=1\nCID={:x}\nparentCID=ffffffff\ncreateType=\"{}\"\n\n\
             # Extent description\n{}\n# The Disk Data Base\n#DDB\n\n\
             ddb.virtualHWVersion = \"{}\"\nddb.geometry.cylinders = \"{}\"\n\
             ddb.geometry.heads = \"{}\"\nddb.geometry.sectors = \"63\"\n\
             ddb.adapterType = \"{}\"\nddb.toolsVersion = \"{}\"\n",
            self.cid,
            self.create_type,
            self.extent_line(),
            self.hw_version,
            self.cylinders(),
            self.heads(),
            self.adapter_type,
            self.tools_version,
        )
    }

    /// The descriptor VMware's own exporters write for a stream: padded CID, long content ID,
    /// tools install type.
    pub fn render_vmware(&self, long_content_id: &str) -> String {
        format!(
            "{SIGNATURE}\nversion=1\nCID={:08x}\nparentCID=ffffffff\ncreateType=\"{}\"\n\n\
             # Extent description\n{}\n# The Disk Data Base\n#DDB\n\n\
             ddb.adapterType = \"{}\"\nddb.geometry.cylinders = \"{}\"\n\
             ddb.geometry.heads = \"{}\"\nddb.geometry.sectors = \"63\"\n\
             ddb.longContentID = \"{long_content_id}\"\nddb.toolsInstallType = \"4\"\n\
             ddb.toolsVersion = \"{}\"\nddb.virtualHWVersion = \"{}\"\n",
            self.cid,
            self.create_type,
            self.extent_line(),
            self.adapter_type,
            self.cylinders(),
            self.heads(),
            self.tools_version,
            self.hw_version,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_SPARSE: &str = "# Disk DescriptorFile\nversion=1\nCID=e05cebf5\nparentCID=ffffffff\n\
        createType=\"monolithicSparse\"\n\n# Extent description\nRW 143360 SPARSE \"sparse.vmdk\"\n\n\
        # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"142\"\n\
        ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n\
        ddb.toolsVersion = \"2147483647\"\n";

    #[test]
    fn qemu_descriptor_parses() {
        let d = Descriptor::parse(QEMU_SPARSE).unwrap();
        assert_eq!(d.cid, Some(0xe05cebf5));
        assert_eq!(d.create_type.as_deref(), Some("monolithicSparse"));
        assert!(!d.has_parent());
        assert_eq!(
            d.extents,
            vec![ExtentLine {
                access: "RW".into(),
                sectors: 143360,
                kind: "SPARSE".into(),
                file: "sparse.vmdk".into(),
                offset: 0
            }]
        );
    }

    #[test]
    fn render_matches_qemu_text() {
        let spec = DescriptorSpec {
            cid: 0xe05cebf5,
            create_type: "monolithicSparse",
            extent_kind: "SPARSE",
            extent_file: "sparse.vmdk",
            size: 143360 * 512,
            hw_version: "4",
            adapter_type: "ide",
            tools_version: DEFAULT_TOOLS_VERSION,
        };
        assert_eq!(spec.render_qemu(), QEMU_SPARSE);
    }

    #[test]
    fn flat_extent_line_with_offset_parses() {
        let d = Descriptor::parse("RW 2048 FLAT \"disk-flat.vmdk\" 0\n").unwrap();
        assert_eq!(d.extents[0].kind, "FLAT");
        assert_eq!(d.extents[0].file, "disk-flat.vmdk");
    }

    #[test]
    fn parent_is_detected() {
        let d =
            Descriptor::parse("parentCID=12345678\nparentFileNameHint=\"base.vmdk\"\n").unwrap();
        assert!(d.has_parent());
    }

    #[test]
    fn bad_sector_count_is_rejected() {
        assert_eq!(
            Descriptor::parse("version=1\nRW 2x48 FLAT \"a\" 0\n")
                .unwrap_err()
                .0,
            2
        );
    }

    #[test]
    fn bad_cid_is_rejected() {
        assert!(Descriptor::parse("CID=zz\n").is_err());
    }
}
