//! OVF 1.x descriptors (DMTF DSP0243): one virtual system with one disk, one NIC, CPUs and
//! memory, in the dialect VMware, VirtualBox and Glance all read.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::manifest::{manifest, ManifestHash, Source};
use super::{check_member_name, write_atomically, ContainerError};

/// The OVF 1.x envelope namespace (also used for the `ovf:` attribute prefix).
pub const OVF_NAMESPACE: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// CIM resource allocation settings: the `rasd:` children of each hardware `Item`.
pub const RASD_NAMESPACE: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
/// CIM virtual system settings: the `vssd:` children of `System`.
pub const VSSD_NAMESPACE: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
/// VMware's extensions (`vmw:osType`, `vmw:Config`).
pub const VMW_NAMESPACE: &str = "http://www.vmware.com/schema/ovf";
const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Disk format URI of a streamOptimized VMDK, the only one VMware's OVF import takes.
pub const VMDK_STREAM_OPTIMIZED_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// CIM `ResourceType` values of the hardware items (CIM_ResourceAllocationSettingData).
const RESOURCE_PROCESSOR: u32 = 3;
const RESOURCE_MEMORY: u32 = 4;
const RESOURCE_SCSI_CONTROLLER: u32 = 6;
const RESOURCE_ETHERNET: u32 = 10;
const RESOURCE_DISK: u32 = 17;

/// `InstanceID`s of the items; the disk names its controller through `Parent`.
const ID_CPU: u32 = 1;
const ID_MEMORY: u32 = 2;
const ID_SCSI: u32 = 3;
const ID_DISK: u32 = 4;
const ID_NIC: u32 = 5;

/// The package's single file and disk identifiers; `ovf:/disk/vmdisk1` is how the disk item
/// refers to the disk.
const FILE_ID: &str = "file1";
const DISK_ID: &str = "vmdisk1";
/// The logical network the NIC connects to; VMware's default port group name.
const NETWORK_NAME: &str = "VM Network";

/// Firmware the virtual machine boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Efi,
}

/// Emulated network adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    /// VMware paravirtual NIC; Ubuntu has the driver built in.
    Vmxnet3,
    /// Intel e1000, for hypervisors without VMXNET3.
    E1000,
}

impl NicModel {
    /// The `rasd:ResourceSubType` word.
    fn subtype(self) -> &'static str {
        match self {
            NicModel::Vmxnet3 => "VmxNet3",
            NicModel::E1000 => "E1000",
        }
    }
}

/// The guest operating system, as a CIM_OperatingSystem id plus VMware's guest id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestOs {
    /// CIM_OperatingSystem `OsType` value (94 is Ubuntu 64-bit).
    pub cim_id: u32,
    /// VMware guest identifier, e.g. `ubuntu64Guest`.
    pub vmw_os_type: String,
    pub description: String,
}

impl GuestOs {
    /// Ubuntu on x86-64.
    pub fn ubuntu_64() -> GuestOs {
        GuestOs {
            cim_id: 94,
            vmw_os_type: "ubuntu64Guest".to_owned(),
            description: "Ubuntu Linux (64-bit)".to_owned(),
        }
    }
}

/// What the descriptor says about the virtual machine and its one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfSpec {
    /// Virtual system name, shown by importers.
    pub name: String,
    /// Name of the disk file in the package (`References/File/@href`).
    pub disk_file_name: String,
    /// Size of that file in bytes.
    pub disk_file_size: u64,
    /// Virtual size of the disk in bytes.
    pub capacity_bytes: u64,
    pub cpus: u32,
    pub memory_mib: u64,
    pub firmware: Firmware,
    pub nic: NicModel,
    /// `Disk/@format`; [`VMDK_STREAM_OPTIMIZED_URI`] by default.
    pub disk_format_uri: String,
    pub os: GuestOs,
    /// VMware virtual hardware version, `vmx-13` (ESXi 6.5) by default.
    pub hw_version: String,
}

impl OvfSpec {
    /// A spec with the defaults: 2 CPUs, 2 GiB, BIOS, VMXNET3, Ubuntu 64-bit, `vmx-13`,
    /// streamOptimized VMDK.
    pub fn new(
        name: &str,
        disk_file_name: &str,
        disk_file_size: u64,
        capacity_bytes: u64,
    ) -> OvfSpec {
        OvfSpec {
            name: name.to_owned(),
            disk_file_name: disk_file_name.to_owned(),
            disk_file_size,
            capacity_bytes,
            cpus: 2,
            memory_mib: 2048,
            firmware: Firmware::Bios,
            nic: NicModel::Vmxnet3,
            disk_format_uri: VMDK_STREAM_OPTIMIZED_URI.to_owned(),
            os: GuestOs::ubuntu_64(),
            hw_version: "vmx-13".to_owned(),
        }
    }
}

