//! The audit report as one self-contained HTML page (`rewrap audit report
//! --format html`): key use over time per key and operation (inline SVG
//! bars), denied attempts, principals per key, the stale envelope share of
//! the last inventories, the verify result, and the usage table.
//!
//! Nothing is fetched: styles and charts are inline, there is no script.
//! The page is also well-formed XML (every element closed, attributes
//! quoted, only the five XML entities), so any XML parser can check it.

use super::report::{key_id_of, Activity, UsageReport, NO_KEY};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// How many envelopes of one key an inventory saw, and how many of them
/// were not under the key's newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShare {
    /// The key ARN.
    pub key: String,
    /// Envelopes under it.
    pub envelopes: u64,
    /// Of those, not under its newest version; `None` when that version is
    /// unknown (the reader may not describe the key).
    pub stale: Option<u64>,
}

/// One inventory (or rotation) summary, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryShare {
    /// The roots or location walked.
    pub roots: Vec<String>,
    /// When (RFC 3339).
    pub seen_at: String,
    /// `inventory` or `rotate`.
    pub recorded_by: String,
    /// Per key.
    pub keys: Vec<KeyShare>,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct HtmlReport<'a> {
    /// What was read: the trail's path, or the KMS endpoint.
    pub trail: String,
    /// When the page was made (RFC 3339).
    pub generated_at: String,
    /// The filter, in words (`all records`, `key ... since ...`).
    pub scope: String,
    /// `Ok(summary)` if the trail verified, `Err(problem)` if not; `None`
    /// when it was not verified.
    pub verify: Option<Result<String, String>>,
    /// Usage per key, principal and operation (with alias names).
    pub usage: &'a UsageReport,
    /// Use per day and the denied attempts.
    pub activity: &'a Activity,
    /// The last inventory of each set of roots.
    pub inventories: &'a [InventoryShare],
}

/// Fixed colours, one per operation in order of first appearance.
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f3b73", "#8cd17d", "#b6992d", "#499894", "#86bcb6", "#d37295",
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:72em}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#1b7f3b;font-weight:bold}.bad{color:#b00020;font-weight:bold}.muted{color:#777}\
code{font-size:.9em}.legend span{display:inline-block;margin-right:1em}\
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}\
figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:.3em}";

