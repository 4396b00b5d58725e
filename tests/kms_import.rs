//! Imported key material (issue 13): the AWS CLI's documented import steps
//! verbatim against `rewrap serve`, the errors AWS gives, and the expiry
//! of imported material and of import tokens (in process, with the
//! service's test clock).

mod support;

use aws_lc_rs::rsa;
use rewrap::api::*;
use rewrap::error::ErrorCode;
use rewrap::kms::Kms;
use rewrap::secret::Secret;
use support::cli::{stderr, stdout, Env};

/// The AWS CLI user guide's steps, then the lifecycle around them.
#[test]
fn aws_cli_documented_import_steps_work_verbatim() {
    let env = Env::new();
    let served = env.serve();
    let script = r#"
KEY=$(aws kms create-key $E --origin EXTERNAL --query KeyMetadata.KeyId --output text)
echo "state $(aws kms describe-key $E --key-id $KEY --query KeyMetadata.KeyState --output text)"
set +e
aws kms encrypt $E --key-id $KEY --plaintext hello 2> pending.err
echo "encrypt while pending exit $?"
set -e
grep -o KMSInvalidStateException pending.err

# The documented steps.
aws kms get-parameters-for-import $E --key-id $KEY --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_2048 > params.json
python -c "import json,base64,sys; p=json.load(open('params.json')); open('WrappingPublicKey.bin','wb').write(base64.b64decode(p['PublicKey'])); open('ImportToken.bin','wb').write(base64.b64decode(p['ImportToken']))"
openssl rand -out PlaintextKeyMaterial.bin 32
openssl pkeyutl -encrypt -in PlaintextKeyMaterial.bin -out EncryptedKeyMaterial.bin -inkey WrappingPublicKey.bin -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
aws kms import-key-material $E --key-id $KEY --encrypted-key-material fileb://EncryptedKeyMaterial.bin --import-token fileb://ImportToken.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE

aws kms describe-key $E --key-id $KEY --query '[KeyMetadata.KeyState, KeyMetadata.Origin, KeyMetadata.ExpirationModel]' --output text
printf 'bring your own key' > plain.txt
aws kms encrypt $E --key-id $KEY --plaintext fileb://plain.txt --query CiphertextBlob --output text | base64 --decode > plain.enc
aws kms decrypt $E --ciphertext-blob fileb://plain.enc --query Plaintext --output text | base64 --decode > plain.out
cmp plain.txt plain.out

# Delete the material: the key waits for an import, its ciphertexts wait with it.
aws kms delete-imported-key-material $E --key-id $KEY
echo "state $(aws kms describe-key $E --key-id $KEY --query KeyMetadata.KeyState --output text)"
set +e
aws kms decrypt $E --ciphertext-blob fileb://plain.enc 2> deleted.err
echo "decrypt after delete exit $?"
set -e
grep -o KMSInvalidStateException deleted.err

# Other material is refused; the same material brings the ciphertexts back.
aws kms get-parameters-for-import $E --key-id $KEY --wrapping-algorithm RSAES_OAEP_SHA_1 --wrapping-key-spec RSA_3072 > params2.json
python -c "import json,base64,sys; p=json.load(open('params2.json')); open('WrappingPublicKey2.bin','wb').write(base64.b64decode(p['PublicKey'])); open('ImportToken2.bin','wb').write(base64.b64decode(p['ImportToken']))"
openssl rand -out Other.bin 32
openssl pkeyutl -encrypt -in Other.bin -out OtherEncrypted.bin -inkey WrappingPublicKey2.bin -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1
set +e
aws kms import-key-material $E --key-id $KEY --encrypted-key-material fileb://OtherEncrypted.bin --import-token fileb://ImportToken2.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE 2> other.err
echo "other material exit $?"
aws kms import-key-material $E --key-id $KEY --encrypted-key-material fileb://OtherEncrypted.bin --import-token fileb://ImportToken.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE 2> token.err
echo "old token exit $?"
set -e
grep -o IncorrectKeyMaterialException other.err
grep -o InvalidImportTokenException token.err
openssl pkeyutl -encrypt -in PlaintextKeyMaterial.bin -out Again.bin -inkey WrappingPublicKey2.bin -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1
aws kms import-key-material $E --key-id $KEY --encrypted-key-material fileb://Again.bin --import-token fileb://ImportToken2.bin --valid-to 2099-01-01T00:00:00Z
aws kms describe-key $E --key-id $KEY --query '[KeyMetadata.KeyState, KeyMetadata.ExpirationModel]' --output text
aws kms decrypt $E --ciphertext-blob fileb://plain.enc --query Plaintext --output text | base64 --decode > plain.again
cmp plain.txt plain.again

# Keys AWS made have no material to import.
OWN=$(aws kms create-key $E --query KeyMetadata.KeyId --output text)
set +e
aws kms get-parameters-for-import $E --key-id $OWN --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_2048 2> own.err
echo "own key exit $?"
aws kms rotate-key-on-demand $E --key-id $KEY 2> rotate.err
echo "rotate imported exit $?"
set -e
grep -o UnsupportedOperationException own.err
grep -o UnsupportedOperationException rotate.err
"#;
    let out = env.aws_script(&served, &env.owner, script);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the import steps failed:\nstdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert_eq!(
        text,
        "state PendingImport\n\
         encrypt while pending exit 255\n\
         KMSInvalidStateException\n\
         Enabled\tEXTERNAL\tKEY_MATERIAL_DOES_NOT_EXPIRE\n\
         state PendingImport\n\
         decrypt after delete exit 255\n\
         KMSInvalidStateException\n\
         other material exit 255\n\
         old token exit 255\n\
         IncorrectKeyMaterialException\n\
         InvalidImportTokenException\n\
         Enabled\tKEY_MATERIAL_EXPIRES\n\
         own key exit 255\n\
         rotate imported exit 255\n\
         UnsupportedOperationException\n\
         UnsupportedOperationException\n"
    );
}

