//! The first `menuentry` of a GRUB configuration (`grub.cfg`), as `grub-mkconfig` writes it:
//! its `linux` line (kernel path and arguments) and its `initrd` line (one or more paths).
//!
//! This is not a GRUB script interpreter. Commands are split into words with GRUB's quoting
//! (`'…'` literal, `"…"` with `\` escapes, `\` outside quotes, `;` between commands, `#`
//! comments); `search`, `set`, `insmod`, `if … fi` and every other command are ignored, and
//! the default entry is taken to be the first (`grub-mkconfig`'s `set default="0"`). A word
//! that expands a variable (`$vt_handoff`) cannot be known without running the script: in the
//! kernel's arguments it is dropped (and listed in [`MenuEntry::dropped`]), in a path it is an
//! error. Paths may carry a GRUB device (`(hd0,gpt2)/vmlinuz`); [`split_device`] separates it.

/// Commands that load a kernel, and an initrd, in the forms GRUB's platforms name them.
const LINUX_COMMANDS: [&str; 3] = ["linux", "linux16", "linuxefi"];
const INITRD_COMMANDS: [&str; 3] = ["initrd", "initrd16", "initrdefi"];

/// What the first menu entry boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuEntry {
    pub title: String,
    /// 1-based line of the `menuentry` command.
    pub line: usize,
    /// The kernel path as written (GRUB passes it as `BOOT_IMAGE=`).
    pub kernel: String,
    /// The kernel's arguments, in order.
    pub args: Vec<String>,
    /// The initrd paths (GRUB loads them one after the other into one initramfs).
    pub initrds: Vec<String>,
    /// Arguments that expanded a variable, left out of `args`.
    pub dropped: Vec<String>,
}

/// A line and what is wrong on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// A word of a command: its text with quotes removed, and whether it expands a variable.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    text: String,
    expands: bool,
}

/// Parses `cfg` and returns its first menu entry.
pub fn first_menuentry(cfg: &str) -> Result<MenuEntry, ParseError> {
    let mut entry: Option<MenuEntry> = None;
    let mut depth = 0usize;
    let mut last_line = 0;
    for (index, line) in cfg.lines().enumerate() {
        let number = index + 1;
        last_line = number;
        let error = |reason: String| ParseError {
            line: number,
            reason,
        };
        for command in commands(line).map_err(error)? {
            let name = command[0].text.as_str();
            let opens = command.len() > 1 && command[command.len() - 1].text == "{";
            let Some(current) = entry.as_mut() else {
                if name == "menuentry" {
                    if !opens {
                        return Err(error(
                            "menuentry without a `{` at the end of its line".into(),
                        ));
                    }
                    let title = command.get(1).filter(|w| w.text != "{");
                    entry = Some(MenuEntry {
                        title: title.map(|w| w.text.clone()).unwrap_or_default(),
                        line: number,
                        kernel: String::new(),
                        args: Vec::new(),
                        initrds: Vec::new(),
                        dropped: Vec::new(),
                    });
                    depth = 1;
                }
                continue;
            };
            if name == "}" {
                depth -= 1;
                if depth == 0 {
                    return finish(entry.take().expect("inside an entry"));
                }
            } else if opens {
                depth += 1;
            } else if LINUX_COMMANDS.contains(&name) && current.kernel.is_empty() {
                let path = command
                    .get(1)
                    .ok_or_else(|| error(format!("`{name}` without a kernel path")))?;
                current.kernel = plain_path(path).map_err(error)?;
                for word in &command[2..] {
                    if word.expands {
                        current.dropped.push(word.text.clone());
                    } else {
                        current.args.push(word.text.clone());
                    }
                }
            } else if INITRD_COMMANDS.contains(&name) && current.initrds.is_empty() {
                if command.len() < 2 {
                    return Err(error(format!("`{name}` without a path")));
                }
                current.initrds = command[1..]
                    .iter()
                    .map(plain_path)
                    .collect::<Result<_, _>>()
                    .map_err(error)?;
            }
        }
    }
    Err(match entry {
        None => ParseError {
            line: last_line,
            reason: "no menuentry".into(),
        },
        Some(entry) => ParseError {
            line: entry.line,
            reason: "the menuentry is not closed by `}`".into(),
        },
    })
}

