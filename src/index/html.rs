//! Apache mod_autoindex listings: Ubuntu's FancyIndexing `<pre>` rows and the
//! `<table id="indexlist">` form (Debian).
//!
//! Only entries of the listed folder itself are kept: sort links (`?C=N;O=D`), absolute links
//! (the parent, `/noble/`), links with a scheme (off-site) and links reaching into other folders
//! are skipped. Sizes are Apache's rounded figures, so only approximate. Garbage gives an empty
//! list, never a panic.
//!
//! The page is read by html5ever's tokenizer, fed in small pieces, with no document tree: a
//! [`Rows`] sink follows just enough state (inside `<pre>`, inside the index table, which cell)
//! to pick out rows as their tokens pass. Memory is the page itself plus the entries, and the
//! entries are capped ([`MAX_LISTING_ENTRIES`]), so a hostile page of 100 000 links costs a few
//! MiB and an error rather than a tree of 100 000 nodes.

use std::cell::RefCell;
use std::fmt;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// Upper bound for a listing page: the biggest real ones are tens of KiB. The same as the
/// network's document limit, so a page fetched whole is never refused here.
pub const MAX_LISTING_BYTES: usize = crate::fetch::DOCUMENT_LIMIT as usize;

/// Upper bound on the rows of one listing. The busiest real folders (a release's serials, a
/// serial's files) have a few hundred; more is a hostile or broken page.
pub const MAX_LISTING_ENTRIES: usize = 10_000;

/// Text kept after a link in a `<pre>` row or in one table cell: dates, sizes and descriptions
/// are a few dozen characters.
const MAX_COLUMN_TEXT: usize = 1024;

/// Bytes handed to the tokenizer at a time, so it never holds a copy of the whole page.
const FEED_CHUNK: usize = 64 << 10;

/// A "Last modified" stamp, minute precision, server time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListingDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
}

impl fmt::Display for ListingDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }
}

/// One row of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingEntry {
    /// The decoded name, without the trailing `/` of a folder.
    pub name: String,
    /// The link as written (relative, maybe percent-encoded): join it to the page URL.
    pub href: String,
    pub is_dir: bool,
    pub modified: Option<ListingDate>,
    /// Apache's rounded size in bytes (`5.0K` → 5120); `None` for `-`.
    pub approx_size: Option<u64>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtmlError {
    #[error("listing is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("listing has more than {limit} entries")]
    TooManyEntries { limit: usize },
}

/// Parses a listing page.
pub fn parse_listing(bytes: &[u8]) -> Result<Vec<ListingEntry>, HtmlError> {
    if bytes.len() > MAX_LISTING_BYTES {
        return Err(HtmlError::TooLarge {
            size: bytes.len(),
            limit: MAX_LISTING_BYTES,
        });
    }
    let tokenizer = Tokenizer::new(Rows::default(), TokenizerOpts::default());
    let queue = BufferQueue::default();
    let mut rest = bytes;
    while !rest.is_empty() && !tokenizer.sink.overflowed() {
        let (piece, after) = rest.split_at(utf8_split(rest, FEED_CHUNK));
        queue.push_back(StrTendril::from_slice(&String::from_utf8_lossy(piece)));
        // The sink never asks for a script to run, so feeding always runs to the end.
        let _ = tokenizer.feed(&queue);
        rest = after;
    }
    tokenizer.end();
    tokenizer.sink.into_entries()
}

/// Where to cut `bytes` to at most `max` bytes without splitting a UTF-8 sequence (when it is
/// well-formed there; garbage is cut anywhere, and decoded lossily either way).
fn utf8_split(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let is_continuation = |at: usize| bytes.get(at).is_some_and(|b| b & 0xC0 == 0x80);
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&at| at > 0 && !is_continuation(at))
        .unwrap_or(max)
}

/// Elements with no end tag: they never open a nesting level.
const VOID_ELEMENTS: [&str; 8] = ["img", "br", "hr", "input", "meta", "link", "wbr", "col"];

