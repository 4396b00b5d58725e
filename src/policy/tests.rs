//! Unit tests of `crate::policy`.

use super::*;

/// Every action's policy name, in declaration order.
fn all_names() -> Vec<&'static str> {
    names(Action::ALL)
}

fn names(actions: &[Action]) -> Vec<&'static str> {
    actions.iter().map(|a| a.name()).collect()
}

fn is_known_action(name: &str) -> bool {
    Action::from_name(name).is_some()
}

#[test]
fn covers_refuses_credentials_that_would_add_rights() {
    let set = PolicySet::from_toml(
        "p.toml",
        "[[statement]]\neffect = \"allow\"\nprincipals = [\"admin\"]\nactions = [\"administer\"]\nresources = [\"*\"]\n\
         [[statement]]\neffect = \"allow\"\nprincipals = [\"owner\"]\nactions = [\"*\"]\nresources = [\"*\"]\n\
         [[statement]]\neffect = \"allow\"\nprincipals = [\"reader\"]\nactions = [\"decrypt\"]\nresources = [\"alias/x\"]\n\
         [statement.condition]\ncontext_equals = { a = \"b\" }\n",
    )
    .unwrap();
    assert!(!set.covers("admin", "reader"), "admin would gain decrypt");
    assert!(set.covers("owner", "reader"));
    assert!(
        set.covers("admin", "nobody"),
        "a principal with no rights adds nothing"
    );
    assert!(set.covers("admin", "admin"));
    assert!(!set.covers("reader", "admin"));
}

const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ALIAS: &str = "alias/app-data";
const ALIAS_ARN: &str = "arn:aws:kms:us-east-1:111122223333:alias/app-data";
const KEY_NAMES: &[&str] = &[KEY_ID, KEY_ARN, ALIAS, ALIAS_ARN];

fn set(text: &str) -> PolicySet {
    PolicySet::from_toml("test.toml", text).unwrap()
}

fn load_error(text: &str) -> String {
    PolicySet::from_toml("policies/bad.toml", text)
        .unwrap_err()
        .to_string()
}

fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check(
    set: &PolicySet,
    principal: &str,
    action: &str,
    resources: &[&str],
    context: Option<&BTreeMap<String, String>>,
) -> Decision {
    let action = Action::from_name(action).expect("a known action");
    // A ReEncrypt action is checked as part of a context-preserving ReEncrypt
    // to another key, as `rewrap rotate` makes them.
    let re_encrypt =
        matches!(action, Action::ReEncryptFrom | Action::ReEncryptTo).then_some(ReEncryptFacts {
            source_context: context,
            destination_context: context,
            same_key: false,
        });
    set.evaluate(&AccessRequest {
        principal,
        action,
        resources,
        context,
        re_encrypt,
        resource_tags: None,
    })
}

fn allowed(set: &PolicySet, principal: &str, action: &str, resources: &[&str]) -> bool {
    check(set, principal, action, resources, None).allowed
}

/// Every action `principal` may call on `resources` under `context`.
fn allowed_actions(
    set: &PolicySet,
    principal: &str,
    resources: &[&str],
    context: Option<&BTreeMap<String, String>>,
) -> Vec<&'static str> {
    all_names()
        .into_iter()
        .filter(|a| check(set, principal, a, resources, context).allowed)
        .collect()
}

fn statement(principals: &str, actions: &str, resources: &str) -> String {
    format!(
        "[[statement]]\neffect = \"allow\"\nprincipals = {principals}\n\
         actions = {actions}\nresources = {resources}\n"
    )
}

