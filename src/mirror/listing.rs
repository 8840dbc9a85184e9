//! Apache mod_autoindex look-alike pages (FancyIndexing rows in `<pre>`), rendered for the
//! folders of a mirror so that any static web server can serve them as `index.html` and
//! [`crate::index::html::parse_listing`] reads them as it reads the real site.

use std::time::{SystemTime, UNIX_EPOCH};

/// Apache does not shrink the name column below this width (mod_autoindex `NameWidth`).
const MIN_NAME_WIDTH: usize = 23;

/// One row of a folder page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub is_dir: bool,
    /// `YYYY-MM-DD HH:MM`, see [`listing_date`].
    pub date: String,
    /// Exact bytes; shown rounded as Apache does. `None` for folders.
    pub size: Option<u64>,
    /// The Description column (discovery reads release names from it).
    pub description: Option<String>,
}

/// The page of one folder; `rows` are shown in the order given. The parent link is relative
/// (`../`) so the tree can be served below any URL prefix; the top page has none.
pub fn render(title: &str, has_parent: bool, rows: &[Row]) -> String {
    let hrefs: Vec<String> = rows.iter().map(href).collect();
    let width = rows
        .iter()
        .map(|row| shown_name(row).chars().count())
        .max()
        .unwrap_or(0)
        .max(MIN_NAME_WIDTH);
    let mut pre = format!(
        "<pre><img src=\"/icons/blank.gif\" alt=\"Icon \" width=\"22\" height=\"22\"> \
         <a href=\"?C=N;O=D\">Name</a>{}<a href=\"?C=M;O=A\">Last modified</a>      \
         <a href=\"?C=S;O=A\">Size</a>  <a href=\"?C=D;O=A\">Description</a><hr>",
        " ".repeat(width - 3)
    );
    if has_parent {
        pre.push_str(&format!(
            "<img src=\"/icons/back.gif\" alt=\"[PARENTDIR]\" width=\"22\" height=\"22\"> \
             <a href=\"../\">Parent Directory</a>{}-\n",
            " ".repeat(width + 6)
        ));
    }
    for (row, href) in rows.iter().zip(&hrefs) {
        let shown = shown_name(row);
        let (icon, alt) = if row.is_dir {
            ("/icons/folder.gif", "[DIR]")
        } else {
            ("/icons/unknown.gif", "[   ]")
        };
        let size = row.size.map_or_else(|| "  - ".to_owned(), apache_size);
        let mut line = format!(
            "<img src=\"{icon}\" alt=\"{alt}\" width=\"22\" height=\"22\"> <a href=\"{href}\">{}</a>{} {}  {size}",
            escape(&shown),
            " ".repeat(width.saturating_sub(shown.chars().count())),
            row.date
        );
        match &row.description {
            Some(description) => {
                line.push_str("  ");
                line.push_str(&escape(description));
            }
            None => line.truncate(line.trim_end().len()),
        }
        pre.push_str(&line);
        pre.push('\n');
    }
    pre.push_str("<hr></pre>");
    let title = escape(title);
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html>\n <head>\n  \
         <title>{title}</title>\n </head>\n <body>\n<h1>{title}</h1>\n{pre}\n</body></html>\n"
    )
}

fn shown_name(row: &Row) -> String {
    if row.is_dir {
        format!("{}/", row.name)
    } else {
        row.name.clone()
    }
}