/// Which column of an index-table row text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Name,
    Date,
    Size,
    Description,
    Other,
}

/// A table row being read.
#[derive(Default)]
struct TableRow {
    href: Option<String>,
    date: String,
    size: String,
    description: Option<String>,
}

/// The tokenizer's sink: the state needed to find rows, and the rows found.
#[derive(Default)]
struct Rows {
    state: RefCell<RowState>,
}

#[derive(Default)]
struct RowState {
    /// Elements open inside the current `<pre>` (void elements aside); `None` outside.
    pre_open: Option<Vec<String>>,
    /// The href of a link that is a direct child of `<pre>` while its element is open.
    pre_link: Option<String>,
    /// A `<pre>` row whose link has closed: the text after it, up to the end of the line.
    pre_line: Option<(ListingEntry, String)>,
    /// Depth of `<table id="indexlist">` nesting: rows are read while it is positive.
    in_index_table: u32,
    row: Option<TableRow>,
    cell: Option<Cell>,
    table: Vec<ListingEntry>,
    pre: Vec<ListingEntry>,
    overflowed: bool,
}

impl Rows {
    fn overflowed(&self) -> bool {
        self.state.borrow().overflowed
    }

    /// The table's rows when the page has them, else the `<pre>` rows.
    fn into_entries(self) -> Result<Vec<ListingEntry>, HtmlError> {
        let state = self.state.into_inner();
        if state.overflowed {
            return Err(HtmlError::TooManyEntries {
                limit: MAX_LISTING_ENTRIES,
            });
        }
        Ok(if state.table.is_empty() {
            state.pre
        } else {
            state.table
        })
    }
}

impl TokenSink for Rows {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        match token {
            Token::TagToken(tag) => state.tag(&tag),
            Token::CharacterTokens(text) => state.text(&text),
            Token::EOFToken => {
                state.end_pre_line();
                state.end_row();
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn attr<'t>(tag: &'t Tag, name: &str) -> Option<&'t str> {
    tag.attrs
        .iter()
        .find(|a| &*a.name.local == name)
        .map(|a| &*a.value)
}

fn has_class(tag: &Tag, class: &str) -> bool {
    attr(tag, "class").is_some_and(|value| value.split_ascii_whitespace().any(|c| c == class))
}

impl RowState {
    fn tag(&mut self, tag: &Tag) {
        // Any tag ends the text of a `<pre>` row.
        self.end_pre_line();
        let name = &*tag.name;
        match tag.kind {
            TagKind::StartTag => self.start_tag(name, tag),
            TagKind::EndTag => self.end_tag(name),
        }
    }

    fn start_tag(&mut self, name: &str, tag: &Tag) {
        match name {
            "pre" if self.pre_open.is_none() => {
                self.pre_open = Some(Vec::new());
                return;
            }
            "table" if self.in_index_table > 0 || attr(tag, "id") == Some("indexlist") => {
                self.in_index_table += 1;
            }
            "tr" if self.in_index_table > 0 => {
                self.end_row();
                self.row = Some(TableRow::default());
            }
            "td" if self.row.is_some() => self.cell = Some(cell_of(tag)),
            "th" if self.row.is_some() => self.cell = Some(Cell::Other),
            "a" => self.start_link(tag),
            _ => {}
        }
        let void = tag.self_closing || VOID_ELEMENTS.contains(&name);
        if let Some(open) = self.pre_open.as_mut().filter(|_| !void) {
            open.push(name.to_owned());
        }
    }

    fn start_link(&mut self, tag: &Tag) {
        let Some(href) = attr(tag, "href") else {
            return;
        };
        if self.pre_open.as_ref().is_some_and(Vec::is_empty) {
            self.pre_link = Some(href.to_owned());
        }
        if let (Some(row), Some(Cell::Name)) = (self.row.as_mut(), self.cell) {
            row.href.get_or_insert_with(|| href.to_owned());
        }
    }

