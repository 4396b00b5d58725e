//! Custom key stores on SoftHSM2 (a real PKCS#11 token in a temporary
//! folder per test), through the real binary and through `rewrap serve`
//! with the AWS CLI: store lifecycle and states, every cryptographic
//! operation with a key generated in the token, rotation of an envelope
//! tree onto an HSM key and back, a disconnected store, a wrong PIN, and
//! the token's key objects being unreadable.

mod support;

use std::process::{Command, Output};
use support::cli::{assert_aws_error, json, stderr, stdout, Env};
use support::hsm::{write_private, SoftHsm, MODULE, USER_PIN};

/// `rewrap ARGS` as the owner, with the token's SoftHSM2 configuration.
fn run(env: &Env, hsm: &SoftHsm, args: &[&str]) -> Output {
    env.command(&env.owner)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .args(args)
        .output()
        .unwrap()
}

fn ok(env: &Env, hsm: &SoftHsm, args: &[&str]) -> serde_json::Value {
    json(&run(env, hsm, args))
}

fn create_store(env: &Env, hsm: &SoftHsm, name: &str, pin_source: &str) -> String {
    let v = ok(
        env,
        hsm,
        &[
            "create-custom-key-store",
            "--custom-key-store-name",
            name,
            "--pkcs11-module-path",
            MODULE,
            "--token-label",
            &hsm.label,
            "--pin-source",
            pin_source,
        ],
    );
    let id = v["CustomKeyStoreId"].as_str().unwrap().to_string();
    assert!(id.starts_with("cks-") && id.len() == 21, "{id}");
    id
}

fn describe(env: &Env, hsm: &SoftHsm, id: &str) -> serde_json::Value {
    let v = ok(
        env,
        hsm,
        &["describe-custom-key-stores", "--custom-key-store-id", id],
    );
    v["CustomKeyStores"][0].clone()
}