fn finish(entry: MenuEntry) -> Result<MenuEntry, ParseError> {
    if entry.kernel.is_empty() {
        return Err(ParseError {
            line: entry.line,
            reason: format!(
                "the first menuentry ({:?}) has no `linux` command",
                entry.title
            ),
        });
    }
    Ok(entry)
}

fn plain_path(word: &Word) -> Result<String, String> {
    if word.expands {
        return Err(format!(
            "the path {:?} uses a variable, known only when GRUB runs",
            word.text
        ));
    }
    if word.text.is_empty() {
        return Err("an empty path".into());
    }
    Ok(word.text.clone())
}

/// Splits a GRUB path into its device (`hd0,gpt2` of `(hd0,gpt2)/vmlinuz`) and the path.
pub fn split_device(path: &str) -> (Option<&str>, &str) {
    match path.strip_prefix('(').and_then(|rest| rest.split_once(')')) {
        Some((device, rest)) => (Some(device), rest),
        None => (None, path),
    }
}

/// The partition number of a GRUB device name (`hd0,gpt2`, `hd0,msdos1`, `hd0,2`), if any.
pub fn device_partition(device: &str) -> Option<u32> {
    let (_, part) = device.split_once(',')?;
    let digits = part.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    digits.parse().ok().filter(|n| *n > 0)
}

/// Splits one line into commands of words (empty commands dropped).
fn commands(line: &str) -> Result<Vec<Vec<Word>>, String> {
    let mut commands = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word: Option<Word> = None;
    let mut chars = line.chars();
    let start = |word: &mut Option<Word>| {
        word.get_or_insert_with(|| Word {
            text: String::new(),
            expands: false,
        });
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => {
                words.extend(word.take());
            }
            ';' => {
                words.extend(word.take());
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            '#' if word.is_none() => break,
            '\'' => {
                start(&mut word);
                let w = word.as_mut().expect("started");
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.text.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                start(&mut word);
                let w = word.as_mut().expect("started");
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('$' | '"' | '\\')) => w.text.push(e),
                            Some(other) => {
                                w.text.push('\\');
                                w.text.push(other);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some('$') => {
                            w.expands = true;
                            w.text.push('$');
                        }
                        Some(c) => w.text.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                start(&mut word);
                if let Some(escaped) = chars.next() {
                    word.as_mut().expect("started").text.push(escaped);
                }
            }
            '$' => {
                start(&mut word);
                let w = word.as_mut().expect("started");
                w.expands = true;
                w.text.push('$');
            }
            c => {
                start(&mut word);
                word.as_mut().expect("started").text.push(c);
            }
        }
    }
    words.extend(word.take());
    if !words.is_empty() {
        commands.push(words);
    }
    Ok(commands)
}

#[cfg(test)]
mod unit {
    use super::*;