/// Wraps `material` under GetParametersForImport's public key, as the
/// importer does offline (RSAES_OAEP_SHA_256).
fn wrap(public_key: &[u8], material: &[u8]) -> Vec<u8> {
    let key = rsa::PublicEncryptingKey::from_der(public_key).unwrap();
    let key = rsa::OaepPublicEncryptingKey::new(key).unwrap();
    let mut out = vec![0; key.ciphertext_size()];
    let n = key
        .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, material, &mut out, None)
        .unwrap()
        .len();
    out.truncate(n);
    out
}

#[test]
fn imported_material_and_import_tokens_expire() {
    let env = support::library::Env::new();
    let kms = &env.owner;
    let key = kms
        .create_key(&CreateKeyRequest {
            origin: Some("EXTERNAL".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    let params = |kms: &rewrap::service::LocalSession| {
        kms.get_parameters_for_import(&GetParametersForImportRequest {
            key_id: key.clone(),
            wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
            wrapping_key_spec: "RSA_2048".into(),
        })
        .unwrap()
    };
    let material = [7u8; 32];
    let p = params(kms);
    let day = 86_400.0;
    let now = p.parameters_valid_to - day;
    let import =
        |p: &GetParametersForImportResponse, valid_to: Option<f64>, model: Option<&str>| {
            kms.import_key_material(&ImportKeyMaterialRequest {
                key_id: key.clone(),
                import_token: p.import_token.clone(),
                encrypted_key_material: CiphertextBlob(wrap(&p.public_key.0, &material)),
                valid_to,
                expiration_model: model.map(str::to_string),
            })
        };
    let code = |r: rewrap::error::Result<Empty>| r.unwrap_err().code;
    assert_eq!(code(import(&p, None, None)), ErrorCode::Validation);
    assert_eq!(
        code(import(
            &p,
            Some(now + day),
            Some("KEY_MATERIAL_DOES_NOT_EXPIRE")
        )),
        ErrorCode::Validation
    );
    assert_eq!(
        code(import(&p, Some(now - 10.0), None)),
        ErrorCode::Validation
    );
    // Material valid for one day.
    import(&p, Some(now + day), None).unwrap();
    let encrypt = || {
        kms.encrypt(&EncryptRequest {
            key_id: key.clone(),
            plaintext: Secret::from_slice(b"x"),
            ..Default::default()
        })
    };
    let blob = encrypt().unwrap().ciphertext_blob;
    let describe = || {
        kms.describe_key(&KeyIdRequest {
            key_id: key.clone(),
            grant_tokens: None,
        })
        .unwrap()
        .key_metadata
    };
    assert_eq!(describe().key_state, "Enabled");
    assert_eq!(describe().extra.valid_to, Some(now + day));
    // Two days later the material has expired: PendingImport, nothing decrypts.
    env.service.set_clock_offset_days(2);
    assert_eq!(describe().key_state, "PendingImport");
    assert_eq!(encrypt().unwrap_err().code, ErrorCode::InvalidState);
    let decrypt = || {
        kms.decrypt(&DecryptRequest {
            ciphertext_blob: blob.clone(),
            ..Default::default()
        })
    };
    assert_eq!(decrypt().unwrap_err().code, ErrorCode::InvalidState);
    // The token of two days ago has expired too.
    assert_eq!(
        code(import(&p, None, Some("KEY_MATERIAL_DOES_NOT_EXPIRE"))),
        ErrorCode::ExpiredImportToken
    );
    // A fresh token and the same material bring the key back.
    let p2 = params(kms);
    import(&p2, None, Some("KEY_MATERIAL_DOES_NOT_EXPIRE")).unwrap();
    assert_eq!(describe().key_state, "Enabled");
    assert_eq!(decrypt().unwrap().plaintext.expose(), b"x");
    // Material that is not 32 bytes is refused.
    let short = kms.import_key_material(&ImportKeyMaterialRequest {
        key_id: key.clone(),
        import_token: p2.import_token.clone(),
        encrypted_key_material: CiphertextBlob(wrap(&p2.public_key.0, &[7u8; 16])),
        valid_to: None,
        expiration_model: Some("KEY_MATERIAL_DOES_NOT_EXPIRE".into()),
    });
    assert_eq!(short.unwrap_err().code, ErrorCode::IncorrectKeyMaterial);
}