fn state(env: &Env, hsm: &SoftHsm, id: &str) -> String {
    describe(env, hsm, id)["ConnectionState"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hsm_key(env: &Env, hsm: &SoftHsm, store: &str) -> serde_json::Value {
    ok(
        env,
        hsm,
        &[
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            store,
            "--description",
            "in the token",
        ],
    )["KeyMetadata"]
        .clone()
}

/// A connected store on a fresh token.
fn connected() -> (Env, SoftHsm, String) {
    let env = Env::new();
    let hsm = SoftHsm::new("rewrap-test");
    let id = create_store(&env, &hsm, "hsm1", &hsm.pin_source());
    store_op(&env, &hsm, "connect-custom-key-store", &id);
    (env, hsm, id)
}

/// Rewrites `custom_key_stores.allowed_modules` in the keystore's config.toml.
fn set_allowed_modules(env: &Env, modules: &[&str]) {
    let path = env.home.join("config.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let list = modules.iter().map(|m| toml::Value::from(*m)).collect();
    let mut table = toml::Table::new();
    table.insert("allowed_modules".into(), toml::Value::Array(list));
    config.insert("custom_key_stores".into(), toml::Value::Table(table));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

/// `create-custom-key-store` for `module` on `hsm`'s token.
fn create_with_module(env: &Env, hsm: &SoftHsm, name: &str, module: &str) -> Output {
    run(
        env,
        hsm,
        &[
            "create-custom-key-store",
            "--custom-key-store-name",
            name,
            "--pkcs11-module-path",
            module,
            "--token-label",
            &hsm.label,
            "--pin-source",
            &hsm.pin_source(),
        ],
    )
}

/// The ValidationException message for a refused module.
fn refused(env: &Env, module: &str, why: &str) -> String {
    format!(
        "PKCS#11 module {module} is refused: {why}. The modules rewrap may load are listed in \
         custom_key_stores.allowed_modules of {}",
        env.home.join("config.toml").display()
    )
}

/// `OP --custom-key-store-id ID` (connect, disconnect, delete), which must succeed.
fn store_op(env: &Env, hsm: &SoftHsm, op: &str, id: &str) -> serde_json::Value {
    ok(env, hsm, &[op, "--custom-key-store-id", id])
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn store_lifecycle_states_and_errors() {
    let env = Env::new();
    let hsm = SoftHsm::new("rewrap-life");
    let id = create_store(&env, &hsm, "hsm1", &hsm.pin_source());
    let d = describe(&env, &hsm, &id);
    assert_eq!(d["ConnectionState"], "DISCONNECTED");
    assert_eq!(d["CustomKeyStoreType"], "PKCS11");
    assert_eq!(d["CustomKeyStoreName"], "hsm1");
    assert_eq!(d["Pkcs11ModulePath"], MODULE);
    assert_eq!(d["TokenLabel"], "rewrap-life");
    assert_eq!(d["PinSource"], hsm.pin_source());
    assert!(d.get("ConnectionErrorCode").is_none(), "{d}");

    // A second store of the same name; a PIN given inline.
    let dup = run(
        &env,
        &hsm,
        &[
            "create-custom-key-store",
            "--custom-key-store-name",
            "hsm1",
            "--pkcs11-module-path",
            MODULE,
            "--token-label",
            &hsm.label,
            "--pin-source",
            &hsm.pin_source(),
        ],
    );
    assert_aws_error(
        &dup,
        "CustomKeyStoreNameInUseException",
        "CreateCustomKeyStore",
    );
    let inline = run(
        &env,
        &hsm,
        &[
            "create-custom-key-store",
            "--custom-key-store-name",
            "inline",
            "--pkcs11-module-path",
            MODULE,
            "--token-label",
            &hsm.label,
            "--pin-source",
            USER_PIN,
        ],
    );
    assert_aws_error(&inline, "ValidationException", "CreateCustomKeyStore");
    assert!(!stderr(&inline).contains(USER_PIN), "{}", stderr(&inline));

    // A key needs a connected store.
    let early = run(
        &env,
        &hsm,
        &[
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            &id,
        ],
    );
    assert_aws_error(&early, "CustomKeyStoreInvalidStateException", "CreateKey");

    store_op(&env, &hsm, "connect-custom-key-store", &id);
    assert_eq!(state(&env, &hsm, &id), "CONNECTED");
    // Connecting a connected store is a no-op, as in AWS.
    store_op(&env, &hsm, "connect-custom-key-store", &id);
    let busy = run(
        &env,
        &hsm,
        &["delete-custom-key-store", "--custom-key-store-id", &id],
    );
    assert_aws_error(
        &busy,
        "CustomKeyStoreInvalidStateException",
        "DeleteCustomKeyStore",
    );
    let moved = run(
        &env,
        &hsm,
        &[
            "update-custom-key-store",
            "--custom-key-store-id",
            &id,
            "--token-label",
            "other",
        ],
    );
    assert_aws_error(
        &moved,
        "CustomKeyStoreInvalidStateException",
        "UpdateCustomKeyStore",
    );

    let key = hsm_key(&env, &hsm, &id);
    store_op(&env, &hsm, "disconnect-custom-key-store", &id);
    assert_eq!(state(&env, &hsm, &id), "DISCONNECTED");
    let has_keys = run(
        &env,
        &hsm,
        &["delete-custom-key-store", "--custom-key-store-id", &id],
    );
    assert_aws_error(
        &has_keys,
        "CustomKeyStoreHasCMKsException",
        "DeleteCustomKeyStore",
    );
    assert!(
        stderr(&has_keys).contains("holds 1 keys"),
        "{}",
        stderr(&has_keys)
    );
    assert_eq!(key["Origin"], "AWS_CLOUDHSM");

    // Renamed, then found by its new name only.
    ok(
        &env,
        &hsm,
        &[
            "update-custom-key-store",
            "--custom-key-store-id",
            &id,
            "--new-custom-key-store-name",
            "hsm-prod",
        ],
    );
    let by_name = ok(
        &env,
        &hsm,
        &[
            "describe-custom-key-stores",
            "--custom-key-store-name",
            "hsm-prod",
        ],
    );
    assert_eq!(
        by_name["CustomKeyStores"][0]["CustomKeyStoreId"],
        id.as_str()
    );
    let old_name = run(
        &env,
        &hsm,
        &[
            "describe-custom-key-stores",
            "--custom-key-store-name",
            "hsm1",
        ],
    );
    assert_aws_error(
        &old_name,
        "CustomKeyStoreNotFoundException",
        "DescribeCustomKeyStores",
    );

    // An empty, disconnected store is deleted.
    let spare = create_store(&env, &hsm, "spare", &hsm.pin_source());
    store_op(&env, &hsm, "delete-custom-key-store", &spare);
    let gone = run(
        &env,
        &hsm,
        &[
            "describe-custom-key-stores",
            "--custom-key-store-id",
            &spare,
        ],
    );
    assert_aws_error(
        &gone,
        "CustomKeyStoreNotFoundException",
        "DescribeCustomKeyStores",
    );
    let all = ok(&env, &hsm, &["describe-custom-key-stores"]);
    assert_eq!(all["CustomKeyStores"].as_array().unwrap().len(), 1, "{all}");

    // The audit trail names the operations and never the PIN.
    let audit = env.audit_log();
    for op in [
        "CreateCustomKeyStore",
        "ConnectCustomKeyStore",
        "DisconnectCustomKeyStore",
        "UpdateCustomKeyStore",
        "DeleteCustomKeyStore",
    ] {
        assert!(audit.contains(op), "{op} missing from the audit trail");
    }
    assert!(!audit.contains(USER_PIN), "the PIN is in the audit trail");
}

#[test]
fn wrong_pin_missing_token_and_missing_module_fail_with_their_codes() {
    let env = Env::new();
    let hsm = SoftHsm::new("rewrap-pins");
    let wrong = hsm.dir.path().join("wrong.pin");
    write_private(&wrong, b"not-the-pin\n");
    let id = create_store(&env, &hsm, "wrong", &format!("file:{}", wrong.display()));
    let out = run(
        &env,
        &hsm,
        &["connect-custom-key-store", "--custom-key-store-id", &id],
    );
    assert_aws_error(
        &out,
        "CustomKeyStoreInvalidStateException",
        "ConnectCustomKeyStore",
    );
    assert!(
        stderr(&out).contains("INVALID_CREDENTIALS"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("not-the-pin"), "{}", stderr(&out));
    let d = describe(&env, &hsm, &id);
    assert_eq!(d["ConnectionState"], "FAILED");
    assert_eq!(d["ConnectionErrorCode"], "INVALID_CREDENTIALS");
    // As in AWS: a FAILED store is disconnected before it is connected again.
    let again = run(
        &env,
        &hsm,
        &["connect-custom-key-store", "--custom-key-store-id", &id],
    );
    assert_aws_error(
        &again,
        "CustomKeyStoreInvalidStateException",
        "ConnectCustomKeyStore",
    );
    store_op(&env, &hsm, "disconnect-custom-key-store", &id);
    ok(
        &env,
        &hsm,
        &[
            "update-custom-key-store",
            "--custom-key-store-id",
            &id,
            "--pin-source",
            &hsm.pin_source(),
        ],
    );
    store_op(&env, &hsm, "connect-custom-key-store", &id);
    let d = describe(&env, &hsm, &id);
    assert_eq!(d["ConnectionState"], "CONNECTED");
    assert!(d.get("ConnectionErrorCode").is_none(), "{d}");

    // The PIN from an environment variable of the connecting process.
    let by_env = create_store(&env, &hsm, "by-env", "env:REWRAP_TEST_HSM_PIN");
    let out = env
        .command(&env.owner)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("REWRAP_TEST_HSM_PIN", USER_PIN)
        .args(["connect-custom-key-store", "--custom-key-store-id", &by_env])
        .output()
        .unwrap();
    json(&out);
    assert_eq!(state(&env, &hsm, &by_env), "CONNECTED");

    for (name, flag, value, code) in [
        (
            "no-token",
            "--token-label",
            "no-such-token",
            "TOKEN_NOT_FOUND",
        ),
        (
            "no-module",
            "--pkcs11-module-path",
            "/usr/lib/no/such/pkcs11.so",
            "PKCS11_MODULE_NOT_FOUND",
        ),
    ] {
        if flag == "--pkcs11-module-path" {
            // Allowed, but not installed: the failure is at connection.
            set_allowed_modules(&env, &[MODULE, value]);
        }
        let mut args = vec![
            "create-custom-key-store",
            "--custom-key-store-name",
            name,
            "--pin-source",
        ];
        let pin = hsm.pin_source();
        args.push(&pin);
        if flag == "--token-label" {
            args.extend(["--pkcs11-module-path", MODULE, flag, value]);
        } else {
            args.extend([flag, value, "--token-label", &hsm.label]);
        }
        let id = json(&run(&env, &hsm, &args))["CustomKeyStoreId"]
            .as_str()
            .unwrap()
            .to_string();
        let out = run(
            &env,
            &hsm,
            &["connect-custom-key-store", "--custom-key-store-id", &id],
        );
        assert_aws_error(
            &out,
            "CustomKeyStoreInvalidStateException",
            "ConnectCustomKeyStore",
        );
        assert_eq!(
            describe(&env, &hsm, &id)["ConnectionErrorCode"],
            code,
            "{name}"
        );
    }
}

#[test]
fn every_cryptographic_operation_runs_in_the_token() {
    let (env, hsm, store) = connected();
    let key = hsm_key(&env, &hsm, &store);
    let key_id = key["KeyId"].as_str().unwrap().to_string();
    assert_eq!(key["Origin"], "AWS_CLOUDHSM");
    assert_eq!(key["CustomKeyStoreId"], store.as_str());
    let described = ok(&env, &hsm, &["describe-key", "--key-id", &key_id]);
    assert_eq!(described["KeyMetadata"]["CustomKeyStoreId"], store.as_str());
    let file_key = env.key("file-backed");

    let secret = env.path("secret.txt");
    std::fs::write(&secret, b"kept by the HSM\n").unwrap();
    let blob_path = env.path("secret.enc");
    let enc = ok(
        &env,
        &hsm,
        &[
            "encrypt",
            "--key-id",
            &key_id,
            "--plaintext",
            &format!("fileb://{}", secret.display()),
            "--encryption-context",
            "purpose=test",
        ],
    );
    let blob = b64(enc["CiphertextBlob"].as_str().unwrap());
    assert_eq!(blob.len(), 16 + 50, "header + tag around 16 bytes");
    assert_eq!(
        &blob[2..18],
        uuid::Uuid::parse_str(&key_id).unwrap().as_bytes()
    );
    assert_eq!(&blob[18..22], &1u32.to_be_bytes());
    std::fs::write(&blob_path, &blob).unwrap();
    let blob_arg = format!("fileb://{}", blob_path.display());
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "purpose=test",
        ],
    );
    assert_eq!(
        b64(dec["Plaintext"].as_str().unwrap()),
        b"kept by the HSM\n"
    );
    let wrong_ctx = run(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "purpose=other",
        ],
    );
    assert_aws_error(&wrong_ctx, "InvalidCiphertextException", "Decrypt");

    // ReEncrypt out of the token and back in.
    let out_of = ok(
        &env,
        &hsm,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--source-encryption-context",
            "purpose=test",
            "--destination-key-id",
            &file_key,
        ],
    );
    let soft = env.path("soft.enc");
    std::fs::write(&soft, b64(out_of["CiphertextBlob"].as_str().unwrap())).unwrap();
    let back = ok(
        &env,
        &hsm,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", soft.display()),
            "--destination-key-id",
            &key_id,
        ],
    );
    let hard = env.path("hard.enc");
    std::fs::write(&hard, b64(back["CiphertextBlob"].as_str().unwrap())).unwrap();
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", hard.display()),
        ],
    );
    assert_eq!(
        b64(dec["Plaintext"].as_str().unwrap()),
        b"kept by the HSM\n"
    );
    assert!(dec["KeyId"].as_str().unwrap().ends_with(&key_id));

    // Data keys: the plaintext one opens to the same bytes.
    let dk = ok(
        &env,
        &hsm,
        &[
            "generate-data-key",
            "--key-id",
            &key_id,
            "--key-spec",
            "AES_256",
        ],
    );
    let dk_blob = env.path("dk.enc");
    std::fs::write(&dk_blob, b64(dk["CiphertextBlob"].as_str().unwrap())).unwrap();
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", dk_blob.display()),
        ],
    );
    assert_eq!(dec["Plaintext"], dk["Plaintext"]);
    assert_eq!(b64(dk["Plaintext"].as_str().unwrap()).len(), 32);
    let dkw = ok(
        &env,
        &hsm,
        &[
            "generate-data-key-without-plaintext",
            "--key-id",
            &key_id,
            "--number-of-bytes",
            "16",
        ],
    );
    assert!(dkw.get("Plaintext").is_none(), "{dkw}");
    let bare_blob = env.path("dkw.enc");
    std::fs::write(&bare_blob, b64(dkw["CiphertextBlob"].as_str().unwrap())).unwrap();
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", bare_blob.display()),
        ],
    );
    assert_eq!(b64(dec["Plaintext"].as_str().unwrap()).len(), 16);

    // Rotation: a new token object per version; the old one still decrypts.
    ok(&env, &hsm, &["rotate-key-on-demand", "--key-id", &key_id]);
    let enc2 = ok(
        &env,
        &hsm,
        &["encrypt", "--key-id", &key_id, "--plaintext", "v2"],
    );
    let blob2 = b64(enc2["CiphertextBlob"].as_str().unwrap());
    assert_eq!(&blob2[18..22], &2u32.to_be_bytes());
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "purpose=test",
        ],
    );
    assert_eq!(
        b64(dec["Plaintext"].as_str().unwrap()),
        b"kept by the HSM\n"
    );
    let objects = hsm
        .tool()
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .unwrap();
    let listing = stdout(&objects);
    for v in [1, 2] {
        let label = format!("rewrap/{key_id}/v{v}");
        assert!(
            listing.contains(&label),
            "{label} not in the token:\n{listing}"
        );
    }
    assert_eq!(listing.matches("never extractable").count(), 2, "{listing}");

    // Disconnected: the store's keys refuse, the other keys keep working.
    ok(
        &env,
        &hsm,
        &[
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            &store,
        ],
    );
    let refused = run(
        &env,
        &hsm,
        &["encrypt", "--key-id", &key_id, "--plaintext", "x"],
    );
    assert_aws_error(&refused, "KMSInvalidStateException", "Encrypt");
    assert!(
        stderr(&refused).contains("DISCONNECTED"),
        "{}",
        stderr(&refused)
    );
    let refused = run(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", hard.display()),
        ],
    );
    assert_aws_error(&refused, "KMSInvalidStateException", "Decrypt");
    let refused = run(&env, &hsm, &["rotate-key-on-demand", "--key-id", &key_id]);
    assert_aws_error(&refused, "KMSInvalidStateException", "RotateKeyOnDemand");
    let soft_dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", soft.display()),
        ],
    );
    assert_eq!(
        b64(soft_dec["Plaintext"].as_str().unwrap()),
        b"kept by the HSM\n"
    );
    store_op(&env, &hsm, "connect-custom-key-store", &store);
    ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", hard.display()),
        ],
    );
}