#[test]
fn explicit_deny_wins_over_allow_in_any_order_and_any_file() {
    let text = r#"
[[statement]]
sid = "all"
effect = "allow"
principals = ["*"]
actions = ["*"]
resources = ["*"]

[[statement]]
sid = "no-decrypt"
effect = "deny"
principals = ["mallory"]
actions = ["kms:Decrypt"]
resources = ["*"]
"#;
    let s = set(text);
    let d = check(&s, "mallory", "kms:Decrypt", KEY_NAMES, None);
    assert_eq!(
        d,
        Decision {
            allowed: false,
            decided_by: "test.toml#2 (no-decrypt)".to_string(),
            condition: None,
        }
    );
    let d = check(&s, "mallory", "kms:Encrypt", KEY_NAMES, None);
    assert_eq!(d.decided_by, "test.toml#1 (all)");
    assert!(d.allowed);
    assert!(allowed(&s, "alice", "kms:Decrypt", KEY_NAMES));

    // The deny in an earlier file, the allow (literal principal) in a later one.
    let mut merged = PolicySet::default();
    merged.merge(
        PolicySet::from_toml(
            "a-deny.toml",
            &statement(r#"["mal*"]"#, r#"["decrypt"]"#, r#"["*"]"#)
                .replace("\"allow\"", "\"deny\""),
        )
        .unwrap(),
    );
    merged.merge(
        PolicySet::from_toml(
            "b-allow.toml",
            &statement(r#"["mallory"]"#, r#"["decrypt"]"#, r#"["*"]"#),
        )
        .unwrap(),
    );
    assert_eq!(merged.len(), 2);
    let d = check(&merged, "mallory", "kms:Decrypt", KEY_NAMES, None);
    assert_eq!((d.allowed, d.decided_by.as_str()), (false, "a-deny.toml#1"));
}

#[test]
fn nothing_allows_means_implicit_deny() {
    let s = set(&statement(r#"["alice"]"#, r#"["encrypt"]"#, r#"["*"]"#));
    let d = check(&s, "alice", "kms:Decrypt", KEY_NAMES, None);
    assert_eq!(
        d,
        Decision {
            allowed: false,
            decided_by: "implicit deny: no statement allows".to_string(),
            condition: None,
        }
    );
    assert_eq!(
        check(&s, "bob", "kms:Encrypt", KEY_NAMES, None).decided_by,
        IMPLICIT_DENY
    );
    // An unknown action cannot reach evaluation: requests carry a typed
    // `Action`, and names from outside are parsed first.
    assert_eq!(Action::from_name("kms:Frobnicate"), None);
    let empty = PolicySet::default();
    assert!(empty.is_empty());
    assert!(!allowed(&empty, "owner", "kms:ListKeys", &["*"]));
}

#[test]
fn groups_expand_to_exactly_their_actions() {
    let expect: &[(&str, &[&str])] = &[
        (
            "administer",
            &[
                "kms:CreateKey",
                "kms:DescribeKey",
                "kms:ListKeys",
                "kms:ListAliases",
                "kms:UpdateKeyDescription",
                "kms:EnableKey",
                "kms:DisableKey",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
                "kms:CreateAlias",
                "kms:UpdateAlias",
                "kms:DeleteAlias",
                "kms:EnableKeyRotation",
                "kms:DisableKeyRotation",
                "kms:GetKeyRotationStatus",
                "kms:RotateKeyOnDemand",
                "kms:ListKeyRotations",
                "kms:GetKeyPolicy",
                "kms:ListKeyPolicies",
                "kms:CreatePrincipal",
                "kms:DeletePrincipal",
                "kms:ListPrincipals",
                "kms:CreateAccessKey",
                "kms:DeleteAccessKey",
                "rewrap:CheckPolicy",
                // Custom key stores (issue 13).
                "kms:CreateCustomKeyStore",
                "kms:DescribeCustomKeyStores",
                "kms:ConnectCustomKeyStore",
                "kms:DisconnectCustomKeyStore",
                "kms:UpdateCustomKeyStore",
                "kms:DeleteCustomKeyStore",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:ListResourceTags",
                "kms:CreateGrant",
                "kms:ListGrants",
                "kms:ListRetirableGrants",
                "kms:RetireGrant",
                "kms:RevokeGrant",
                "kms:GetParametersForImport",
                "kms:ImportKeyMaterial",
                "kms:DeleteImportedKeyMaterial",
            ],
        ),
        (
            "encrypt",
            &[
                "kms:Encrypt",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:GenerateDataKeyPair",
                "kms:GenerateDataKeyPairWithoutPlaintext",
                "kms:GetPublicKey",
            ],
        ),
        ("decrypt", &["kms:Decrypt"]),
        ("re-encrypt", &["kms:ReEncryptFrom", "kms:ReEncryptTo"]),
        (
            "audit",
            &[
                "kms:DescribeKey",
                "kms:ListKeys",
                "kms:ListAliases",
                "kms:ListKeyRotations",
                "kms:GetKeyRotationStatus",
                "kms:GetKeyPolicy",
                "kms:ListKeyPolicies",
                "rewrap:ReadAuditTrail",
                "rewrap:CheckPolicy",
                "kms:ListResourceTags",
                "kms:ListGrants",
                "kms:ListRetirableGrants",
            ],
        ),
        (
            "sign",
            &[
                "kms:Sign",
                "kms:Verify",
                "kms:GenerateMac",
                "kms:VerifyMac",
                "kms:GetPublicKey",
            ],
        ),
    ];
    assert_eq!(expect.len(), GROUPS.len());
    for (group, actions) in expect {
        let s = set(&statement(r#"["p"]"#, &format!("[{group:?}]"), r#"["*"]"#));
        let mut got = allowed_actions(&s, "p", &["*"], None);
        let mut want = actions.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "group {group}");
        assert!(actions.iter().all(|a| is_known_action(a)), "group {group}");
    }
    let admin = names(group_members("administer").unwrap());
    for crypto in [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:Sign",
        "kms:GenerateMac",
        "kms:GenerateDataKeyPair",
    ] {
        assert!(!admin.contains(&crypto), "administer grants {crypto}");
    }
    assert_eq!(group_members("admin"), None);
}

#[test]
fn wildcard_actions_expand_over_known_actions() {
    let s = set(&statement(
        r#"["p"]"#,
        r#"["kms:GenerateDataKey*"]"#,
        r#"["*"]"#,
    ));
    assert_eq!(
        allowed_actions(&s, "p", &["*"], None),
        [
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:GenerateDataKeyPair",
            "kms:GenerateDataKeyPairWithoutPlaintext"
        ]
    );
    let s = set(&statement(r#"["p"]"#, r#"["kms:*"]"#, r#"["*"]"#));
    assert_eq!(
        allowed_actions(&s, "p", &["*"], None).len(),
        Action::ALL.len() - 2
    );
    assert!(!allowed(&s, "p", "rewrap:ReadAuditTrail", &["*"]));
    assert!(!allowed(&s, "p", "rewrap:CheckPolicy", &["*"]));
    let s = set(&statement(r#"["p"]"#, r#"["*"]"#, r#"["*"]"#));
    assert_eq!(allowed_actions(&s, "p", &["*"], None), all_names());
    let s = set(&statement(
        r#"["p"]"#,
        r#"["kms:*", "rewrap:*"]"#,
        r#"["*"]"#,
    ));
    assert_eq!(allowed_actions(&s, "p", &["*"], None), all_names());
    // AWS action names are case-insensitive, in policies and in requests.
    let s = set(&statement(
        r#"["p"]"#,
        r#"["KMS:decrypt", "kms:list*"]"#,
        r#"["*"]"#,
    ));
    assert_eq!(
        allowed_actions(&s, "p", &["*"], None),
        [
            "kms:Decrypt",
            "kms:ListKeys",
            "kms:ListAliases",
            "kms:ListKeyRotations",
            "kms:ListKeyPolicies",
            "kms:ListPrincipals",
            "kms:ListResourceTags",
            "kms:ListGrants",
            "kms:ListRetirableGrants"
        ]
    );
    assert!(allowed(&s, "p", "kms:DECRYPT", &["*"]));
    assert!(is_known_action("kms:reencryptfrom"));
    assert!(!is_known_action("kms:ReEncrypt"));
    assert!(!is_known_action("kms:*"));
}

#[test]
fn principal_globs_match() {
    let s = set(&statement(
        r#"["app-*", "ops?", "svc/*/reader"]"#,
        r#"["decrypt"]"#,
        r#"["*"]"#,
    ));
    for p in [
        "app-reader",
        "app-",
        "ops1",
        "svc/eu/reader",
        "svc/a:b/reader",
    ] {
        assert!(allowed(&s, p, "kms:Decrypt", KEY_NAMES), "{p}");
    }
    for p in [
        "app",
        "xapp-reader",
        "ops12",
        "ops",
        "svc/eu/writer",
        "App-reader",
    ] {
        assert!(!allowed(&s, p, "kms:Decrypt", KEY_NAMES), "{p}");
    }
}

#[test]
fn resource_globs_match_ids_arns_and_aliases() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        // pattern, names that match, names that do not
        (KEY_ID, &[KEY_ID], &[KEY_ARN, "*"]),
        (KEY_ARN, &[KEY_ARN], &[KEY_ID]),
        ("alias/app-*", &[ALIAS], &[ALIAS_ARN, "alias/other"]),
        ("arn:aws:kms:*:*:key/*", &[KEY_ARN], &[ALIAS_ARN, KEY_ID]),
        (
            "arn:aws:kms:us-east-1:111122223333:*",
            &[KEY_ARN, ALIAS_ARN],
            &[ALIAS],
        ),
        ("*:alias/app-data", &[ALIAS_ARN], &[ALIAS]),
        ("arn:*:alias/app-{data,logs}", &[ALIAS_ARN], &[KEY_ARN]),
        ("alias/app-?ata", &[ALIAS], &["alias/app-data2"]),
        (r"alias/\*", &["alias/*"], &[ALIAS]),
        (r"*/app-\*", &["alias/app-*"], &[ALIAS]),
        ("*", &[KEY_ID, ALIAS, "*"], &[]),
    ];
    for (pattern, yes, no) in cases {
        let s = set(&statement(
            r#"["p"]"#,
            r#"["decrypt"]"#,
            &format!("[{pattern:?}]"),
        ));
        for name in *yes {
            assert!(
                allowed(&s, "p", "kms:Decrypt", &[name]),
                "{pattern} vs {name}"
            );
        }
        for name in *no {
            assert!(
                !allowed(&s, "p", "kms:Decrypt", &[name]),
                "{pattern} vs {name}"
            );
        }
    }
    // Any of the key's names is enough.
    let s = set(&statement(
        r#"["p"]"#,
        r#"["decrypt"]"#,
        r#"["alias/app-data"]"#,
    ));
    assert!(allowed(&s, "p", "kms:Decrypt", KEY_NAMES));
    assert!(!allowed(&s, "p", "kms:Decrypt", &[KEY_ID, KEY_ARN]));
}

#[test]
fn conditions_on_the_encryption_context() {
    let s = set(r#"
[[statement]]
effect = "allow"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]
[statement.condition]
context_equals = { purpose = "app-data" }
context_keys_required = ["file-id"]
"#);
    let both = ctx(&[("purpose", "app-data"), ("file-id", "7"), ("extra", "x")]);
    assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&both)).allowed);
    let wrong = ctx(&[("purpose", "billing"), ("file-id", "7")]);
    assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&wrong)).allowed);
    let no_file = ctx(&[("purpose", "app-data")]);
    assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&no_file)).allowed);
    let empty = ctx(&[]);
    assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&empty)).allowed);
    assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);

    // An empty condition table holds for any request, with or without context.
    let s = set(&format!(
        "{}[statement.condition]\n",
        statement(r#"["p"]"#, r#"["decrypt"]"#, r#"["*"]"#)
    ));
    assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);
}

