//! `rewrap audit report --format html`: one self-contained page, checked
//! by structure. It parses as XML (every element closed), has each
//! section, fetches nothing (no URL anywhere, no script, no external
//! style or image), and says what the trail holds: the verify result, key
//! use per day and operation as SVG bars, the denied attempt, principals
//! per key, and the stale share of the last inventory.

mod support;

use quick_xml::events::Event;
use support::cli::{stderr, Env};

/// Every element's name, in document order, and the page's text; panics on
/// anything not well-formed.
fn parse(page: &str) -> (Vec<String>, String) {
    let mut reader = quick_xml::Reader::from_str(page);
    reader.config_mut().check_end_names = true;
    let mut open: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    let mut text = String::new();
    loop {
        match reader
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed at {}: {e}", reader.buffer_position()))
        {
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                open.push(name.clone());
                elements.push(name);
            }
            Event::Empty(e) => {
                elements.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
            }
            Event::End(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                assert_eq!(open.pop().as_deref(), Some(name.as_str()));
            }
            Event::Text(t) => text.push_str(&t.decode().unwrap()),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    (elements, text)
}

/// The text of the section with `id`.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = start + page[start..].find("</section>").unwrap();
    &page[start..end]
}

#[test]
fn html_report_is_one_self_contained_page() {
    let env = Env::new();
    let o = &env.owner;
    let reader = env.principal("app-reader");
    let key = env.key("app data");
    env.ok(
        o,
        &[
            "create-alias",
            "--alias-name",
            "alias/app-data-2027",
            "--target-key-id",
            &key,
        ],
    );
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("plain.txt"), b"plain <&> text").unwrap();
    for f in ["a", "b"] {
        env.ok(
            o,
            &[
                "encrypt-file",
                "--key-id",
                "alias/app-data-2027",
                "plain.txt",
                "-o",
                &format!("data/{f}.rwp"),
            ],
        );
    }
    let denied = env.run(&reader, &["encrypt", "--key-id", &key, "--plaintext", "x"]);
    assert_eq!(denied.status.code(), Some(254), "{}", stderr(&denied));
    env.ok(o, &["inventory", "data"]);
    // Both envelopes are now under an old version: a 100 % stale share.
    env.ok(o, &["rotate-key-on-demand", "--key-id", &key]);

    let out = env.run(
        o,
        &["audit", "report", "--format", "html", "-o", "report.html"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let page = std::fs::read_to_string(env.path("report.html")).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    let (elements, text) = parse(&page);

    // Nothing is fetched: no URL at all, no script, no external style or image.
    for banned in [
        "http://", "https://", "<script", "<link", "<img", "<iframe", "src=", "url(", "@import",
    ] {
        assert!(!page.contains(banned), "page contains {banned:?}");
    }
    for element in ["html", "head", "style", "body", "svg", "rect", "table"] {
        assert!(elements.iter().any(|e| e == element), "no <{element}>");
    }
    for id in [
        "verify",
        "use-over-time",
        "denied",
        "principals",
        "inventory",
        "usage",
    ] {
        section(&page, id);
    }
    assert!(text.contains("rewrap audit report"));

    let verify = section(&page, "verify");
    assert!(
        verify.contains("<span class=\"ok\">intact</span>"),
        "{verify}"
    );

    // One chart for the key (captioned with its alias), Encrypt bars among them.
    let over_time = section(&page, "use-over-time");
    let caption = format!("<figcaption>{key} (alias/app-data-2027)</figcaption>");
    assert!(over_time.contains(&caption), "{over_time}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        over_time.contains(&format!("<title>{today} GenerateDataKey: 2</title>")),
        "{over_time}"
    );
    assert!(
        over_time.contains(&format!("<title>{today} Encrypt: 1</title>")),
        "{over_time}"
    );

    let denied = section(&page, "denied");
    assert!(denied.contains("<p>1 denied attempt(s).</p>"), "{denied}");
    assert!(
        denied.contains("<td>app-reader</td><td>Encrypt</td>"),
        "{denied}"
    );

    let principals = section(&page, "principals");
    assert!(principals.contains("app-reader (1, 1)"), "{principals}");
    assert!(principals.contains("owner ("), "{principals}");

    let inventory = section(&page, "inventory");
    let root = std::fs::canonicalize(env.path("data")).unwrap();
    assert!(
        inventory.contains(&format!("<td>{}</td>", root.display())),
        "{inventory}"
    );
    assert!(
        inventory
            .contains("<td class=\"n\">2</td><td class=\"n\">2</td><td class=\"n\">100.0%</td>"),
        "{inventory}"
    );
}

#[test]
fn html_report_of_a_tampered_copy_says_it_failed() {
    let env = Env::new();
    let o = &env.owner;
    let key = env.key("k");
    for _ in 0..3 {
        env.ok(o, &["encrypt", "--key-id", &key, "--plaintext", "x"]);
    }
    let log = env.audit_log();
    assert!(!log.is_empty(), "the trail is one file");
    let changed = log.replacen("\"operation\":\"Encrypt\"", "\"operation\":\"Decrypt\"", 1);
    assert_ne!(changed, log);
    std::fs::write(env.path("copy.log"), changed).unwrap();
    let out = env.run(
        o,
        &[
            "audit",
            "report",
            "--file",
            "copy.log",
            "--format",
            "html",
            "-o",
            "copy.html",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::read_to_string(env.path("copy.html")).unwrap();
    parse(&page);
    let verify = section(&page, "verify");
    assert!(
        verify.contains("<span class=\"bad\">FAILED verification</span>"),
        "{verify}"
    );
}

#[test]
fn html_report_refuses_a_remote_trail_and_a_folder() {
    let env = Env::new();
    let o = &env.owner;
    let out = env.run(
        o,
        &[
            "--endpoint-url",
            "http://127.0.0.1:9",
            "audit",
            "report",
            "--format",
            "html",
            "-o",
            "r.html",
        ],
    );
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--format html reads a local trail"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(env.path("dir")).unwrap();
    let out = env.run(o, &["audit", "report", "--format", "html", "-o", "dir"]);
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    assert!(!env.path("r.html").exists());
}