#[test]
fn token_key_objects_cannot_be_read() {
    let (env, hsm, store) = connected();
    let key_id = hsm_key(&env, &hsm, &store)["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let label = format!("rewrap/{key_id}/v1");
    let listing = stdout(
        &hsm.tool()
            .args(["--list-objects", "--type", "secrkey"])
            .output()
            .unwrap(),
    );
    assert!(listing.contains(&label), "{listing}");
    assert!(listing.contains("sensitive"), "{listing}");
    assert!(listing.contains("never extractable"), "{listing}");
    // CKA_VALUE of the key: pkcs11-tool asks for it and the token refuses.
    let out = hsm
        .tool()
        .args(["--read-object", "--type", "secrkey", "--label", &label])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "CKA_VALUE was read: {:?}",
        out.stdout
    );
    assert!(
        out.stdout.is_empty(),
        "{} bytes of key value printed",
        out.stdout.len()
    );
    // The keystore holds no material for the key.
    let v = ok(&env, &hsm, &["list-key-rotations", "--key-id", &key_id]);
    assert_eq!(v["Rotations"].as_array().unwrap().len(), 0);
}

/// `rewrap ARGS` through the server as the owner.
fn remote(env: &Env, url: &str) -> Command {
    let mut c = env.command(&env.owner);
    c.env("REWRAP_ENDPOINT_URL", url).env_remove("REWRAP_HOME");
    c
}