/// `text` with the five XML-special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl HtmlReport<'_> {
    /// The page.
    pub fn render(&self) -> String {
        let mut page = String::with_capacity(64 * 1024);
        page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
        page.push_str("<title>rewrap audit report</title>\n");
        let _ = writeln!(page, "<style>{STYLE}</style>\n</head>\n<body>");
        page.push_str("<h1>rewrap audit report</h1>\n");
        let _ = writeln!(
            page,
            "<p class=\"muted\">Trail <code>{}</code>; {}; made {}.</p>",
            escape(&self.trail),
            escape(&self.scope),
            escape(&self.generated_at)
        );
        self.verify_section(&mut page);
        self.use_over_time(&mut page);
        self.denied_section(&mut page);
        self.principals_section(&mut page);
        self.inventory_section(&mut page);
        self.usage_section(&mut page);
        page.push_str("</body>\n</html>\n");
        page
    }

    /// `<id>  alias/a, alias/b` for a key ARN.
    fn key_label(&self, key: &str) -> String {
        if key == NO_KEY {
            return "no key".into();
        }
        match self.usage.key_aliases.get(key) {
            Some(names) if !names.is_empty() => {
                format!("{} ({})", key_id_of(key), names.join(", "))
            }
            _ => key_id_of(key).to_string(),
        }
    }

    fn verify_section(&self, page: &mut String) {
        page.push_str("<section id=\"verify\">\n<h2>Verification</h2>\n");
        let _ = match &self.verify {
            Some(Ok(summary)) => writeln!(
                page,
                "<p><span class=\"ok\">intact</span>: {}</p>",
                escape(summary)
            ),
            Some(Err(problem)) => writeln!(
                page,
                "<p><span class=\"bad\">FAILED verification</span>: {}</p>",
                escape(problem)
            ),
            None => writeln!(page, "<p class=\"muted\">not verified</p>"),
        };
        page.push_str("</section>\n");
    }

    fn use_over_time(&self, page: &mut String) {
        page.push_str("<section id=\"use-over-time\">\n<h2>Key use over time</h2>\n");
        let per_day = &self.activity.per_day;
        if per_day.is_empty() {
            page.push_str("<p class=\"muted\">no key use recorded</p>\n</section>\n");
            return;
        }
        let days: Vec<&str> = per_day
            .keys()
            .map(|(_, _, d)| d.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
        for (_, op, _) in per_day.keys() {
            let next = PALETTE[colours.len() % PALETTE.len()];
            colours.entry(op.as_str()).or_insert(next);
        }
        page.push_str("<p class=\"legend\">");
        for (op, colour) in &colours {
            let _ = write!(
                page,
                "<span><span class=\"sw\" style=\"background:{colour}\"></span>{}</span>",
                escape(op)
            );
        }
        page.push_str("</p>\n");
        let keys: BTreeSet<&str> = per_day.keys().map(|(k, _, _)| k.as_str()).collect();
        for key in keys {
            let mut stacks: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
            for ((k, op, day), n) in per_day {
                if k == key {
                    stacks
                        .entry(day.as_str())
                        .or_default()
                        .push((op.as_str(), *n));
                }
            }
            let _ = writeln!(
                page,
                "<figure>\n<figcaption>{}</figcaption>",
                escape(&self.key_label(key))
            );
            bar_chart(page, &days, &stacks, &colours);
            page.push_str("</figure>\n");
        }
        page.push_str("</section>\n");
    }

    fn denied_section(&self, page: &mut String) {
        let a = self.activity;
        let _ = writeln!(
            page,
            "<section id=\"denied\">\n<h2>Denied attempts</h2>\n<p>{} denied attempt(s){}.</p>",
            a.denied_total,
            if a.denied_total > a.denied.len() as u64 {
                format!("; the latest {} shown", a.denied.len())
            } else {
                String::new()
            }
        );
        if !a.denied.is_empty() {
            page.push_str(
                "<table>\n<tr><th>time (UTC)</th><th>principal</th><th>operation</th>\
                 <th>key</th><th>decided by</th></tr>\n",
            );
            for d in a.denied.iter().rev() {
                let keys: Vec<String> = d.keys.iter().map(|k| self.key_label(k)).collect();
                let _ = writeln!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    d.time.format("%Y-%m-%d %H:%M:%S"),
                    escape(&d.principal),
                    escape(&d.operation),
                    escape(&keys.join(", ")),
                    escape(&d.decided_by)
                );
            }
            page.push_str("</table>\n");
        }
        page.push_str("</section>\n");
    }

    fn principals_section(&self, page: &mut String) {
        page.push_str("<section id=\"principals\">\n<h2>Principals per key</h2>\n");
        let mut per_key: BTreeMap<&str, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
        for r in &self.usage.rows {
            let uses = per_key
                .entry(r.key.as_str())
                .or_default()
                .entry(r.principal.as_str())
                .or_default();
            uses.0 += r.count;
            uses.1 += r.denied;
        }
        page.push_str("<table>\n<tr><th>key</th><th>principals (uses, denied)</th></tr>\n");
        for (key, principals) in per_key {
            let list: Vec<String> = principals
                .iter()
                .map(|(p, (n, d))| format!("{p} ({n}, {d})"))
                .collect();
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(&self.key_label(key)),
                escape(&list.join(", "))
            );
        }
        page.push_str("</table>\n</section>\n");
    }

    fn inventory_section(&self, page: &mut String) {
        page.push_str("<section id=\"inventory\">\n<h2>Stale envelopes (last inventories)</h2>\n");
        if self.inventories.is_empty() {
            page.push_str(
                "<p class=\"muted\">no inventory recorded: run <code>rewrap inventory</code></p>\n\
                 </section>\n",
            );
            return;
        }
        page.push_str(
            "<table>\n<tr><th>roots</th><th>seen</th><th>by</th><th>key</th>\
             <th>envelopes</th><th>stale</th><th>stale share</th></tr>\n",
        );
        for inv in self.inventories {
            for k in &inv.keys {
                let (stale, share) = match k.stale {
                    Some(s) if k.envelopes > 0 => (
                        s.to_string(),
                        format!("{:.1}%", 100.0 * s as f64 / k.envelopes as f64),
                    ),
                    Some(s) => (s.to_string(), "-".into()),
                    None => ("unknown".into(), "-".into()),
                };
                let _ = writeln!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    escape(&inv.roots.join(", ")),
                    escape(&inv.seen_at),
                    escape(&inv.recorded_by),
                    escape(&self.key_label(&k.key)),
                    k.envelopes,
                    stale,
                    share
                );
            }
        }
        page.push_str("</table>\n</section>\n");
    }

    fn usage_section(&self, page: &mut String) {
        page.push_str(
            "<section id=\"usage\">\n<h2>Usage per key, principal and operation</h2>\n<table>\n\
             <tr><th>key</th><th>principal</th><th>operation</th><th>uses</th><th>denied</th>\
             <th>errors</th><th>last used (UTC)</th></tr>\n",
        );
        for r in &self.usage.rows {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&self.key_label(&r.key)),
                escape(&r.principal),
                escape(&r.operation),
                r.count,
                r.denied,
                r.errors,
                r.last_used.format("%Y-%m-%d %H:%M:%S")
            );
        }
        page.push_str("</table>\n</section>\n");
    }
}