    fn end_tag(&mut self, name: &str) {
        match name {
            "table" if self.in_index_table > 0 => {
                self.end_row();
                self.in_index_table -= 1;
            }
            "tr" => self.end_row(),
            "td" | "th" => self.cell = None,
            _ => {}
        }
        let Some(open) = self.pre_open.as_mut() else {
            return;
        };
        if name == "pre" && open.is_empty() {
            self.pre_open = None;
            self.pre_link = None;
            return;
        }
        if let Some(at) = open.iter().rposition(|n| n == name) {
            open.truncate(at);
            if name == "a" && open.is_empty() {
                if let Some(entry) = self.pre_link.take().and_then(|h| entry_for_href(&h)) {
                    self.pre_line = Some((entry, String::new()));
                }
            }
        }
    }

    fn text(&mut self, text: &str) {
        if let Some((_, line)) = self.pre_line.as_mut() {
            match text.find('\n') {
                Some(end) => {
                    push_bounded(line, &text[..end]);
                    self.end_pre_line();
                }
                None => push_bounded(line, text),
            }
        }
        let (Some(row), Some(cell)) = (self.row.as_mut(), self.cell) else {
            return;
        };
        match cell {
            Cell::Date => push_bounded(&mut row.date, text),
            Cell::Size => push_bounded(&mut row.size, text),
            Cell::Description => push_bounded(row.description.get_or_insert_default(), text),
            Cell::Name | Cell::Other => {}
        }
    }

    fn end_pre_line(&mut self) {
        if let Some((entry, line)) = self.pre_line.take() {
            let entry = fill_columns(entry, &line);
            self.push(entry, false);
        }
    }

    fn end_row(&mut self) {
        self.cell = None;
        let Some(row) = self.row.take() else {
            return;
        };
        let Some(mut entry) = row.href.as_deref().and_then(entry_for_href) else {
            return;
        };
        entry.modified = parse_date_time(row.date.trim());
        entry.approx_size = parse_size(row.size.trim());
        entry.description = row.description.and_then(non_empty);
        self.push(entry, true);
    }

