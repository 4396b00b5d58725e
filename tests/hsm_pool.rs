//! The PKCS#11 session pool on SoftHSM2, in process: a login lost under
//! the pool (a token reset) is replaced by one new, logged-in session and
//! the call that met it succeeds; operations use a session-object copy of
//! each key that is as sensitive and unextractable as the token object. The module is loaded by this test
//! binary itself, so it holds one test (a module is initialized once per
//! process, with one SOFTHSM2_CONF).

mod support;

use support::hsm::SoftHsm;

/// A login lost under the pool (the token's user logged out, as a token
/// reset does) is replaced once: the call that met it succeeds after one
/// re-login, and later calls need none.
#[test]
fn a_lost_login_is_replaced_once_and_the_call_succeeds() {
    let hsm = SoftHsm::new("rewrap-relogin");
    // The only test of this binary: the module is initialized once per
    // process, with this token's configuration.
    let token = hsm.open_in_process();
    token.generate_aes_key("relogin/k1").unwrap();
    let iv = [7u8; 12];
    let sealed = token
        .encrypt_gcm("relogin/k1", iv, b"aad", b"before the reset")
        .unwrap();
    assert_eq!(token.relogins(), 0);

    token.log_out().unwrap();
    assert_eq!(token.relogins(), 0);
    // A private token object needs a login: CKR_USER_NOT_LOGGED_IN, then
    // a new session logs in and the call is repeated.
    token.generate_aes_key("relogin/k2").unwrap();
    assert_eq!(token.relogins(), 1);
    let plain = token
        .decrypt_gcm("relogin/k1", iv, b"aad", &sealed)
        .unwrap();
    assert_eq!(plain.expose(), b"before the reset");
    assert!(token.has_key("relogin/k2").unwrap());
    assert_eq!(token.relogins(), 1);
    let listing = support::cli::stdout(
        &hsm.tool()
            .args(["--list-objects", "--type", "secrkey"])
            .output()
            .unwrap(),
    );
    assert_eq!(listing.matches("relogin/k").count(), 2, "{listing}");
    // In the same test: the module is initialized once per process.
    operations_use_an_unextractable_session_copy_of_the_key(&hsm, &token);
}

/// Operations use a session-object copy of the key: not a token object,
/// still sensitive and not extractable, its value unreadable. A copy the
/// module lost is made again; a destroyed key's copy goes with it.
fn operations_use_an_unextractable_session_copy_of_the_key(
    hsm: &SoftHsm,
    token: &rewrap::hsm::Token,
) {
    token.generate_aes_key("copies/k1").unwrap();
    let iv = [9u8; 12];
    let sealed = token
        .encrypt_gcm("copies/k1", iv, b"aad", b"under the copy")
        .unwrap();
    let working = token.working_object("copies/k1").unwrap();
    assert_eq!(
        working,
        rewrap::hsm::WorkingObject {
            is_copy: true,
            token: false,
            sensitive: true,
            extractable: false,
            value_readable: false,
        }
    );
    // The copy is gone (its session ended): the next call copies again.
    token.destroy_working_copy("copies/k1").unwrap();
    let plain = token.decrypt_gcm("copies/k1", iv, b"aad", &sealed).unwrap();
    assert_eq!(plain.expose(), b"under the copy");
    assert!(token.working_object("copies/k1").unwrap().is_copy);
    // The token holds the one token object; the copy is this session's.
    let listing = support::cli::stdout(
        &hsm.tool()
            .args(["--list-objects", "--type", "secrkey"])
            .output()
            .unwrap(),
    );
    assert_eq!(listing.matches("copies/k1").count(), 1, "{listing}");
    // Destroying the key destroys its copy: nothing decrypts under it.
    assert_eq!(token.destroy_key("copies/k1").unwrap(), 1);
    assert_eq!(
        token
            .decrypt_gcm("copies/k1", iv, b"aad", &sealed)
            .unwrap_err(),
        rewrap::hsm::HsmError::KeyNotFound("copies/k1".into())
    );
    assert!(!token.has_key("copies/k1").unwrap());
}
