//! The README's main command: `rewrap demo` runs end to end.

#[test]
fn demo_runs_end_to_end() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewrap"))
        .args(["demo", "--files", "20"])
        .env_remove("REWRAP_HOME")
        .env_remove("REWRAP_ENDPOINT_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"rotated\": 20"), "{stdout}");
    assert_eq!(
        stdout.matches("(refused, as the policy says").count(),
        4,
        "{stdout}"
    );
    // The rotator and the reader work through the demo's own server, which
    // it starts on a loopback port and stops (issue 11 finding 7).
    assert!(
        stdout.contains("\nrewrap serve listening on http://127.0.0.1:"),
        "{stdout}"
    );
    for who in ["storage-rotator", "app-reader"] {
        let remote = format!("[{who}]$ rewrap --endpoint-url http://127.0.0.1:");
        assert!(stdout.contains(&remote), "{remote} missing: {stdout}");
        let local = format!("[{who}]$ rewrap ");
        assert_eq!(
            stdout.matches(&local).count(),
            stdout.matches(&remote).count(),
            "{who} ran a command in local mode: {stdout}"
        );
    }
    assert!(stdout.contains("[storage-rotator]$ rewrap --endpoint-url"));
    assert!(stdout.contains("\n(rewrap serve stopped)\n"), "{stdout}");
    assert!(stdout.contains("reader decrypted data/team-0/doc-0000.txt: first line \"record 0: patient notes, confidential\""));
    assert!(stdout.contains("records, chain intact, last hash"));
    assert!(stdout.ends_with("demo finished: every step behaved as the policies say.\n"));
}