/// One stacked bar per day (operations stacked), scaled to the busiest day.
fn bar_chart(
    page: &mut String,
    days: &[&str],
    stacks: &BTreeMap<&str, Vec<(&str, u64)>>,
    colours: &BTreeMap<&str, &str>,
) {
    const HEIGHT: u64 = 120;
    const BAR: usize = 18;
    const LEFT: usize = 40;
    let peak = stacks
        .values()
        .map(|ops| ops.iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    // Room for the first day's label under a lone bar.
    let width = (LEFT + days.len() * (BAR + 4) + 10).max(LEFT + 80);
    let _ = writeln!(
        page,
        "<svg width=\"{width}\" height=\"{}\" role=\"img\">",
        HEIGHT + 30
    );
    let _ = writeln!(
        page,
        "<text x=\"0\" y=\"12\" font-size=\"11\">{peak}</text>\
         <text x=\"0\" y=\"{HEIGHT}\" font-size=\"11\">0</text>\
         <line x1=\"{LEFT}\" y1=\"{HEIGHT}\" x2=\"{width}\" y2=\"{HEIGHT}\" stroke=\"#999\"/>"
    );
    for (i, day) in days.iter().enumerate() {
        let x = LEFT + i * (BAR + 4);
        let mut top = HEIGHT;
        for (op, n) in stacks.get(day).map_or(&[][..], Vec::as_slice) {
            let h = (n * HEIGHT).div_ceil(peak).max(1);
            top = top.saturating_sub(h);
            let _ = writeln!(
                page,
                "<rect x=\"{x}\" y=\"{top}\" width=\"{BAR}\" height=\"{h}\" fill=\"{}\">\
                 <title>{} {}: {n}</title></rect>",
                colours.get(op).copied().unwrap_or("#888"),
                escape(day),
                escape(op)
            );
        }
    }
    let last = days.len().saturating_sub(1);
    let _ = writeln!(
        page,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"11\">{}</text>",
        HEIGHT + 16,
        escape(days.first().copied().unwrap_or(""))
    );
    if last > 0 {
        let _ = writeln!(
            page,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LEFT + last * (BAR + 4) + BAR,
            HEIGHT + 28,
            escape(days[last])
        );
    }
    page.push_str("</svg>\n");
}