/// The link of a row: the name percent-encoded as one path segment, `/` for a folder.
fn href(row: &Row) -> String {
    let mut out = String::new();
    for byte in row.name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~+@!$()*,;=".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if row.is_dir {
        out.push('/');
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A size as Apache prints it, four columns wide: `833 `, `5.0K`, ` 20K`, `584M`.
pub fn apache_size(bytes: u64) -> String {
    // Exact below 973 bytes; then one unit up, with one decimal below 9.95 units (Apache's
    // apr_strfsize rounding).
    if bytes < 973 {
        return format!("{bytes:>3} ");
    }
    let mut size = bytes;
    for unit in ['K', 'M', 'G', 'T', 'P', 'E'] {
        let remain = size & 1023;
        size >>= 10;
        if size >= 973 {
            continue;
        }
        if size < 9 || (size == 9 && remain < 973) {
            let mut tenths = (remain * 5 + 256) / 512;
            if tenths >= 10 {
                size += 1;
                tenths = 0;
            }
            return format!("{size}.{tenths}{unit}");
        }
        if remain >= 512 {
            size += 1;
        }
        return format!("{size:>3}{unit}");
    }
    "****".to_owned()
}

/// `YYYY-MM-DD HH:MM` in UTC, the date format of today's listings.
pub fn listing_date(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, in_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        in_day / 3600,
        in_day % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the era-based method).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::index::html::parse_listing;

    fn row(name: &str, is_dir: bool, size: Option<u64>, description: Option<&str>) -> Row {
        Row {
            name: name.into(),
            is_dir,
            date: "2024-08-21 12:00".into(),
            size,
            description: description.map(String::from),
        }
    }

    #[test]
    fn our_scraper_reads_back_names_kinds_sizes_and_descriptions() {
        let rows = [
            row(
                "24.04",
                true,
                None,
                Some("Ubuntu Server 24.04 LTS (Noble Numbat) released builds"),
            ),
            row("SHA256SUMS", false, Some(408), None),
            row(
                "ubuntu-24.04-server-cloudimg-amd64.img",
                false,
                Some(612_368_384),
                Some("QCow2 UEFI/GPT Bootable disk image"),
            ),
        ];
        let page = render("Index of /releases/", true, &rows);
        let entries = parse_listing(page.as_bytes()).unwrap();
        let facts: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.is_dir,
                    e.approx_size,
                    e.description.as_deref(),
                    e.modified.map(|d| d.to_string()),
                )
            })
            .collect();
        let date = Some("2024-08-21 12:00".to_owned());
        assert_eq!(
            facts,
            [
                (
                    "24.04",
                    true,
                    None,
                    Some("Ubuntu Server 24.04 LTS (Noble Numbat) released builds"),
                    date.clone()
                ),
                ("SHA256SUMS", false, Some(408), None, date.clone()),
                (
                    "ubuntu-24.04-server-cloudimg-amd64.img",
                    false,
                    Some(584 << 20),
                    Some("QCow2 UEFI/GPT Bootable disk image"),
                    date
                ),
            ]
        );
    }

    #[test]
    fn odd_names_survive_as_one_encoded_link_and_escaped_text() {
        let rows = [row("a b&<c>.img", false, Some(1), Some("x < y"))];
        let page = render("t", false, &rows);
        assert!(page.contains("href=\"a%20b%26%3Cc%3E.img\""), "{page}");
        assert!(!page.contains("<c>"), "{page}");
        let entries = parse_listing(page.as_bytes()).unwrap();
        assert_eq!(entries[0].name, "a b&<c>.img");
        assert_eq!(entries[0].description.as_deref(), Some("x < y"));
    }

    #[test]
    fn the_top_page_has_no_parent_row() {
        let page = render("Ubuntu Cloud Images", false, &[]);
        assert!(!page.contains("Parent Directory"));
        assert!(render("x", true, &[]).contains("<a href=\"../\">Parent Directory</a>"));
    }

    #[test]
    fn sizes_round_like_the_real_listings() {
        // Figures of the real noble/20250430/ page.
        // Values seen in the reference listings/noble-daily-20250430.html.
        assert_eq!(apache_size(833), "833 ");
        assert_eq!(apache_size(408), "408 ");
        assert_eq!(apache_size(5_120), "5.0K");
        assert_eq!(apache_size(245_760), "240K");
        assert_eq!(apache_size(20_117), " 20K");
        assert_eq!(apache_size(612_368_384), "584M");
        assert_eq!(apache_size(1_288_490_189), "1.2G");
    }

    #[test]
    fn dates_are_utc_minutes() {
        // 2024-08-21 12:34:56 UTC.
        let time = UNIX_EPOCH + Duration::from_secs(1_724_243_696);
        assert_eq!(listing_date(time), "2024-08-21 12:34");
        assert_eq!(listing_date(UNIX_EPOCH), "1970-01-01 00:00");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(listing_date(leap), "2024-02-29 00:00");
    }
}