#[test]
fn a_conditional_deny_applies_only_when_its_condition_holds() {
    let s = set(r#"
[[statement]]
effect = "allow"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "no-billing"
effect = "deny"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]
condition = { context_equals = { app = "billing" } }
"#);
    let billing = ctx(&[("app", "billing")]);
    let d = check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&billing));
    assert_eq!(
        (d.allowed, d.decided_by.as_str()),
        (false, "test.toml#2 (no-billing)")
    );
    let other = ctx(&[("app", "web")]);
    let d = check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&other));
    assert_eq!((d.allowed, d.decided_by.as_str()), (true, "test.toml#1"));
    assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);
}

#[test]
fn bad_toml_syntax_names_file_and_line() {
    let text = "[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"\nactions = []\n";
    assert_eq!(
        load_error(text),
        "policies/bad.toml line 4: invalid array; expected `]`"
    );
}

#[test]
fn unknown_action_names_file_and_line() {
    let text = "# comment\n[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"]\n\
                actions = [\n  \"kms:Encrypt\",\n  \"kms:Decrypy\",\n]\nresources = [\"*\"]\n";
    assert_eq!(
        load_error(text),
        "policies/bad.toml line 7: unknown action \"kms:Decrypy\""
    );
    // A wildcard that matches nothing is a typo too.
    let text = statement(
        r#"["a"]"#,
        r#"["kms:GenerateDatakey*", "kms:Decript*"]"#,
        r#"["*"]"#,
    );
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 4: unknown action \"kms:Decript*\""
    );
    let text = statement(r#"["a"]"#, r#"["admin"]"#, r#"["*"]"#);
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 4: unknown action group \"admin\""
    );
}