    fn push(&mut self, entry: ListingEntry, table: bool) {
        let list = if table {
            &mut self.table
        } else {
            &mut self.pre
        };
        if list.len() >= MAX_LISTING_ENTRIES {
            self.overflowed = true;
            return;
        }
        list.push(entry);
    }
}

/// The column a `<td>` holds, by Apache's class names.
fn cell_of(tag: &Tag) -> Cell {
    if has_class(tag, "indexcolname") {
        Cell::Name
    } else if has_class(tag, "indexcollastmod") {
        Cell::Date
    } else if has_class(tag, "indexcolsize") {
        Cell::Size
    } else if has_class(tag, "indexcoldesc") {
        Cell::Description
    } else {
        Cell::Other
    }
}

/// Appends up to [`MAX_COLUMN_TEXT`] bytes in all, cut at a character boundary.
fn push_bounded(text: &mut String, more: &str) {
    let room = MAX_COLUMN_TEXT.saturating_sub(text.len());
    let mut end = room.min(more.len());
    while !more.is_char_boundary(end) {
        end -= 1;
    }
    text.push_str(&more[..end]);
}

/// Reads `DATE TIME SIZE DESCRIPTION` (each part optional) into the entry.
fn fill_columns(mut entry: ListingEntry, line: &str) -> ListingEntry {
    let mut rest = line.trim_start();
    if let Some((date, after_date)) = next_token(rest) {
        if let Some((time, after_time)) = next_token(after_date) {
            if let Some(stamp) = parse_date(date, time) {
                entry.modified = Some(stamp);
                rest = after_time;
            }
        }
    }
    if let Some((size, after_size)) = next_token(rest) {
        if size == "-" || parse_size(size).is_some() {
            entry.approx_size = parse_size(size);
            rest = after_size;
        }
    }
    entry.description = non_empty(rest.to_owned());
    entry
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The first whitespace-separated token and what follows it.
fn next_token(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

/// An entry for a link of this folder, or `None` for sort, parent, absolute and off-site links.
fn entry_for_href(href: &str) -> Option<ListingEntry> {
    let is_dir = href.ends_with('/');
    let bare = href.strip_suffix('/').unwrap_or(href);
    let foreign = bare.is_empty()
        || bare.starts_with(['?', '#', '/'])
        || bare.contains(['/', '?', '#', ':', '\\'])
        || bare == "."
        || bare == "..";
    if foreign {
        return None;
    }
    let name = percent_decode(bare)?;
    if name.contains('/') || name.chars().any(char::is_control) || name == ".." {
        return None;
    }
    Some(ListingEntry {
        name,
        href: href.to_owned(),
        is_dir,
        modified: None,
        approx_size: None,
        description: None,
    })
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. A malformed escape stays literal.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `YYYY-MM-DD HH:MM` (today) or `DD-Mon-YYYY HH:MM` (older Apache).
fn parse_date_time(text: &str) -> Option<ListingDate> {
    let (date, rest) = next_token(text)?;
    let (time, _) = next_token(rest)?;
    parse_date(date, time)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses the two date tokens of a row.
pub fn parse_date(date: &str, time: &str) -> Option<ListingDate> {
    let number = |s: &str, digits: usize| -> Option<u16> {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let parts: Vec<&str> = date.split('-').collect();
    let (year, month, day) = match parts.as_slice() {
        [y, m, d] if y.len() == 4 => (number(y, 4)?, number(m, 2)?, number(d, 2)?),
        [d, mon, y] => {
            let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))?;
            (number(y, 4)?, u16::try_from(month + 1).ok()?, number(d, 2)?)
        }
        _ => return None,
    };
    let (hour, minute) = time.split_once(':')?;
    let (hour, minute) = (number(hour, 2)?, number(minute, 2)?);
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60;
    valid.then_some(ListingDate {
        year,
        month: u8::try_from(month).ok()?,
        day: u8::try_from(day).ok()?,
        hour: u8::try_from(hour).ok()?,
        minute: u8::try_from(minute).ok()?,
    })
}

/// Apache's human size: `408`, `5.0K`, `584M`, `1.2G` (powers of 1024). `-` and anything else
/// give `None`.
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, shift) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 10),
        b'M' => (&text[..text.len() - 1], 20),
        b'G' => (&text[..text.len() - 1], 30),
        b'T' => (&text[..text.len() - 1], 40),
        b'P' => (&text[..text.len() - 1], 50),
        _ => (text, 0),
    };
    let well_formed = !number.is_empty()
        && number.len() <= 8
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    if !well_formed {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    // At most 8 characters and a shift of 50: below 2^77, so check before converting.
    let bytes = (value * 2f64.powi(shift)).round();
    (bytes < 2f64.powi(63)).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBLE: &[u8] =
        include_bytes!("../../tests/data/ubuntu/listings/noble-daily-20250430.html");
    const TOP: &[u8] = include_bytes!("../../tests/data/ubuntu/listings/toplevel-2020.html");

    #[test]
    fn noble_daily_listing_has_70_rows_for_6_arches() {
        let entries = parse_listing(NOBLE).unwrap();
        // 70 rows: the parent link (skipped), 4 SUMS files, 64 image files, unpacked/.
        assert_eq!(entries.len(), 69);
        let arches = ["amd64", "arm64", "armhf", "ppc64el", "riscv64", "s390x"];
        for arch in arches {
            let img = format!("noble-server-cloudimg-{arch}.img");
            assert!(entries.iter().any(|e| e.name == img), "{img}");
        }
        let img = entries
            .iter()
            .find(|e| e.name == "noble-server-cloudimg-amd64.img")
            .unwrap();
        assert!(!img.is_dir);
        assert_eq!(img.approx_size, Some(584 * 1024 * 1024));
        assert_eq!(img.modified.unwrap().to_string(), "2025-04-30 13:11");
        assert_eq!(
            img.description.as_deref(),
            Some("QCow2 UEFI/GPT Bootable disk image")
        );
        let sums = entries.iter().find(|e| e.name == "SHA256SUMS").unwrap();
        assert_eq!(sums.approx_size, Some(7 * 1024));
        assert_eq!(sums.description, None);
        let lxd = entries
            .iter()
            .find(|e| e.name == "noble-server-cloudimg-amd64-lxd.tar.xz")
            .unwrap();
        assert_eq!(lxd.approx_size, Some(408));
        let unpacked = entries.last().unwrap();
        assert_eq!(unpacked.name, "unpacked");
        assert!(unpacked.is_dir);
        assert_eq!(unpacked.approx_size, None);
    }

    #[test]
    fn sort_and_parent_links_are_skipped() {
        let entries = parse_listing(NOBLE).unwrap();
        assert!(entries.iter().all(|e| !e.href.starts_with('?')));
        assert!(entries.iter().all(|e| e.name != "Parent Directory"));
        assert!(entries.iter().all(|e| !e.href.starts_with('/')));
    }

    #[test]
    fn top_page_gives_descriptions_and_old_dates() {
        let entries = parse_listing(TOP).unwrap();
        // The page's other links (ubuntu.com, launchpad) are outside <pre> or off-site.
        assert_eq!(entries.len(), 14);
        let noble_era = entries.iter().find(|e| e.name == "focal").unwrap();
        assert!(noble_era.is_dir);
        assert_eq!(noble_era.modified.unwrap().to_string(), "2020-06-06 02:58");
        assert_eq!(
            noble_era.description.as_deref(),
            Some("Ubuntu Server 20.04 LTS (Focal Fossa) daily builds")
        );
        let precise = entries.iter().find(|e| e.name == "precise").unwrap();
        assert!(precise
            .description
            .as_deref()
            .unwrap()
            .ends_with("[END OF LIFE - for reference only]"));
        let docs = entries.iter().find(|e| e.name == "docs").unwrap();
        assert_eq!(docs.description, None);
    }

    #[test]
    fn table_form_is_read_once_per_row() {
        let page = br#"<html><body><table id="indexlist">
 <tr class="indexhead"><th class="indexcolicon"><img src="/icons2/blank.png" alt="[ICO]"></th><th class="indexcolname"><a href="?C=N;O=D">Name</a></th><th class="indexcollastmod"><a href="?C=M;O=A">Last modified</a></th><th class="indexcolsize"><a href="?C=S;O=A">Size</a></th></tr>
 <tr class="even"><td class="indexcolicon"><a href="/images/"><img src="/icons2/go-previous.png" alt="[PARENTDIR]"></a></td><td class="indexcolname"><a href="/images/">Parent Directory</a></td><td class="indexcollastmod">&nbsp;</td><td class="indexcolsize">  - </td></tr>
 <tr class="odd"><td class="indexcolicon"><a href="bullseye/"><img src="/icons2/folder.png" alt="[DIR]"></a></td><td class="indexcolname"><a href="bullseye/">bullseye/</a></td><td class="indexcollastmod">2021-10-11 15:47  </td><td class="indexcolsize">  - </td></tr>
 <tr class="even"><td class="indexcolicon"><a href="SHA512SUMS"><img src="/icons2/text.png" alt="[TXT]"></a></td><td class="indexcolname"><a href="SHA512SUMS">SHA512SUMS</a></td><td class="indexcollastmod">2024-07-17 18:11  </td><td class="indexcolsize">1.2K</td></tr>
</table></body></html>"#;
        let entries = parse_listing(page).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "bullseye");
        assert!(entries[0].is_dir);
        assert_eq!(entries[0].modified.unwrap().to_string(), "2021-10-11 15:47");
        assert_eq!(entries[1].approx_size, Some(1229));
    }