fn aws(env: &Env, url: &str, args: &[&str]) -> serde_json::Value {
    let venv = std::env::var_os("REWRAP_TEST_VENV")
        .expect("REWRAP_TEST_VENV is not set: this test drives the AWS CLI (scripts/test sets it)");
    let bin = std::path::Path::new(&venv).join("bin");
    let out = Command::new(bin.join("aws"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("AWS_ACCESS_KEY_ID", &env.owner.id)
        .env("AWS_SECRET_ACCESS_KEY", &env.owner.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .args(["kms", "--endpoint-url", url])
        .args(args)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    json(&out)
}

#[test]
fn the_aws_cli_and_a_tree_rotation_use_an_hsm_key_through_the_server() {
    let env = Env::new();
    let hsm = SoftHsm::new("rewrap-serve");
    let mut serve = env.command(&env.owner);
    serve.env("SOFTHSM2_CONF", &hsm.conf);
    let server = support::cli::Server::from_command(serve, &[]);
    let url = server.url.clone();
    let cli = |args: &[&str]| json(&remote(&env, &url).args(args).output().unwrap());

    let store = cli(&[
        "create-custom-key-store",
        "--custom-key-store-name",
        "served",
        "--pkcs11-module-path",
        MODULE,
        "--token-label",
        &hsm.label,
        "--pin-source",
        &hsm.pin_source(),
    ])["CustomKeyStoreId"]
        .as_str()
        .unwrap()
        .to_string();
    cli(&["connect-custom-key-store", "--custom-key-store-id", &store]);
    let created = aws(
        &env,
        &url,
        &[
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            &store,
        ],
    );
    let hsm_key = created["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let described = aws(&env, &url, &["describe-key", "--key-id", &hsm_key]);
    assert_eq!(described["KeyMetadata"]["Origin"], "AWS_CLOUDHSM");
    assert_eq!(described["KeyMetadata"]["CustomKeyStoreId"], store.as_str());
    let file_key = aws(&env, &url, &["create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();

    std::fs::write(env.path("plain.txt"), b"through the AWS CLI").unwrap();
    let enc = aws(
        &env,
        &url,
        &[
            "encrypt",
            "--key-id",
            &hsm_key,
            "--plaintext",
            "fileb://plain.txt",
        ],
    );
    std::fs::write(
        env.path("hsm.enc"),
        b64(enc["CiphertextBlob"].as_str().unwrap()),
    )
    .unwrap();
    let re = aws(
        &env,
        &url,
        &[
            "re-encrypt",
            "--ciphertext-blob",
            "fileb://hsm.enc",
            "--destination-key-id",
            &file_key,
        ],
    );
    assert!(re["SourceKeyId"].as_str().unwrap().ends_with(&hsm_key));
    std::fs::write(
        env.path("file.enc"),
        b64(re["CiphertextBlob"].as_str().unwrap()),
    )
    .unwrap();
    for blob in ["fileb://hsm.enc", "fileb://file.enc"] {
        let dec = aws(&env, &url, &["decrypt", "--ciphertext-blob", blob]);
        assert_eq!(
            b64(dec["Plaintext"].as_str().unwrap()),
            b"through the AWS CLI"
        );
    }
    let dk = aws(
        &env,
        &url,
        &[
            "generate-data-key",
            "--key-id",
            &hsm_key,
            "--key-spec",
            "AES_256",
        ],
    );
    assert_eq!(b64(dk["Plaintext"].as_str().unwrap()).len(), 32);

    // An envelope tree: file key -> HSM key -> file key, through the server.
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = (0..12u8)
        .map(|i| {
            let dir = if i % 2 == 0 {
                tree.clone()
            } else {
                tree.join("sub")
            };
            (
                dir.join(format!("f{i}.bin")),
                vec![i; 1000 + usize::from(i) * 37],
            )
        })
        .collect();
    for (path, bytes) in &files {
        std::fs::write(path, bytes).unwrap();
    }
    let tree_arg = tree.to_str().unwrap();
    cli(&[
        "encrypt-file",
        "--key-id",
        &file_key,
        "--recursive",
        "--in-place",
        tree_arg,
    ]);
    for (to, count) in [(&hsm_key, 12), (&file_key, 12)] {
        let out = remote(&env, &url)
            .args(["rotate", "--to", to, "--no-progress", tree_arg])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|_| panic!("no JSON report: {} {}", stdout(&out), stderr(&out)));
        assert_eq!(out.status.code(), Some(0), "{report} {}", stderr(&out));
        assert_eq!(report["rotated"], count, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
    }
    // Under the HSM key once more, then read back through the server.
    remote(&env, &url)
        .args(["rotate", "--to", &hsm_key, "--no-progress", tree_arg])
        .output()
        .unwrap();
    let (path, bytes) = &files[3];
    let out = remote(&env, &url)
        .args(["decrypt-file", "-o", "-"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(&out.stdout, bytes);
    drop(server);
}

#[test]
fn a_keystore_sealed_by_a_token_key_reopens_in_new_processes() {
    let hsm = SoftHsm::new("rewrap-root");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("keystore");
    let uri = format!(
        "pkcs11:token={};object=rewrap-root?module-path={MODULE}&pin-source=file:{}",
        hsm.label,
        hsm.pin_file.display()
    );
    let v = json(&hsm.init_keystore(&home, &uri));
    assert!(
        !home.join("root.key").exists(),
        "a root key file was written"
    );
    assert_eq!(std::fs::read_to_string(home.join("root.uri")).unwrap(), uri);
    let env = Env {
        owner: support::cli::Creds {
            name: "owner".into(),
            id: v["AccessKeyId"].as_str().unwrap().into(),
            secret: v["SecretAccessKey"].as_str().unwrap().into(),
        },
        dir,
        home,
    };
    // Each command is a new process that unseals the keystore in the token.
    let key = ok(
        &env,
        &hsm,
        &["create-key", "--description", "under an HSM root"],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let enc = ok(
        &env,
        &hsm,
        &["encrypt", "--key-id", &key, "--plaintext", "sealed root"],
    );
    std::fs::write(
        env.path("c.enc"),
        b64(enc["CiphertextBlob"].as_str().unwrap()),
    )
    .unwrap();
    let blob = format!("fileb://{}", env.path("c.enc").display());
    let dec = ok(&env, &hsm, &["decrypt", "--ciphertext-blob", &blob]);
    assert_eq!(b64(dec["Plaintext"].as_str().unwrap()), b"sealed root");
    let listing = stdout(
        &hsm.tool()
            .args(["--list-objects", "--type", "secrkey"])
            .output()
            .unwrap(),
    );
    assert!(listing.contains("rewrap-root"), "{listing}");
    assert!(listing.contains("never extractable"), "{listing}");

    // Without the token (another, empty token folder) nothing opens.
    let other = SoftHsm::new("rewrap-root");
    let out = env
        .command(&env.owner)
        .env("SOFTHSM2_CONF", &other.conf)
        .args(["list-keys"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("the token has no key object labelled \"rewrap-root\""),
        "{}",
        stderr(&out)
    );
}

/// `tests/vectors/ciphertext_blob/07-hsm-key.json`: its key imported into a
/// token, SoftHSM2's `CKM_AES_GCM` opens the blob and seals the plaintext
/// to the same bytes, through rewrap's PKCS#11 layer.
#[test]
fn the_hsm_blob_vector_is_what_the_token_computes() {
    use rewrap::ciphertext_blob::{canonical_context, HEADER_LEN};
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::repo().join("tests/vectors/ciphertext_blob/07-hsm-key.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let hex = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    let hsm = SoftHsm::new("rewrap-vector");
    let key_file = hsm.dir.path().join("vector.key");
    write_private(&key_file, &hex("key_hex"));
    let out = hsm
        .tool()
        .arg("--write-object")
        .arg(&key_file)
        .args([
            "--type",
            "secrkey",
            "--key-type",
            "AES:32",
            "--label",
            "vector",
            "--usage-decrypt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // This process loads the module for this test only (the others run it
    // in child processes), with this token's configuration.
    let token = hsm.open_in_process();
    let blob = hex("blob_hex");
    let context: rewrap::api::EncryptionContext =
        serde_json::from_value(v["context"].clone()).unwrap();
    let mut aad = blob[..HEADER_LEN].to_vec();
    aad.extend_from_slice(&canonical_context(Some(&context)).unwrap());
    let iv: [u8; 12] = hex("nonce_hex").try_into().unwrap();
    let plain = token
        .decrypt_gcm("vector", iv, &aad, &blob[HEADER_LEN..])
        .unwrap();
    assert_eq!(plain.expose(), hex("plaintext_hex").as_slice());
    let sealed = token
        .encrypt_gcm("vector", iv, &aad, plain.expose())
        .unwrap();
    assert_eq!(sealed, &blob[HEADER_LEN..]);
    let mut bad = blob.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        token
            .decrypt_gcm("vector", iv, &aad, &bad[HEADER_LEN..])
            .unwrap_err()
            .kind(),
        "Authentication"
    );
    assert_eq!(
        token
            .encrypt_gcm("absent", iv, &aad, b"x")
            .unwrap_err()
            .kind(),
        "KeyNotFound"
    );
}

#[test]
fn a_module_off_the_allow_list_is_refused_before_it_is_loaded() {
    let env = Env::new();
    let hsm = SoftHsm::new("rewrap-allow");
    // The default list, as init writes it: SoftHSM2's Debian paths only.
    let config = std::fs::read_to_string(env.home.join("config.toml")).unwrap();
    let arch = std::env::consts::ARCH;
    assert!(
        config.contains(&format!(
            "[custom_key_stores]\nallowed_modules = [\"{MODULE}\", \"/usr/lib/{arch}-linux-gnu/softhsm/libsofthsm2.so\"]"
        )),
        "{config}"
    );
    let folder = env.path("modules");
    std::fs::create_dir(&folder).unwrap();
    // Never loaded: a library would fail differently than these refusals.
    let evil = folder.join("evil.so");
    std::fs::write(&evil, b"not a library").unwrap();
    let evil = evil.to_str().unwrap();
    let nothing_created = |env: &Env| {
        let all = ok(env, &hsm, &["describe-custom-key-stores"]);
        assert_eq!(all["CustomKeyStores"], serde_json::json!([]), "{all}");
    };

    let out = create_with_module(&env, &hsm, "evil", evil);
    assert_aws_error(&out, "ValidationException", "CreateCustomKeyStore");
    assert!(
        stderr(&out).ends_with(&format!(
            "{}\n",
            refused(&env, evil, "it is not in custom_key_stores.allowed_modules")
        )),
        "{}",
        stderr(&out)
    );
    let out = create_with_module(&env, &hsm, "relative", "libsofthsm2.so");
    assert_aws_error(&out, "ValidationException", "CreateCustomKeyStore");
    assert!(
        stderr(&out).contains(&refused(&env, "libsofthsm2.so", "the path is not absolute")),
        "{}",
        stderr(&out)
    );
    nothing_created(&env);
    // Each refusal is on record, with the module it named.
    let audit = env.audit_log();
    let refusals: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["outcome"] == "ValidationException")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit}");
    assert_eq!(refusals[0]["operation"], "CreateCustomKeyStore");
    assert!(refusals[0].to_string().contains(evil), "{}", refusals[0]);

    // A listed link to a file off the list; then that file group-writable,
    // owned by another user; then as it should be.
    let copy = folder.join("copy.so");
    std::fs::copy(MODULE, &copy).unwrap();
    let link = folder.join("link.so");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    let (copy, link) = (copy.to_str().unwrap(), link.to_str().unwrap());
    set_allowed_modules(&env, &[MODULE, link]);
    let out = create_with_module(&env, &hsm, "link", link);
    assert_aws_error(&out, "ValidationException", "CreateCustomKeyStore");
    let why = format!("it leads to {copy}, which is not in custom_key_stores.allowed_modules");
    assert!(
        stderr(&out).contains(&refused(&env, link, &why)),
        "{}",
        stderr(&out)
    );
    set_allowed_modules(&env, &[MODULE, link, copy]);
    let chmod = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(copy, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(0o664);
    let out = create_with_module(&env, &hsm, "link", link);
    assert_aws_error(&out, "ValidationException", "CreateCustomKeyStore");
    let why = format!("{copy} is group- or world-writable (mode 664)");
    assert!(
        stderr(&out).contains(&refused(&env, link, &why)),
        "{}",
        stderr(&out)
    );
    chmod(0o644);
    if std::os::unix::fs::chown(copy, Some(4242), None).is_ok() {
        let out = create_with_module(&env, &hsm, "link", link);
        assert_aws_error(&out, "ValidationException", "CreateCustomKeyStore");
        assert!(
            stderr(&out).contains(&format!("{copy} is owned by uid 4242, neither root nor")),
            "{}",
            stderr(&out)
        );
        std::os::unix::fs::chown(copy, Some(0), None).unwrap();
    }
    nothing_created(&env);
    let id = json(&create_with_module(&env, &hsm, "link", link))["CustomKeyStoreId"]
        .as_str()
        .unwrap()
        .to_string();
    store_op(&env, &hsm, "connect-custom-key-store", &id);
    assert_eq!(state(&env, &hsm, &id), "CONNECTED");
    store_op(&env, &hsm, "disconnect-custom-key-store", &id);

    // UpdateCustomKeyStore is held to the same list; nothing changes.
    let out = run(
        &env,
        &hsm,
        &[
            "update-custom-key-store",
            "--custom-key-store-id",
            &id,
            "--pkcs11-module-path",
            evil,
        ],
    );
    assert_aws_error(&out, "ValidationException", "UpdateCustomKeyStore");
    assert!(
        stderr(&out).contains(&refused(
            &env,
            evil,
            "it is not in custom_key_stores.allowed_modules"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(describe(&env, &hsm, &id)["Pkcs11ModulePath"], link);

    // A module taken off the list after the store was made is not loaded
    // when connecting.
    set_allowed_modules(&env, &[MODULE]);
    let out = run(
        &env,
        &hsm,
        &["connect-custom-key-store", "--custom-key-store-id", &id],
    );
    assert_aws_error(
        &out,
        "CustomKeyStoreInvalidStateException",
        "ConnectCustomKeyStore",
    );
    let d = describe(&env, &hsm, &id);
    assert_eq!(d["ConnectionState"], "FAILED");
    assert_eq!(d["ConnectionErrorCode"], "PKCS11_MODULE_NOT_ALLOWED");
    assert_eq!(
        d["ConnectionErrorMessage"],
        format!("PKCS#11 module {link} is refused: it is not in custom_key_stores.allowed_modules")
    );
}

/// How many key objects of `key` the token holds (by their labels).
fn token_objects(hsm: &SoftHsm, key: &str) -> usize {
    let out = hsm
        .tool()
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).matches(&format!("rewrap/{key}/v")).count()
}

/// `rewrap serve` on `env` with its clock `days` ahead; one CreateKey
/// through it (any keystore update purges the keys past their deletion date).
fn purge_through_server(env: &Env, hsm: &SoftHsm, days: &str) {
    let mut serve = env.command(&env.owner);
    serve.env("SOFTHSM2_CONF", &hsm.conf);
    let server = support::cli::Server::from_command(serve, &["--debug-clock-offset-days", days]);
    let out = remote(env, &server.url)
        .args(["create-key"])
        .output()
        .unwrap();
    json(&out);
    drop(server);
}

#[test]
fn a_deleted_hsm_key_leaves_no_object_in_the_token() {
    let (env, hsm, store) = connected();
    let a = hsm_key(&env, &hsm, &store)["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let b = hsm_key(&env, &hsm, &store)["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&env, &hsm, &["rotate-key-on-demand", "--key-id", &a]);
    assert_eq!((token_objects(&hsm, &a), token_objects(&hsm, &b)), (2, 1));

    // Connected: the purge destroys both versions' objects at once.
    ok(
        &env,
        &hsm,
        &[
            "schedule-key-deletion",
            "--key-id",
            &a,
            "--pending-window-in-days",
            "7",
        ],
    );
    assert_eq!(token_objects(&hsm, &a), 2, "destroyed before the purge");
    purge_through_server(&env, &hsm, "8");
    assert_eq!((token_objects(&hsm, &a), token_objects(&hsm, &b)), (0, 1));
    assert!(
        describe(&env, &hsm, &store)
            .get("TokenObjectsToDestroy")
            .is_none(),
        "{}",
        describe(&env, &hsm, &store)
    );

    // Disconnected: the object is listed, kept, and destroyed when the
    // store is next connected; until then the store cannot be deleted.
    ok(
        &env,
        &hsm,
        &[
            "schedule-key-deletion",
            "--key-id",
            &b,
            "--pending-window-in-days",
            "30",
        ],
    );
    ok(
        &env,
        &hsm,
        &[
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            &store,
        ],
    );
    purge_through_server(&env, &hsm, "31");
    let d = describe(&env, &hsm, &store);
    assert_eq!(d["TokenObjectsToDestroy"], 1, "{d}");
    assert_eq!(token_objects(&hsm, &b), 1);
    let out = run(
        &env,
        &hsm,
        &["delete-custom-key-store", "--custom-key-store-id", &store],
    );
    assert_aws_error(
        &out,
        "CustomKeyStoreInvalidStateException",
        "DeleteCustomKeyStore",
    );
    assert!(
        stderr(&out).contains(
            "1 token objects of deleted keys are still to be destroyed: connect it once first"
        ),
        "{}",
        stderr(&out)
    );
    store_op(&env, &hsm, "connect-custom-key-store", &store);
    assert_eq!(token_objects(&hsm, &b), 0);
    let d = describe(&env, &hsm, &store);
    assert!(d.get("TokenObjectsToDestroy").is_none(), "{d}");
    ok(
        &env,
        &hsm,
        &[
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            &store,
        ],
    );
    store_op(&env, &hsm, "delete-custom-key-store", &store);
}

/// A full token refuses a new key with `LimitExceededException` naming the
/// cause, leaves no half-made key behind, and its keys keep working. The
/// token's folder is a small tmpfs; SoftHSM2 answers `CKR_FUNCTION_FAILED`
/// when it cannot write the new object's file.
#[test]
fn a_full_token_refuses_a_new_key_and_keeps_the_old_ones() {
    let env = Env::new();
    let hsm = SoftHsm::new_on_small_disk("rewrap-full", 48 * 1024);
    let store = create_store(&env, &hsm, "small", &hsm.pin_source());
    store_op(&env, &hsm, "connect-custom-key-store", &store);
    let first = hsm_key(&env, &hsm, &store)["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let enc = ok(
        &env,
        &hsm,
        &["encrypt", "--key-id", &first, "--plaintext", "kept"],
    );
    let blob_path = env.path("kept.enc");
    std::fs::write(&blob_path, b64(enc["CiphertextBlob"].as_str().unwrap())).unwrap();
    let keys_before = |env: &Env| {
        ok(env, &hsm, &["list-keys"])["Keys"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut made = 1;
    let refused = loop {
        let before = keys_before(&env);
        let out = run(
            &env,
            &hsm,
            &[
                "create-key",
                "--origin",
                "AWS_CLOUDHSM",
                "--custom-key-store-id",
                &store,
            ],
        );
        if !out.status.success() {
            assert_eq!(keys_before(&env), before, "a refused CreateKey left a key");
            break out;
        }
        made += 1;
        assert!(made < 64, "a 48 KiB token never filled up");
    };
    assert!(made >= 2, "the token was full before its second key");
    assert_aws_error(&refused, "LimitExceededException", "CreateKey");
    assert!(
        stderr(&refused).contains("the token cannot store another key object (rewrap/")
            && stderr(&refused).contains("): it is full, or its storage failed"),
        "{}",
        stderr(&refused)
    );
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", blob_path.display()),
        ],
    );
    assert_eq!(b64(dec["Plaintext"].as_str().unwrap()), b"kept");
}

/// Automatic rotation of an HSM key (beyond AWS, which cannot rotate keys
/// in CloudHSM key stores): `rewrap serve`'s rotation task, 91 days on
/// (test-only clock), makes version 2 as a new token object, and a blob
/// of version 1 still decrypts.
#[test]
fn automatic_rotation_of_an_hsm_key_makes_a_token_object_per_version() {
    let (env, hsm, store) = connected();
    let key_id = hsm_key(&env, &hsm, &store)["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &env,
        &hsm,
        &[
            "enable-key-rotation",
            "--key-id",
            &key_id,
            "--rotation-period-in-days",
            "90",
        ],
    );
    let enc = ok(
        &env,
        &hsm,
        &["encrypt", "--key-id", &key_id, "--plaintext", "v1"],
    );
    let blob_path = env.path("v1.enc");
    std::fs::write(&blob_path, b64(enc["CiphertextBlob"].as_str().unwrap())).unwrap();
    let rotations = |env: &Env| {
        ok(env, &hsm, &["list-key-rotations", "--key-id", &key_id])["Rotations"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(rotations(&env).len(), 0);
    let mut serve = env.command(&env.owner);
    serve.env("SOFTHSM2_CONF", &hsm.conf);
    let server = support::cli::Server::from_command(
        serve,
        &[
            "--debug-clock-offset-days",
            "91",
            "--rotation-check-interval",
            "1",
        ],
    );
    let started = std::time::Instant::now();
    let found = loop {
        let r = rotations(&env);
        if !r.is_empty() || started.elapsed() > std::time::Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(server);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["RotationType"], "AUTOMATIC");
    let listing = stdout(
        &hsm.tool()
            .args(["--list-objects", "--type", "secrkey"])
            .output()
            .unwrap(),
    );
    for version in ["v1", "v2"] {
        let label = format!("rewrap/{key_id}/{version}");
        assert_eq!(listing.matches(&label).count(), 1, "{listing}");
    }
    let dec = ok(
        &env,
        &hsm,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", blob_path.display()),
        ],
    );
    assert_eq!(b64(dec["Plaintext"].as_str().unwrap()), b"v1");
}