#[test]
fn unknown_field_names_file_and_line() {
    let text = "[[statement]]\neffect = \"allow\"\nprincipal = [\"a\"]\n";
    assert_eq!(
        load_error(text),
        "policies/bad.toml line 3: unknown field `principal`, expected one of \
         `sid`, `effect`, `principals`, `actions`, `resources`, `condition`"
    );
    let text = format!(
        "{}[statement.condition]\ncontext_equal = {{ a = \"b\" }}\n",
        statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#)
    );
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 7: unknown field `context_equal`, expected one of \
         `context_equals`, `context_keys_required`, `context_keys_allowed`, \
         `reencrypt_same_context`, `reencrypt_on_same_key`, `resource_tags`"
    );
    assert_eq!(
        load_error("[[statements]]\n"),
        "policies/bad.toml line 1: unknown field `statements`, expected `statement`"
    );
}

#[test]
fn bad_effect_names_file_and_line() {
    let text = statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#).replace("allow", "permit");
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 2: unknown variant `permit`, expected `allow` or `deny`"
    );
}

#[test]
fn missing_field_empty_list_bad_glob_and_duplicate_sid_are_refused() {
    let text =
        "\n[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"]\nactions = [\"decrypt\"]\n";
    assert_eq!(
        load_error(text),
        "policies/bad.toml line 2: missing field `resources`"
    );
    let text = statement(r#"["a"]"#, r#"["decrypt"]"#, "[]");
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 5: statement 1 has no resources"
    );
    let text = statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["alias/[x"]"#);
    assert_eq!(
        load_error(&text),
        "policies/bad.toml line 5: invalid glob \"alias/[x\": unclosed character class; missing ']'"
    );
    let text = r#"
[[statement]]
sid = "s"
effect = "allow"
principals = ["a"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "s"
effect = "deny"
principals = ["a"]
actions = ["decrypt"]
resources = ["*"]
"#;
    assert_eq!(
        load_error(text),
        "policies/bad.toml line 10: duplicate sid \"s\" (also statement 1)"
    );
}

#[test]
fn load_dir_refuses_the_whole_set_for_one_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[[statement]]\neffect = \"maybe\"\n",
    )
    .unwrap();
    let err = PolicySet::load_dir(dir.path()).unwrap_err();
    let bad = dir.path().join("b.toml").display().to_string();
    assert_eq!(
        err.to_string(),
        format!("{bad} line 2: unknown variant `maybe`, expected `allow` or `deny`")
    );
    assert!(matches!(err, PolicyError::Parse { line: 2, .. }));
}