    #[test]
    fn garbage_gives_an_empty_list() {
        for junk in [
            &b""[..],
            b"\xff\xfe\x00<<<<",
            b"<pre><a href=",
            b"<pre><a>no href</a> 2020-01-01 00:00 1K</pre>",
            b"<table id=indexlist><tr><td class=indexcolname>",
        ] {
            assert_eq!(parse_listing(junk).unwrap(), Vec::new());
        }
    }

    #[test]
    fn off_site_and_escaping_links_are_skipped() {
        let page = br#"<pre><a href="http://example.com/x.img">x</a>
<a href="//example.com/y.img">y</a>
<a href="../z.img">z</a>
<a href="sub/inner.img">i</a>
<a href="ok%3Aname.json">ok</a>    2024-01-01 10:00  12K
</pre>"#;
        let entries = parse_listing(page).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "ok:name.json");
        assert_eq!(entries[0].href, "ok%3Aname.json");
        assert_eq!(entries[0].approx_size, Some(12 * 1024));
    }

    #[test]
    fn corrupted_listings_never_panic() {
        for page in crate::index::corruptions(NOBLE, 150) {
            let entries = parse_listing(&page).unwrap();
            assert!(entries.len() <= 70);
        }
    }

    #[test]
    fn too_many_links_are_refused_not_truncated() {
        let mut page = String::from("<pre>");
        for i in 0..=MAX_LISTING_ENTRIES {
            page.push_str(&format!("<a href=\"f{i}\">f{i}</a> 2024-01-01 10:00 1K\n"));
        }
        assert_eq!(
            parse_listing(page.as_bytes()),
            Err(HtmlError::TooManyEntries {
                limit: MAX_LISTING_ENTRIES
            })
        );
    }

    #[test]
    fn rows_split_across_feed_chunks_are_whole() {
        // Pad so that rows straddle the tokenizer's feed boundaries, one of them inside a
        // two-byte character.
        let mut page = String::from("<pre>");
        let mut count = 0;
        while page.len() < 3 * FEED_CHUNK {
            page.push_str(&format!(
                "<a href=\"n\u{e9}{count}.img\">n\u{e9}{count}.img</a>  2024-01-01 10:00  5.0K  caf\u{e9}\n"
            ));
            count += 1;
        }
        let entries = parse_listing(page.as_bytes()).unwrap();
        assert_eq!(entries.len(), count);
        assert!(entries.iter().all(|e| e.approx_size == Some(5120)));
        assert!(entries
            .iter()
            .all(|e| e.description.as_deref() == Some("caf\u{e9}")));
    }

    #[test]
    fn utf8_split_keeps_characters_whole() {
        let text = "a\u{e9}b".as_bytes(); // 61 c3 a9 62
        assert_eq!(utf8_split(text, 2), 1);
        assert_eq!(utf8_split(text, 3), 3);
        assert_eq!(utf8_split(text, 10), 4);
        assert_eq!(utf8_split(&[0x80; 8], 4), 4);
    }

    #[test]
    fn oversized_listing_is_rejected() {
        let big = vec![b' '; MAX_LISTING_BYTES + 1];
        assert!(matches!(
            parse_listing(&big),
            Err(HtmlError::TooLarge { .. })
        ));
    }

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("408"), Some(408));
        assert_eq!(parse_size("5.0K"), Some(5120));
        assert_eq!(parse_size("584M"), Some(584 << 20));
        assert_eq!(parse_size("1.2G"), Some(1_288_490_189));
        assert_eq!(parse_size("-"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("1.2.3K"), None);
        assert_eq!(parse_size("99999999P"), None);
    }

    #[test]
    fn both_date_forms_parse_and_nonsense_does_not() {
        assert_eq!(
            parse_date("2025-05-01", "16:23").unwrap().to_string(),
            "2025-05-01 16:23"
        );
        assert_eq!(
            parse_date("24-Feb-2016", "21:07").unwrap().to_string(),
            "2016-02-24 21:07"
        );
        assert_eq!(parse_date("2025-13-01", "16:23"), None);
        assert_eq!(parse_date("24-Foo-2016", "21:07"), None);
        assert_eq!(parse_date("2025-05-01", "24:00"), None);
        assert_eq!(parse_date("2025-05-01", "1623"), None);
    }
}