/// Escapes text for XML content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// One `rasd:` element, in the order the CIM schema's sequence requires (alphabetical).
struct Item {
    fields: Vec<(&'static str, String)>,
}

impl Item {
    fn render(&self, out: &mut String) {
        out.push_str("      <Item>\n");
        for (name, value) in &self.fields {
            let _ = writeln!(out, "        <rasd:{name}>{}</rasd:{name}>", escape(value));
        }
        out.push_str("      </Item>\n");
    }
}

fn item(fields: &[(&'static str, String)]) -> Item {
    let mut fields = fields.to_vec();
    fields.sort_by_key(|(name, _)| *name);
    Item { fields }
}

/// Renders the OVF descriptor for `spec`. Every text and attribute value is XML-escaped.
pub fn descriptor(spec: &OvfSpec) -> String {
    let name = escape(&spec.name);
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<Envelope xmlns=\"{OVF_NAMESPACE}\" xmlns:ovf=\"{OVF_NAMESPACE}\" \
         xmlns:rasd=\"{RASD_NAMESPACE}\" xmlns:vssd=\"{VSSD_NAMESPACE}\" \
         xmlns:vmw=\"{VMW_NAMESPACE}\" xmlns:xsi=\"{XSI_NAMESPACE}\">"
    );
    out.push_str("  <References>\n");
    let _ = writeln!(
        out,
        "    <File ovf:href=\"{}\" ovf:id=\"{FILE_ID}\" ovf:size=\"{}\"/>",
        escape(&spec.disk_file_name),
        spec.disk_file_size
    );
    out.push_str("  </References>\n");
    out.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    let _ = writeln!(
        out,
        "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
         ovf:diskId=\"{DISK_ID}\" ovf:fileRef=\"{FILE_ID}\" ovf:format=\"{}\"/>",
        spec.capacity_bytes,
        escape(&spec.disk_format_uri)
    );
    out.push_str("  </DiskSection>\n");
    out.push_str("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n");
    let _ = writeln!(
        out,
        "    <Network ovf:name=\"{NETWORK_NAME}\">\n      \
         <Description>The {NETWORK_NAME} network</Description>\n    </Network>"
    );
    out.push_str("  </NetworkSection>\n");
    let _ = writeln!(out, "  <VirtualSystem ovf:id=\"{name}\">");
    out.push_str("    <Info>A virtual machine</Info>\n");
    let _ = writeln!(out, "    <Name>{name}</Name>");
    let _ = writeln!(
        out,
        "    <OperatingSystemSection ovf:id=\"{}\" vmw:osType=\"{}\">\n      \
         <Info>The kind of installed guest operating system</Info>\n      \
         <Description>{}</Description>\n    </OperatingSystemSection>",
        spec.os.cim_id,
        escape(&spec.os.vmw_os_type),
        escape(&spec.os.description)
    );
    out.push_str("    <VirtualHardwareSection>\n");
    out.push_str("      <Info>Virtual hardware requirements</Info>\n");
    let _ = writeln!(
        out,
        "      <System>\n        \
         <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        \
         <vssd:InstanceID>0</vssd:InstanceID>\n        \
         <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        \
         <vssd:VirtualSystemType>{}</vssd:VirtualSystemType>\n      </System>",
        escape(&spec.hw_version)
    );
    let items = [
        item(&[
            ("AllocationUnits", "hertz * 10^6".to_owned()),
            ("Description", "Number of Virtual CPUs".to_owned()),
            ("ElementName", format!("{} virtual CPU(s)", spec.cpus)),
            ("InstanceID", ID_CPU.to_string()),
            ("ResourceType", RESOURCE_PROCESSOR.to_string()),
            ("VirtualQuantity", spec.cpus.to_string()),
        ]),
        item(&[
            ("AllocationUnits", "byte * 2^20".to_owned()),
            ("Description", "Memory Size".to_owned()),
            ("ElementName", format!("{}MB of memory", spec.memory_mib)),
            ("InstanceID", ID_MEMORY.to_string()),
            ("ResourceType", RESOURCE_MEMORY.to_string()),
            ("VirtualQuantity", spec.memory_mib.to_string()),
        ]),
        item(&[
            ("Description", "SCSI Controller".to_owned()),
            ("ElementName", "SCSI Controller 0".to_owned()),
            ("InstanceID", ID_SCSI.to_string()),
            ("ResourceSubType", "lsilogic".to_owned()),
            ("ResourceType", RESOURCE_SCSI_CONTROLLER.to_string()),
        ]),
        item(&[
            ("AddressOnParent", "0".to_owned()),
            ("ElementName", "Hard Disk 1".to_owned()),
            ("HostResource", format!("ovf:/disk/{DISK_ID}")),
            ("InstanceID", ID_DISK.to_string()),
            ("Parent", ID_SCSI.to_string()),
            ("ResourceType", RESOURCE_DISK.to_string()),
        ]),
        item(&[
            ("AddressOnParent", "7".to_owned()),
            ("AutomaticAllocation", "true".to_owned()),
            ("Connection", NETWORK_NAME.to_owned()),
            (
                "Description",
                format!(
                    "{} ethernet adapter on \"{NETWORK_NAME}\"",
                    spec.nic.subtype()
                ),
            ),
            ("ElementName", "Network adapter 1".to_owned()),
            ("InstanceID", ID_NIC.to_string()),
            ("ResourceSubType", spec.nic.subtype().to_owned()),
            ("ResourceType", RESOURCE_ETHERNET.to_string()),
        ]),
    ];
    for item in &items {
        item.render(&mut out);
    }
    if spec.firmware == Firmware::Efi {
        out.push_str(
            "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n",
        );
    }
    out.push_str("    </VirtualHardwareSection>\n");
    out.push_str("  </VirtualSystem>\n");
    out.push_str("</Envelope>\n");
    out
}

/// Completes an unpacked OVF package in `dir` around its disk `dir/<spec.disk_file_name>`:
/// writes `<stem>.ovf` (with the disk's real file size) and `<stem>.mf` (digests of both), each
/// under a temporary name until complete. Returns the descriptor and manifest paths.
pub fn write_package_files(
    dir: &Path,
    stem: &str,
    spec: &OvfSpec,
    hash: ManifestHash,
) -> Result<(PathBuf, PathBuf), ContainerError> {
    let ovf_name = format!("{stem}.ovf");
    let mf_name = format!("{stem}.mf");
    check_member_name(&ovf_name)?;
    check_member_name(&spec.disk_file_name)?;
    let disk = dir.join(&spec.disk_file_name);
    let disk_file_size = std::fs::metadata(&disk)
        .map_err(|e| ContainerError::io(&disk, "stat", e))?
        .len();
    let text = descriptor(&OvfSpec {
        disk_file_size,
        ..spec.clone()
    });
    let mf = manifest(
        hash,
        &[
            (ovf_name.as_str(), Source::Bytes(text.as_bytes())),
            (spec.disk_file_name.as_str(), Source::File(&disk)),
        ],
    )?;
    let ovf_path = dir.join(&ovf_name);
    let mf_path = dir.join(&mf_name);
    for (path, bytes) in [(&ovf_path, text.as_bytes()), (&mf_path, mf.as_bytes())] {
        write_atomically(path, |writer, temp| {
            writer
                .write_all(bytes)
                .map_err(|e| ContainerError::io(temp, "write", e))
        })?;
    }
    Ok((ovf_path, mf_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::oracle;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x\u{FFFD}y");
    }

    #[test]
    fn golden_fragments() {
        let text = descriptor(&OvfSpec::new("noble", "noble.vmdk", 123, 10 << 30));
        for fragment in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"",
            "<File ovf:href=\"noble.vmdk\" ovf:id=\"file1\" ovf:size=\"123\"/>",
            "<Disk ovf:capacity=\"10737418240\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk1\" ovf:fileRef=\"file1\" \
             ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>",
            "<OperatingSystemSection ovf:id=\"94\" vmw:osType=\"ubuntu64Guest\">",
            "<vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>",
            "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
            "<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>",
        ] {
            assert!(text.contains(fragment), "missing {fragment:?} in\n{text}");
        }
        // BIOS is the default: no firmware config.
        assert!(!text.contains("vmw:key=\"firmware\""));
    }

    #[test]
    fn efi_adds_the_firmware_config() {
        let mut spec = OvfSpec::new("n", "d.vmdk", 1, 1);
        spec.firmware = Firmware::Efi;
        assert!(descriptor(&spec).contains(
            "<vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>"
        ));
    }

    /// Parses the descriptor with Python's ElementTree, an XML parser independent of ours, and
    /// returns the facts it finds as JSON.
    fn parse_with_python(xml: &str) -> Option<serde_json::Value> {
        let python = oracle("python3")?;
        const SCRIPT: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
VSSD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData}"
VMW = "{http://www.vmware.com/schema/ovf}"
root = ET.parse(sys.argv[1]).getroot()
f = root.find(OVF + "References/" + OVF + "File")
d = root.find(OVF + "DiskSection/" + OVF + "Disk")
vs = root.find(OVF + "VirtualSystem")
os_ = vs.find(OVF + "OperatingSystemSection")
hw = vs.find(OVF + "VirtualHardwareSection")
items = []
for it in hw.findall(OVF + "Item"):
    items.append({c.tag[len(RASD):]: c.text for c in it})
cfg = [dict((k.split("}")[1], v) for k, v in c.attrib.items()) for c in hw.findall(VMW + "Config")]
print(json.dumps({
  "root": root.tag,
  "file": {k.split("}")[1]: v for k, v in f.attrib.items()},
  "disk": {k.split("}")[1]: v for k, v in d.attrib.items()},
  "network": root.find(OVF + "NetworkSection/" + OVF + "Network").get(OVF + "name"),
  "name": vs.find(OVF + "Name").text,
  "vs_id": vs.get(OVF + "id"),
  "os_id": os_.get(OVF + "id"),
  "os_type": os_.get(VMW + "osType"),
  "system_type": hw.find(OVF + "System/" + VSSD + "VirtualSystemType").text,
  "items": items,
  "config": cfg,
}))
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ovf");
        std::fs::write(&path, xml).unwrap();
        Some(python.json(["-c".as_ref(), SCRIPT.as_ref(), path.as_os_str()]))
    }

    #[test]
    fn independent_parser_sees_the_structure() {
        let mut spec = OvfSpec::new(
            "noble <\"test\"> & co",
            "noble & co.vmdk",
            654_321,
            (20 << 30) + 512,
        );
        spec.firmware = Firmware::Efi;
        spec.nic = NicModel::E1000;
        spec.cpus = 4;
        spec.memory_mib = 4096;
        let Some(v) = parse_with_python(&descriptor(&spec)) else {
            return;
        };
        assert_eq!(v["root"], format!("{{{OVF_NAMESPACE}}}Envelope"));
        assert_eq!(v["file"]["href"], "noble & co.vmdk");
        assert_eq!(v["file"]["size"], "654321");
        assert_eq!(v["file"]["id"], v["disk"]["fileRef"]);
        assert_eq!(v["disk"]["capacity"], ((20u64 << 30) + 512).to_string());
        assert_eq!(v["disk"]["capacityAllocationUnits"], "byte");
        assert_eq!(v["disk"]["format"], VMDK_STREAM_OPTIMIZED_URI);
        assert_eq!(v["network"], NETWORK_NAME);
        assert_eq!(v["name"], "noble <\"test\"> & co");
        assert_eq!(v["vs_id"], "noble <\"test\"> & co");
        assert_eq!(v["os_id"], "94");
        assert_eq!(v["os_type"], "ubuntu64Guest");
        assert_eq!(v["system_type"], "vmx-13");

        let items = v["items"].as_array().unwrap();
        let types: Vec<&str> = items
            .iter()
            .map(|i| i["ResourceType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["3", "4", "6", "17", "10"]);
        let by_type = |t: &str| items.iter().find(|i| i["ResourceType"] == t).unwrap();
        assert_eq!(by_type("3")["VirtualQuantity"], "4");
        assert_eq!(by_type("4")["VirtualQuantity"], "4096");
        assert_eq!(by_type("4")["AllocationUnits"], "byte * 2^20");
        assert_eq!(by_type("6")["ResourceSubType"], "lsilogic");
        let disk = by_type("17");
        assert_eq!(
            disk["HostResource"],
            format!("ovf:/disk/{}", v["disk"]["diskId"].as_str().unwrap())
        );
        assert_eq!(disk["Parent"], by_type("6")["InstanceID"]);
        assert_eq!(by_type("10")["ResourceSubType"], "E1000");
        assert_eq!(by_type("10")["Connection"], NETWORK_NAME);

        assert_eq!(
            v["config"],
            serde_json::json!([{"required": "false", "key": "firmware", "value": "efi"}])
        );
    }

    #[test]
    fn rasd_children_are_in_schema_order() {
        let text = descriptor(&OvfSpec::new("n", "d.vmdk", 1, 1));
        let nic = text.split("<Item>").last().unwrap();
        let connection = nic.find("rasd:Connection").unwrap();
        let element_name = nic.find("rasd:ElementName").unwrap();
        let resource_type = nic.find("rasd:ResourceType").unwrap();
        assert!(connection < element_name && element_name < resource_type);
    }
}