    /// The shape of the grub.cfg that Debian's grub-mkconfig writes for the test guest
    /// (make-bootable-guest.sh), abridged.
    const DEBIAN: &str = r#"#
# DO NOT EDIT THIS FILE
#
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
set default="0"
function load_video {
  insmod all_video
}
terminal_input console serial
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class os $menuentry_id_option 'gnulinux-simple-8c0e' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	search --no-floppy --fs-uuid --set=root 8c0e7e4e-2d7c-4a4f-9d55-6d0d5f0e0a1b
	echo	'Loading Linux 6.1.0-28-cloud-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-28-cloud-amd64 root=LABEL=cloudimg-rootfs ro  console=tty0 console=ttyS0,115200n8
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-28-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-8c0e' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-28-cloud-amd64 (recovery mode)' {
		linux	/boot/vmlinuz-6.1.0-28-cloud-amd64 root=LABEL=cloudimg-rootfs ro single
	}
}
"#;

    #[test]
    fn debian_first_entry_gives_kernel_args_and_initrd() {
        let entry = first_menuentry(DEBIAN).unwrap();
        assert_eq!(entry.title, "Debian GNU/Linux");
        assert_eq!(entry.line, 13);
        assert_eq!(entry.kernel, "/boot/vmlinuz-6.1.0-28-cloud-amd64");
        assert_eq!(
            entry.args,
            [
                "root=LABEL=cloudimg-rootfs",
                "ro",
                "console=tty0",
                "console=ttyS0,115200n8"
            ]
        );
        assert_eq!(entry.initrds, ["/boot/initrd.img-6.1.0-28-cloud-amd64"]);
        assert!(entry.dropped.is_empty());
    }

    #[test]
    fn ubuntu_boot_partition_paths_variables_and_quotes() {
        let cfg = "menuentry \"Ubuntu\" {\n  recordfail\n  linux /vmlinuz-6.8.0-49-generic root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0 $vt_handoff 'quoted arg'\n  initrd /microcode.cpio /initrd.img-6.8.0-49-generic\n}\n";
        let entry = first_menuentry(cfg).unwrap();
        assert_eq!(entry.kernel, "/vmlinuz-6.8.0-49-generic");
        assert_eq!(
            entry.args,
            [
                "root=LABEL=cloudimg-rootfs",
                "ro",
                "console=tty1",
                "console=ttyS0",
                "quoted arg"
            ]
        );
        assert_eq!(entry.dropped, ["$vt_handoff"]);
        assert_eq!(
            entry.initrds,
            ["/microcode.cpio", "/initrd.img-6.8.0-49-generic"]
        );
    }

    /// Ubuntu's GRUB_FORCE_PARTUUID entries hold two `linux` lines, one per branch of a
    /// runtime `if`: the first `linux` and the first `initrd` are taken, a pair that boots with
    /// an initrd whichever branch GRUB would take.
    #[test]
    fn of_two_branches_the_first_linux_and_initrd_lines_are_taken() {
        let cfg = "menuentry 'Ubuntu' {\n\
            \tif [ \"${initrdfail}\" = 1 ]; then\n\
            \t  linux\t/vmlinuz-6.8.0-49-generic root=LABEL=cloudimg-rootfs ro console=ttyS0\n\
            \t  initrd\t/initrd.img-6.8.0-49-generic\n\
            \telse\n\
            \t  linux\t/vmlinuz-6.8.0-49-generic root=PARTUUID=1c5b ro console=ttyS0 panic=-1\n\
            \tfi\n\
            \tinitrdfail\n\
            }\n";
        let entry = first_menuentry(cfg).unwrap();
        assert_eq!(entry.args[0], "root=LABEL=cloudimg-rootfs");
        assert_eq!(entry.initrds, ["/initrd.img-6.8.0-49-generic"]);
    }

    #[test]
    fn what_cannot_be_known_is_an_error_on_its_line() {
        let no_entry = "set default=0\nlinux /vmlinuz\n";
        assert_eq!(
            first_menuentry(no_entry).unwrap_err().reason,
            "no menuentry"
        );
        let no_linux = "menuentry 'x' {\n  initrd /initrd.img\n}\n";
        assert_eq!(first_menuentry(no_linux).unwrap_err().line, 1);
        let variable = "menuentry 'x' {\n  linux $kernel ro\n}\n";
        let err = first_menuentry(variable).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("variable"), "{}", err.reason);
        let open = "menuentry 'x' {\n  linux /vmlinuz\n";
        assert!(first_menuentry(open)
            .unwrap_err()
            .reason
            .contains("not closed"));
        let quote = "menuentry 'x {\n";
        assert!(first_menuentry(quote).unwrap_err().reason.contains("quote"));
        let no_brace = "menuentry 'x'\n";
        assert!(first_menuentry(no_brace).is_err());
    }

    #[test]
    fn grub_devices_name_partitions() {
        assert_eq!(
            split_device("(hd0,gpt16)/vmlinuz"),
            (Some("hd0,gpt16"), "/vmlinuz")
        );
        assert_eq!(split_device("/vmlinuz"), (None, "/vmlinuz"));
        assert_eq!(device_partition("hd0,gpt16"), Some(16));
        assert_eq!(device_partition("hd0,msdos1"), Some(1));
        assert_eq!(device_partition("hd0"), None);
        assert_eq!(device_partition("hd0,gpt0"), None);
    }
}