#[test]
fn load_dir_reads_toml_files_sorted_and_not_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, principal: &str| {
        std::fs::write(
            dir.path().join(name),
            statement(&format!("[{principal:?}]"), r#"["decrypt"]"#, r#"["*"]"#),
        )
        .unwrap();
    };
    write("b.toml", "p");
    write("a.toml", "p");
    write("notes.txt", "q");
    std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/c.toml"), "not toml at all [").unwrap();
    let s = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        check(&s, "p", "kms:Decrypt", &["*"], None).decided_by,
        "a.toml#1"
    );
    assert!(!allowed(&s, "q", "kms:Decrypt", &["*"]));
}

#[test]
fn load_dir_empty_is_deny_all_and_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(s.len(), 0);
    assert_eq!(
        check(&s, "owner", "kms:CreateKey", &["*"], None).decided_by,
        IMPLICIT_DENY
    );

    let missing = dir.path().join("nope");
    let err = PolicySet::load_dir(&missing).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Io { path, source }
            if *path == missing.display().to_string()
                && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("{}: ", missing.display())));
}

fn shipped() -> PolicySet {
    PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

#[test]
fn shipped_policies_give_each_role_exactly_its_part() {
    let s = shipped();
    assert_eq!(s.len(), 9);
    let app = ctx(&[("purpose", "app-data")]);
    let on_key = |p| allowed_actions(&s, p, KEY_NAMES, Some(&app));
    let on_account = |p| allowed_actions(&s, p, &["*"], None);

    let mut admin: Vec<&str> = names(group_members("administer").unwrap());
    let order = |v: &mut Vec<&str>| v.sort_by_key(|a| all_names().iter().position(|x| x == a));
    order(&mut admin);
    assert_eq!(on_key("key-admin"), admin);
    assert_eq!(on_account("key-admin"), admin);

    let writer = [
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:DescribeKey",
        "kms:GetPublicKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
    ];
    assert_eq!(on_key("app-writer"), writer);

    assert_eq!(on_key("app-reader"), ["kms:Decrypt"]);
    assert_eq!(
        allowed_actions(&s, "app-reader", KEY_NAMES, None),
        [] as [&str; 0]
    );
    let other = ctx(&[("purpose", "billing")]);
    assert_eq!(
        allowed_actions(&s, "app-reader", KEY_NAMES, Some(&other)),
        [] as [&str; 0]
    );

    assert_eq!(
        on_key("storage-rotator"),
        [
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
            "kms:DescribeKey",
            "kms:ListAliases"
        ]
    );
    let d = check(&s, "storage-rotator", "kms:Decrypt", KEY_NAMES, Some(&app));
    assert_eq!(
        (d.allowed, d.decided_by.as_str()),
        (false, "storage-rotator.toml#1 (rotator-no-plaintext)")
    );

    let mut audit = names(group_members("audit").unwrap());
    order(&mut audit);
    assert_eq!(on_account("auditor"), audit);

    assert_eq!(on_key("owner"), [] as [&str; 0]);
    assert_eq!(on_key("key-admin*"), [] as [&str; 0]);
}

#[test]
fn decisions_name_the_deciding_file_and_statement() {
    let s = shipped();
    let cases = [
        (
            "key-admin",
            "kms:CreateKey",
            true,
            "key-admin.toml#1 (admin-lifecycle)",
        ),
        ("key-admin", "kms:Decrypt", false, IMPLICIT_DENY),
        (
            "app-writer",
            "kms:Encrypt",
            true,
            "app-writer.toml#1 (writer-encrypt)",
        ),
        (
            "app-reader",
            "kms:Decrypt",
            true,
            "app-reader.toml#1 (reader-decrypt)",
        ),
        (
            "storage-rotator",
            "kms:ReEncryptTo",
            true,
            "storage-rotator.toml#4 (rotator-reencrypt)",
        ),
        (
            "storage-rotator",
            "kms:GenerateDataKey",
            false,
            "storage-rotator.toml#1 (rotator-no-plaintext)",
        ),
        (
            "auditor",
            "rewrap:ReadAuditTrail",
            true,
            "auditor.toml#1 (auditor-read)",
        ),
    ];
    let app = ctx(&[("purpose", "app-data")]);
    for (principal, action, allowed, by) in cases {
        let d = check(&s, principal, action, KEY_NAMES, Some(&app));
        assert_eq!(
            (d.allowed, d.decided_by.as_str()),
            (allowed, by),
            "{principal} {action}"
        );
    }
}

#[test]
fn the_owner_policy_shape_allows_everything() {
    let mut s = shipped();
    s.merge(set(&statement(
        r#"["owner"]"#,
        r#"["kms:*", "rewrap:*"]"#,
        r#"["*"]"#,
    )));
    s.merge(set(&statement(r#"["root"]"#, r#"["*"]"#, r#"["*"]"#)));
    assert_eq!(allowed_actions(&s, "owner", KEY_NAMES, None), all_names());
    assert_eq!(allowed_actions(&s, "root", &["*"], None), all_names());
}

#[test]
fn statements_for_resources_lists_matching_statements_as_json() {
    let mut s = set(r#"
[[statement]]
sid = "one-key"
effect = "allow"
principals = ["p"]
actions = ["decrypt", "kms:DescribeKey"]
resources = ["alias/app-data"]
[statement.condition]
context_equals = { purpose = "app-data" }

[[statement]]
effect = "deny"
principals = ["q"]
actions = ["encrypt"]
resources = ["alias/other"]
"#);
    s.merge(
        PolicySet::from_toml(
            "dir/all.toml",
            &statement(r#"["r"]"#, r#"["audit"]"#, r#"["*"]"#),
        )
        .unwrap(),
    );
    let refs = s.statements_for_resources(KEY_NAMES);
    assert_eq!(refs.len(), 2);
    assert_eq!(
        serde_json::to_string(&refs).unwrap(),
        r#"[{"file":"test.toml","index":1,"sid":"one-key","effect":"allow","principals":["p"],"actions":["decrypt","kms:DescribeKey"],"resources":["alias/app-data"],"condition":{"context_equals":{"purpose":"app-data"}}},{"file":"all.toml","index":1,"effect":"allow","principals":["r"],"actions":["audit"],"resources":["*"]}]"#
    );
    assert_eq!(s.statements_for_resources(&["alias/other"]).len(), 2);
    assert_eq!(
        s.statements_for_resources(&["alias/none"])[0].file,
        "all.toml"
    );
}

#[test]
fn mixed_literal_and_glob_principals_pick_the_first_deciding_statement() {
    let s = set(r#"
[[statement]]
sid = "glob-allow"
effect = "allow"
principals = ["team-*"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "literal-allow"
effect = "allow"
principals = ["team-a", "team-b"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "literal-deny"
effect = "deny"
principals = ["team-b"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "glob-deny"
effect = "deny"
principals = ["*-b"]
actions = ["decrypt"]
resources = ["*"]
"#);
    let by = |p| check(&s, p, "kms:Decrypt", KEY_NAMES, None).decided_by;
    assert_eq!(by("team-a"), "test.toml#1 (glob-allow)");
    assert_eq!(by("team-b"), "test.toml#3 (literal-deny)");
    assert_eq!(by("x-b"), "test.toml#4 (glob-deny)");
    assert_eq!(by("x-a"), IMPLICIT_DENY);
}

#[test]
fn policy_sets_are_shareable() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync>() {}
    assert_traits::<PolicySet>();
}

/// A ReEncrypt request from `source` context to `destination` context.
fn re_encrypt<'a>(
    action: Action,
    source: Option<&'a BTreeMap<String, String>>,
    destination: Option<&'a BTreeMap<String, String>>,
    same_key: bool,
    resources: &'a [&'a str],
) -> AccessRequest<'a> {
    AccessRequest {
        principal: "storage-rotator",
        action,
        resources,
        context: if action == Action::ReEncryptFrom {
            source
        } else {
            destination
        },
        re_encrypt: Some(ReEncryptFacts {
            source_context: source,
            destination_context: destination,
            same_key,
        }),
        resource_tags: None,
    }
}

#[test]
fn shipped_rotator_cannot_change_a_context_issue_11_finding_1() {
    let s = shipped();
    let hr = ctx(&[("purpose", "hr")]);
    let app = ctx(&[("purpose", "app-data")]);
    for action in [Action::ReEncryptFrom, Action::ReEncryptTo] {
        let d = s.evaluate(&re_encrypt(action, Some(&hr), Some(&app), false, KEY_NAMES));
        assert_eq!(
            (d.allowed, d.decided_by.as_str(), d.condition.as_deref()),
            (
                false,
                "storage-rotator.toml#2 (rotator-no-context-change)",
                Some("rewrap:ReEncryptSameContext = false")
            ),
            "{action}"
        );
        // Dropping the context, or adding one, is a change too.
        let d = s.evaluate(&re_encrypt(action, Some(&hr), None, false, KEY_NAMES));
        assert!(!d.allowed, "{action}: {d:?}");
        let d = s.evaluate(&re_encrypt(action, None, Some(&app), false, KEY_NAMES));
        assert!(!d.allowed, "{action}: {d:?}");
        let d = s.evaluate(&re_encrypt(action, Some(&hr), Some(&hr), false, KEY_NAMES));
        assert_eq!(
            (d.allowed, d.decided_by.as_str(), d.condition.as_deref()),
            (
                true,
                "storage-rotator.toml#4 (rotator-reencrypt)",
                Some("rewrap:ReEncryptSameContext = true")
            ),
            "{action}"
        );
        // No context on either side is the same (empty) context.
        let d = s.evaluate(&re_encrypt(action, None, None, true, KEY_NAMES));
        assert!(d.allowed, "{action}: {d:?}");
    }
    // Outside a ReEncrypt the ReEncrypt conditions never hold: the allow
    // does not reach DescribeKey through them.
    let d = s.evaluate(&AccessRequest {
        principal: "storage-rotator",
        action: Action::ReEncryptTo,
        resources: KEY_NAMES,
        context: Some(&app),
        re_encrypt: None,
        resource_tags: None,
    });
    assert_eq!(
        (d.allowed, d.decided_by.as_str(), d.condition.as_deref()),
        (
            false,
            IMPLICIT_DENY,
            Some("storage-rotator.toml#4 (rotator-reencrypt): rewrap:ReEncryptSameContext = true not met")
        )
    );
}

#[test]
fn shipped_rotator_cannot_reencrypt_into_an_excluded_key() {
    let s = shipped();
    let app = ctx(&[("purpose", "app-data")]);
    let excluded = [KEY_ID, KEY_ARN, "alias/not-a-rotation-target/hr"];
    let d = s.evaluate(&re_encrypt(
        Action::ReEncryptTo,
        Some(&app),
        Some(&app),
        false,
        &excluded,
    ));
    assert_eq!(
        (d.allowed, d.decided_by.as_str()),
        (false, "storage-rotator.toml#3 (rotator-no-excluded-target)")
    );
    // Out of such a key is allowed: only the destination is restricted.
    let d = s.evaluate(&re_encrypt(
        Action::ReEncryptFrom,
        Some(&app),
        Some(&app),
        false,
        &excluded,
    ));
    assert!(d.allowed, "{d:?}");
}

#[test]
fn reencrypt_on_same_key_and_context_keys_allowed() {
    let s = set(r#"
[[statement]]
sid = "same-key-only"
effect = "allow"
principals = ["storage-rotator"]
actions = ["re-encrypt"]
resources = ["*"]
[statement.condition]
reencrypt_on_same_key = true
context_keys_allowed = ["purpose", "rewrap:file-id"]
"#);
    let app = ctx(&[("purpose", "app-data")]);
    let more = ctx(&[("purpose", "app-data"), ("owner", "x")]);
    let to = Action::ReEncryptTo;
    assert!(
        s.evaluate(&re_encrypt(to, Some(&app), Some(&app), true, KEY_NAMES))
            .allowed
    );
    let d = s.evaluate(&re_encrypt(to, Some(&app), Some(&app), false, KEY_NAMES));
    assert_eq!(
        d.condition.as_deref(),
        Some("test.toml#1 (same-key-only): kms:ReEncryptOnSameKey = true not met")
    );
    let d = s.evaluate(&re_encrypt(to, Some(&more), Some(&more), true, KEY_NAMES));
    assert_eq!(
        d.condition.as_deref(),
        Some(
            "test.toml#1 (same-key-only): kms:EncryptionContextKeys within \
             [\"purpose\", \"rewrap:file-id\"] not met"
        )
    );
    assert!(!d.allowed);
    // A condition key the TOML does not know is refused at load time.
    let err = load_error(
        "[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"]\nactions = [\"decrypt\"]\n\
         resources = [\"*\"]\n[statement.condition]\nreencrypt_same_contxt = true\n",
    );
    assert!(err.starts_with("policies/bad.toml line 7: "), "{err}");
    assert!(err.contains("reencrypt_same_contxt"), "{err}");
}

#[test]
fn a_conditional_allow_never_counts_as_holding_a_right() {
    let s = set(r#"
[[statement]]
effect = "allow"
principals = ["rot"]
actions = ["re-encrypt"]
resources = ["*"]
[statement.condition]
reencrypt_same_context = true
[[statement]]
effect = "allow"
principals = ["plain"]
actions = ["re-encrypt"]
resources = ["*"]
"#);
    assert!(!s.covers("rot", "plain"));
    assert!(s.covers("plain", "rot"));
}

/// `resource_tags` (`aws:ResourceTag/KEY`): an allow that follows a key's
/// tags, a deny that follows them too, and no tag condition ever holding
/// for an account-level request (issue 15).
#[test]
fn conditions_on_the_resource_tags() {
    let s = set(r#"
[[statement]]
sid = "hr-decrypt"
effect = "allow"
principals = ["app-reader"]
actions = ["decrypt"]
resources = ["*"]
[statement.condition]
resource_tags = { team = "hr" }

[[statement]]
sid = "no-frozen"
effect = "deny"
principals = ["*"]
actions = ["*"]
resources = ["*"]
[statement.condition]
resource_tags = { state = "frozen" }
"#);
    let evaluate = |tags: Option<&BTreeMap<String, String>>, resources: &[&str]| {
        s.evaluate(&AccessRequest {
            principal: "app-reader",
            action: Action::Decrypt,
            resources,
            context: None,
            re_encrypt: None,
            resource_tags: tags,
        })
    };
    let hr = ctx(&[("team", "hr"), ("env", "prod")]);
    let d = evaluate(Some(&hr), KEY_NAMES);
    assert_eq!(
        (d.allowed, d.decided_by.as_str(), d.condition.as_deref()),
        (
            true,
            "test.toml#1 (hr-decrypt)",
            Some("aws:ResourceTag/team = \"hr\"")
        )
    );
    // Another value, no tags at all, or an account-level request: the
    // condition does not hold, and the refusal says which part failed.
    for tags in [
        Some(ctx(&[("team", "finance")])),
        Some(BTreeMap::new()),
        None,
    ] {
        let d = evaluate(tags.as_ref(), KEY_NAMES);
        assert_eq!(
            (d.allowed, d.decided_by.as_str(), d.condition.as_deref()),
            (
                false,
                IMPLICIT_DENY,
                Some("test.toml#1 (hr-decrypt): aws:ResourceTag/team = \"hr\" not met")
            ),
            "{tags:?}"
        );
    }
    // A deny on a tag wins over the allow once the key carries it.
    let frozen = ctx(&[("team", "hr"), ("state", "frozen")]);
    let d = evaluate(Some(&frozen), KEY_NAMES);
    assert_eq!(
        (d.allowed, d.decided_by.as_str()),
        (false, "test.toml#2 (no-frozen)")
    );
    // Tag keys are case-sensitive, as in AWS.
    let d = evaluate(Some(&ctx(&[("Team", "hr")])), KEY_NAMES);
    assert!(!d.allowed);
    // A misspelt condition field refuses the file.
    let err = load_error(
        "[[statement]]\neffect = \"allow\"\nprincipals = [\"p\"]\nactions = [\"decrypt\"]\nresources = [\"*\"]\n[statement.condition]\nresource_tag = { a = \"b\" }\n",
    );
    assert!(err.starts_with("policies/bad.toml line "), "{err}");
    assert!(err.contains("unknown field `resource_tag`"), "{err}");
}
