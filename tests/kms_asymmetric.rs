//! Asymmetric and HMAC keys (issue 15) through `rewrap serve`: boto3 walks
//! every new operation's success and error cases against a table of exact
//! AWS error codes; the AWS CLI and `openssl` check interoperability
//! (rewrap's signatures verify with `openssl`, `openssl`-encrypted data
//! decrypts through rewrap, a data key wrapped offline under a downloaded
//! public key is re-wrapped under a symmetric key).

mod support;

use std::collections::BTreeMap;
use support::cli::{stderr, stdout, Env};

/// boto3 calls; prints `{case: "OK" | AWS error code | value}` as JSON.
const BOTO3_CASES: &str = r#"
import base64, hashlib, json, os
import boto3
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

kms = boto3.client("kms", endpoint_url=os.environ["REWRAP_URL"])
out = {}

def run(name, fn, **kw):
    try:
        r = fn(**kw)
        out[name] = "OK"
        return r
    except ClientError as e:
        out[name] = e.response["Error"]["Code"]
        return None

def key(spec, usage):
    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]

# CreateKey: AWS's KeySpec / KeyUsage validation.
run("create ECC_NIST_P256 ENCRYPT_DECRYPT", kms.create_key, KeySpec="ECC_NIST_P256", KeyUsage="ENCRYPT_DECRYPT")
run("create HMAC_256 default usage", kms.create_key, KeySpec="HMAC_256")
run("create RSA_2048 GENERATE_VERIFY_MAC", kms.create_key, KeySpec="RSA_2048", KeyUsage="GENERATE_VERIFY_MAC")
run("create SYMMETRIC_DEFAULT SIGN_VERIFY", kms.create_key, KeySpec="SYMMETRIC_DEFAULT", KeyUsage="SIGN_VERIFY")
run("create RSA_1024", kms.create_key, KeySpec="RSA_1024", KeyUsage="SIGN_VERIFY")
run("create usage FOO", kms.create_key, KeyUsage="FOO")
run("create RSA_2048 EXTERNAL", kms.create_key, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT", Origin="EXTERNAL")
run("create both specs", kms.create_key, KeySpec="RSA_2048", CustomerMasterKeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")

keys = {
    "rsa": key("RSA_2048", "SIGN_VERIFY"),
    "p256": key("ECC_NIST_P256", "SIGN_VERIFY"),
    "p384": key("ECC_NIST_P384", "SIGN_VERIFY"),
    "p521": key("ECC_NIST_P521", "SIGN_VERIFY"),
    "k1": key("ECC_SECG_P256K1", "SIGN_VERIFY"),
    "rsa_enc": key("RSA_2048", "ENCRYPT_DECRYPT"),
    "hmac": key("HMAC_256", "GENERATE_VERIFY_MAC"),
    "hmac512": key("HMAC_512", "GENERATE_VERIFY_MAC"),
    "sym": kms.create_key()["KeyMetadata"]["KeyId"],
}

def describe(k):
    m = kms.describe_key(KeyId=keys[k])["KeyMetadata"]
    return [m["KeySpec"], m["KeyUsage"], m.get("SigningAlgorithms"), m.get("EncryptionAlgorithms"), m.get("MacAlgorithms")]
for k in ["rsa", "p521", "k1", "rsa_enc", "hmac", "sym"]:
    out["describe " + k] = describe(k)

# Sign and Verify, RAW and DIGEST, every algorithm of every spec.
message = b"rewrap signs this"
pairs = [("rsa", a) for a in ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
          "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"]]
pairs += [("p256", "ECDSA_SHA_256"), ("p384", "ECDSA_SHA_384"), ("p521", "ECDSA_SHA_512"), ("k1", "ECDSA_SHA_256")]
hashers = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
for k, alg in pairs:
    for mtype in ["RAW", "DIGEST"]:
        m = message if mtype == "RAW" else hashers[alg[-3:]](message).digest()
        name = f"{k} {alg} {mtype}"
        r = run("sign " + name, kms.sign, KeyId=keys[k], Message=m, MessageType=mtype, SigningAlgorithm=alg)
        sig = r["Signature"] if r else b"x"
        v = run("verify " + name, kms.verify, KeyId=keys[k], Message=m, MessageType=mtype, Signature=sig, SigningAlgorithm=alg)
        if v:
            out["verify " + name] = v["SignatureValid"]
        other = b"another message" if mtype == "RAW" else hashers[alg[-3:]](b"another").digest()
        run("verify other message " + name, kms.verify, KeyId=keys[k], Message=other, MessageType=mtype, Signature=sig, SigningAlgorithm=alg)

# A RAW signature is one of SHA-256(message), and verifies where the
# public key is all there is (cryptography, outside rewrap).
sig = kms.sign(KeyId=keys["p256"], Message=message, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
pub = serialization.load_der_public_key(kms.get_public_key(KeyId=keys["p256"])["PublicKey"])
from cryptography.hazmat.primitives.asymmetric import ec
pub.verify(sig, message, ec.ECDSA(hashes.SHA256()))
out["p256 signature verifies offline"] = True

run("sign digest of wrong length", kms.sign, KeyId=keys["p256"], Message=b"0" * 31, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
run("sign 4097 bytes", kms.sign, KeyId=keys["p256"], Message=b"0" * 4097, SigningAlgorithm="ECDSA_SHA_256")
run("sign 4096 bytes", kms.sign, KeyId=keys["p256"], Message=b"0" * 4096, SigningAlgorithm="ECDSA_SHA_256")
run("sign p256 with ECDSA_SHA_384", kms.sign, KeyId=keys["p256"], Message=message, SigningAlgorithm="ECDSA_SHA_384")
run("sign rsa with ECDSA_SHA_256", kms.sign, KeyId=keys["rsa"], Message=message, SigningAlgorithm="ECDSA_SHA_256")
run("sign unknown algorithm", kms.sign, KeyId=keys["rsa"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_1")
run("sign unknown message type", kms.sign, KeyId=keys["rsa"], Message=message, MessageType="HASH", SigningAlgorithm="RSASSA_PSS_SHA_256")
run("sign with symmetric key", kms.sign, KeyId=keys["sym"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_256")
run("sign with RSA encryption key", kms.sign, KeyId=keys["rsa_enc"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_256")
run("sign with HMAC key", kms.sign, KeyId=keys["hmac"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_256")
run("sign with unknown key", kms.sign, KeyId="11111111-2222-3333-4444-555555555555", Message=message, SigningAlgorithm="ECDSA_SHA_256")
bad = bytearray(kms.sign(KeyId=keys["rsa"], Message=message, SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"])
bad[10] ^= 1
run("verify tampered signature", kms.verify, KeyId=keys["rsa"], Message=message, Signature=bytes(bad), SigningAlgorithm="RSASSA_PSS_SHA_256")

# GetPublicKey.
r = run("get-public-key rsa", kms.get_public_key, KeyId=keys["rsa"])
out["get-public-key rsa fields"] = [r["KeySpec"], r["KeyUsage"], len(r["SigningAlgorithms"]), "EncryptionAlgorithms" in r,
                                    serialization.load_der_public_key(r["PublicKey"]).key_size]
r = run("get-public-key rsa_enc", kms.get_public_key, KeyId=keys["rsa_enc"])
out["get-public-key rsa_enc algorithms"] = r["EncryptionAlgorithms"]
r = run("get-public-key k1", kms.get_public_key, KeyId=keys["k1"])
out["get-public-key k1 curve"] = serialization.load_der_public_key(r["PublicKey"]).curve.name
run("get-public-key symmetric", kms.get_public_key, KeyId=keys["sym"])
run("get-public-key hmac", kms.get_public_key, KeyId=keys["hmac"])

# GenerateMac and VerifyMac.
r = run("generate-mac", kms.generate_mac, KeyId=keys["hmac"], Message=message, MacAlgorithm="HMAC_SHA_256")
out["mac length"] = len(r["Mac"])
v = run("verify-mac", kms.verify_mac, KeyId=keys["hmac"], Message=message, MacAlgorithm="HMAC_SHA_256", Mac=r["Mac"])
out["verify-mac valid"] = v["MacValid"]
run("verify-mac other message", kms.verify_mac, KeyId=keys["hmac"], Message=b"other", MacAlgorithm="HMAC_SHA_256", Mac=r["Mac"])
r512 = kms.generate_mac(KeyId=keys["hmac512"], Message=message, MacAlgorithm="HMAC_SHA_512")
out["mac512 length"] = len(r512["Mac"])
run("generate-mac wrong algorithm for key", kms.generate_mac, KeyId=keys["hmac"], Message=message, MacAlgorithm="HMAC_SHA_384")
run("generate-mac unknown algorithm", kms.generate_mac, KeyId=keys["hmac"], Message=message, MacAlgorithm="HMAC_MD5")
run("generate-mac symmetric key", kms.generate_mac, KeyId=keys["sym"], Message=message, MacAlgorithm="HMAC_SHA_256")
run("generate-mac 4097 bytes", kms.generate_mac, KeyId=keys["hmac"], Message=b"0" * 4097, MacAlgorithm="HMAC_SHA_256")

# RSA encryption: AWS's plaintext limits for RSA_2048.
for alg, limit in [("RSAES_OAEP_SHA_256", 190), ("RSAES_OAEP_SHA_1", 214)]:
    r = run(f"encrypt {alg} {limit} bytes", kms.encrypt, KeyId=keys["rsa_enc"], Plaintext=b"p" * limit, EncryptionAlgorithm=alg)
    out[f"encrypt {alg} ciphertext length"] = len(r["CiphertextBlob"])
    d = run(f"decrypt {alg}", kms.decrypt, KeyId=keys["rsa_enc"], CiphertextBlob=r["CiphertextBlob"], EncryptionAlgorithm=alg)
    out[f"decrypt {alg} round trip"] = d["Plaintext"] == b"p" * limit and d["EncryptionAlgorithm"] == alg
    run(f"encrypt {alg} {limit + 1} bytes", kms.encrypt, KeyId=keys["rsa_enc"], Plaintext=b"p" * (limit + 1), EncryptionAlgorithm=alg)
ct = kms.encrypt(KeyId=keys["rsa_enc"], Plaintext=b"secret", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
run("decrypt RSA without KeyId", kms.decrypt, CiphertextBlob=ct, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
run("decrypt RSA with the other OAEP hash", kms.decrypt, KeyId=keys["rsa_enc"], CiphertextBlob=ct, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
run("decrypt RSA garbage", kms.decrypt, KeyId=keys["rsa_enc"], CiphertextBlob=b"\x01" * 256, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
run("encrypt RSA with context", kms.encrypt, KeyId=keys["rsa_enc"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256", EncryptionContext={"a": "b"})
run("encrypt RSA signing key", kms.encrypt, KeyId=keys["rsa"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
run("encrypt symmetric key with RSAES", kms.encrypt, KeyId=keys["sym"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
run("encrypt RSA key without algorithm", kms.encrypt, KeyId=keys["rsa_enc"], Plaintext=b"x")
run("encrypt ECC key", kms.encrypt, KeyId=keys["p256"], Plaintext=b"x")
run("encrypt HMAC key", kms.encrypt, KeyId=keys["hmac"], Plaintext=b"x")
run("generate-data-key RSA key", kms.generate_data_key, KeyId=keys["rsa_enc"], KeySpec="AES_256")
run("re-encrypt to RSA key", kms.re_encrypt, CiphertextBlob=kms.encrypt(KeyId=keys["sym"], Plaintext=b"x")["CiphertextBlob"], DestinationKeyId=keys["rsa_enc"])

# Rotation does not apply to asymmetric and HMAC keys.
run("enable-key-rotation rsa", kms.enable_key_rotation, KeyId=keys["rsa"])
run("rotate-key-on-demand hmac", kms.rotate_key_on_demand, KeyId=keys["hmac"])
run("rotate-key-on-demand symmetric", kms.rotate_key_on_demand, KeyId=keys["sym"])

# GenerateDataKeyPair(WithoutPlaintext).
r = run("generate-data-key-pair ECC_NIST_P256", kms.generate_data_key_pair, KeyId=keys["sym"], KeyPairSpec="ECC_NIST_P256",
        EncryptionContext={"purpose": "device"})
priv = serialization.load_der_private_key(r["PrivateKeyPlaintext"], None)
pub = priv.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
d = kms.decrypt(CiphertextBlob=r["PrivateKeyCiphertextBlob"], EncryptionContext={"purpose": "device"})
out["data key pair consistent"] = [pub == r["PublicKey"], d["Plaintext"] == r["PrivateKeyPlaintext"], r["KeyPairSpec"], priv.curve.name]
r = run("generate-data-key-pair-without-plaintext RSA_2048", kms.generate_data_key_pair_without_plaintext, KeyId=keys["sym"], KeyPairSpec="RSA_2048")
out["without plaintext fields"] = sorted(k for k in r if k != "ResponseMetadata")
out["without plaintext public key size"] = serialization.load_der_public_key(r["PublicKey"]).key_size
run("generate-data-key-pair under RSA key", kms.generate_data_key_pair, KeyId=keys["rsa_enc"], KeyPairSpec="ECC_NIST_P256")
run("generate-data-key-pair HMAC_256 spec", kms.generate_data_key_pair, KeyId=keys["sym"], KeyPairSpec="HMAC_256")

# ReEncrypt from RSA-OAEP (a data key wrapped offline under the public key)
# to a symmetric key.
pub = serialization.load_der_public_key(kms.get_public_key(KeyId=keys["rsa_enc"])["PublicKey"])
data_key = os.urandom(32)
wrapped = pub.encrypt(data_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
r = run("re-encrypt from RSA", kms.re_encrypt, CiphertextBlob=wrapped, SourceKeyId=keys["rsa_enc"],
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=keys["sym"], DestinationEncryptionContext={"k": "v"})
d = kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext={"k": "v"})
out["re-encrypt from RSA"] = [d["Plaintext"] == data_key, r["SourceEncryptionAlgorithm"], r["DestinationEncryptionAlgorithm"]]
run("re-encrypt from RSA without SourceKeyId", kms.re_encrypt, CiphertextBlob=wrapped,
    SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=keys["sym"])
run("re-encrypt from RSA to RSA", kms.re_encrypt, CiphertextBlob=wrapped, SourceKeyId=keys["rsa_enc"],
    SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=keys["rsa_enc"])

# A disabled key signs nothing.
kms.disable_key(KeyId=keys["k1"])
run("sign with disabled key", kms.sign, KeyId=keys["k1"], Message=message, SigningAlgorithm="ECDSA_SHA_256")
print(json.dumps(out))
"#;

fn expected() -> BTreeMap<String, serde_json::Value> {
    use serde_json::json;
    let v = "ValidationException";
    let usage = "InvalidKeyUsageException";
    let unsupported = "UnsupportedOperationException";
    let rsa_sign = [
        "RSASSA_PSS_SHA_256",
        "RSASSA_PSS_SHA_384",
        "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256",
        "RSASSA_PKCS1_V1_5_SHA_384",
        "RSASSA_PKCS1_V1_5_SHA_512",
    ];
    let mut want: BTreeMap<String, serde_json::Value> = [
        ("create ECC_NIST_P256 ENCRYPT_DECRYPT", json!(v)),
        ("create HMAC_256 default usage", json!(v)),
        ("create RSA_2048 GENERATE_VERIFY_MAC", json!(v)),
        ("create SYMMETRIC_DEFAULT SIGN_VERIFY", json!(v)),
        ("create RSA_1024", json!(v)),
        ("create usage FOO", json!(v)),
        ("create RSA_2048 EXTERNAL", json!(unsupported)),
        ("create both specs", json!(v)),
        (
            "describe rsa",
            json!(["RSA_2048", "SIGN_VERIFY", rsa_sign, null, null]),
        ),
        (
            "describe p521",
            json!([
                "ECC_NIST_P521",
                "SIGN_VERIFY",
                ["ECDSA_SHA_512"],
                null,
                null
            ]),
        ),
        (
            "describe k1",
            json!([
                "ECC_SECG_P256K1",
                "SIGN_VERIFY",
                ["ECDSA_SHA_256"],
                null,
                null
            ]),
        ),
        (
            "describe rsa_enc",
            json!([
                "RSA_2048",
                "ENCRYPT_DECRYPT",
                null,
                ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
                null
            ]),
        ),
        (
            "describe hmac",
            json!([
                "HMAC_256",
                "GENERATE_VERIFY_MAC",
                null,
                null,
                ["HMAC_SHA_256"]
            ]),
        ),
        (
            "describe sym",
            json!([
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                null,
                ["SYMMETRIC_DEFAULT"],
                null
            ]),
        ),
        ("p256 signature verifies offline", json!(true)),
        ("sign digest of wrong length", json!(v)),
        ("sign 4097 bytes", json!(v)),
        ("sign 4096 bytes", json!("OK")),
        ("sign p256 with ECDSA_SHA_384", json!(usage)),
        ("sign rsa with ECDSA_SHA_256", json!(usage)),
        ("sign unknown algorithm", json!(v)),
        ("sign unknown message type", json!(v)),
        ("sign with symmetric key", json!(usage)),
        ("sign with RSA encryption key", json!(usage)),
        ("sign with HMAC key", json!(usage)),
        ("sign with unknown key", json!("NotFoundException")),
        (
            "verify tampered signature",
            json!("KMSInvalidSignatureException"),
        ),
        ("get-public-key rsa", json!("OK")),
        (
            "get-public-key rsa fields",
            json!(["RSA_2048", "SIGN_VERIFY", 6, false, 2048]),
        ),
        ("get-public-key rsa_enc", json!("OK")),
        (
            "get-public-key rsa_enc algorithms",
            json!(["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]),
        ),
        ("get-public-key k1", json!("OK")),
        ("get-public-key k1 curve", json!("secp256k1")),
        ("get-public-key symmetric", json!(unsupported)),
        ("get-public-key hmac", json!(unsupported)),
        ("generate-mac", json!("OK")),
        ("mac length", json!(32)),
        ("verify-mac", json!("OK")),
        ("verify-mac valid", json!(true)),
        ("verify-mac other message", json!("KMSInvalidMacException")),
        ("mac512 length", json!(64)),
        ("generate-mac wrong algorithm for key", json!(usage)),
        ("generate-mac unknown algorithm", json!(v)),
        ("generate-mac symmetric key", json!(usage)),
        ("generate-mac 4097 bytes", json!(v)),
        ("decrypt RSA without KeyId", json!(v)),
        (
            "decrypt RSA with the other OAEP hash",
            json!("InvalidCiphertextException"),
        ),
        ("decrypt RSA garbage", json!("InvalidCiphertextException")),
        ("encrypt RSA with context", json!(v)),
        ("encrypt RSA signing key", json!(usage)),
        ("encrypt symmetric key with RSAES", json!(usage)),
        ("encrypt RSA key without algorithm", json!(usage)),
        ("encrypt ECC key", json!(usage)),
        ("encrypt HMAC key", json!(usage)),
        ("generate-data-key RSA key", json!(usage)),
        ("re-encrypt to RSA key", json!(usage)),
        ("enable-key-rotation rsa", json!(unsupported)),
        ("rotate-key-on-demand hmac", json!(unsupported)),
        ("rotate-key-on-demand symmetric", json!("OK")),
        ("generate-data-key-pair ECC_NIST_P256", json!("OK")),
        (
            "data key pair consistent",
            json!([true, true, "ECC_NIST_P256", "secp256r1"]),
        ),
        (
            "generate-data-key-pair-without-plaintext RSA_2048",
            json!("OK"),
        ),
        (
            "without plaintext fields",
            json!([
                "KeyId",
                "KeyPairSpec",
                "PrivateKeyCiphertextBlob",
                "PublicKey"
            ]),
        ),
        ("without plaintext public key size", json!(2048)),
        ("generate-data-key-pair under RSA key", json!(usage)),
        ("generate-data-key-pair HMAC_256 spec", json!(v)),
        ("re-encrypt from RSA without SourceKeyId", json!(v)),
        ("re-encrypt from RSA to RSA", json!(usage)),
        ("sign with disabled key", json!("DisabledException")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    want.insert(
        "re-encrypt from RSA".into(),
        json!([true, "RSAES_OAEP_SHA_256", "SYMMETRIC_DEFAULT"]),
    );
    for (alg, limit) in [("RSAES_OAEP_SHA_256", 190), ("RSAES_OAEP_SHA_1", 214)] {
        want.insert(format!("encrypt {alg} {limit} bytes"), json!("OK"));
        want.insert(format!("encrypt {alg} ciphertext length"), json!(256));
        want.insert(format!("decrypt {alg}"), json!("OK"));
        want.insert(format!("decrypt {alg} round trip"), json!(true));
        want.insert(format!("encrypt {alg} {} bytes", limit + 1), json!(v));
    }
    let pairs = rsa_sign.iter().map(|a| ("rsa", *a)).chain([
        ("p256", "ECDSA_SHA_256"),
        ("p384", "ECDSA_SHA_384"),
        ("p521", "ECDSA_SHA_512"),
        ("k1", "ECDSA_SHA_256"),
    ]);
    for (key, alg) in pairs {
        for mtype in ["RAW", "DIGEST"] {
            let name = format!("{key} {alg} {mtype}");
            want.insert(format!("sign {name}"), json!("OK"));
            want.insert(format!("verify {name}"), json!(true));
            want.insert(
                format!("verify other message {name}"),
                json!("KMSInvalidSignatureException"),
            );
        }
    }
    want
}

#[test]
fn boto3_exercises_every_asymmetric_and_hmac_operation_with_exact_errors() {
    let env = Env::new();
    let served = env.serve();
    let script = format!("python - <<'PY'\n{BOTO3_CASES}\nPY\n");
    let out = env.aws_script(&served, &env.owner, &script);
    assert!(
        out.status.success(),
        "boto3 cases failed:\n{}",
        stderr(&out)
    );
    let got: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(stdout(&out).trim()).expect("the cases print JSON");
    let want = expected();
    let differ: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    assert_eq!(differ, Vec::<String>::new());
}

/// The interop checks with the AWS CLI and `openssl`, verbatim as a user
/// would type them but for `$E` (the endpoint).
#[test]
fn openssl_verifies_rewrap_signatures_and_rewrap_decrypts_openssl_ciphertexts() {
    let env = Env::new();
    let served = env.serve();
    let script = r#"
K=$(aws kms create-key $E --key-spec RSA_2048 --key-usage SIGN_VERIFY --query KeyMetadata.KeyId --output text)
aws kms get-public-key $E --key-id $K --query PublicKey --output text | base64 --decode > rsa.der
openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem
printf 'release 1.2.3' > msg.txt
aws kms sign $E --key-id $K --message fileb://msg.txt --message-type RAW --signing-algorithm RSASSA_PSS_SHA_256 --query Signature --output text | base64 --decode > pss.sig
openssl dgst -sha256 -verify rsa.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -signature pss.sig msg.txt
aws kms sign $E --key-id $K --message fileb://msg.txt --signing-algorithm RSASSA_PKCS1_V1_5_SHA_512 --query Signature --output text | base64 --decode > pkcs1.sig
openssl dgst -sha512 -verify rsa.pem -signature pkcs1.sig msg.txt
openssl dgst -sha256 -binary msg.txt > msg.sha256
aws kms sign $E --key-id $K --message fileb://msg.sha256 --message-type DIGEST --signing-algorithm RSASSA_PKCS1_V1_5_SHA_256 --query Signature --output text | base64 --decode > digest.sig
openssl pkeyutl -verify -pubin -inkey rsa.der -keyform DER -in msg.sha256 -sigfile digest.sig -pkeyopt digest:sha256

P=$(aws kms create-key $E --key-spec ECC_NIST_P384 --key-usage SIGN_VERIFY --query KeyMetadata.KeyId --output text)
aws kms get-public-key $E --key-id $P --query PublicKey --output text | base64 --decode > p384.der
openssl pkey -pubin -inform DER -in p384.der -out p384.pem
aws kms sign $E --key-id $P --message fileb://msg.txt --signing-algorithm ECDSA_SHA_384 --query Signature --output text | base64 --decode > ec.sig
openssl dgst -sha384 -verify p384.pem -signature ec.sig msg.txt
printf 'release 1.2.4' > other.txt
if openssl dgst -sha384 -verify p384.pem -signature ec.sig other.txt; then echo "a signature verified another message"; exit 1; fi

R=$(aws kms create-key $E --key-spec RSA_3072 --key-usage ENCRYPT_DECRYPT --query KeyMetadata.KeyId --output text)
aws kms get-public-key $E --key-id $R --query PublicKey --output text | base64 --decode > enc.der
printf 'offline secret' > secret.txt
openssl pkeyutl -encrypt -in secret.txt -out secret.enc -inkey enc.der -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
aws kms decrypt $E --key-id $R --ciphertext-blob fileb://secret.enc --encryption-algorithm RSAES_OAEP_SHA_256 --query Plaintext --output text | base64 --decode > secret.out
cmp secret.txt secret.out

# A data key wrapped offline re-wraps under a symmetric key (the rotator's path).
S=$(aws kms create-key $E --query KeyMetadata.KeyId --output text)
openssl rand -out datakey.bin 32
openssl pkeyutl -encrypt -in datakey.bin -out datakey.rsa -inkey enc.der -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
aws kms re-encrypt $E --ciphertext-blob fileb://datakey.rsa --source-key-id $R --source-encryption-algorithm RSAES_OAEP_SHA_256 --destination-key-id $S --query CiphertextBlob --output text | base64 --decode > datakey.kms
aws kms decrypt $E --ciphertext-blob fileb://datakey.kms --query Plaintext --output text | base64 --decode > datakey.out
cmp datakey.bin datakey.out

# KMSInvalidSignatureException through the AWS CLI (v1 exits 255 on a service error).
set +e
aws kms verify $E --key-id $K --message fileb://other.txt --signature fileb://pss.sig --signing-algorithm RSASSA_PSS_SHA_256 2> verify.err
echo "verify exit $?"
grep -o 'KMSInvalidSignatureException' verify.err
"#;
    let out = env.aws_script(&served, &env.owner, script);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the interop script failed:\nstdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert_eq!(
        text.matches("Verified OK").count()
            + text.matches("Signature Verified Successfully").count(),
        4,
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("verification failure"),
        "{text}"
    );
    assert!(
        text.ends_with("verify exit 255\nKMSInvalidSignatureException\n"),
        "{text}"
    );
}

/// The rewrap CLI itself: the new commands and their exit codes (254 for a
/// KMS error, 252 for bad arguments).
#[test]
fn rewrap_cli_signs_verifies_and_macs() {
    let env = Env::new();
    let key = env.ok(
        &env.owner,
        &[
            "create-key",
            "--key-spec",
            "ECC_NIST_P256",
            "--key-usage",
            "SIGN_VERIFY",
        ],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let signed = env.ok(
        &env.owner,
        &[
            "sign",
            "--key-id",
            &key,
            "--message",
            "hello",
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signed["Signature"].as_str().unwrap())
        .unwrap();
    support::cli::write(&env.path("hello.sig"), &sig);
    let sig_arg = format!("fileb://{}", env.path("hello.sig").display());
    let verified = env.ok(
        &env.owner,
        &[
            "verify",
            "--key-id",
            &key,
            "--message",
            "hello",
            "--signature",
            &sig_arg,
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    assert_eq!(verified["SignatureValid"], true);
    let refused = env.run(
        &env.owner,
        &[
            "verify",
            "--key-id",
            &key,
            "--message",
            "hellO",
            "--signature",
            &sig_arg,
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    support::cli::assert_aws_error(&refused, "KMSInvalidSignatureException", "Verify");
    let usage = env.run(&env.owner, &["sign", "--key-id", &key, "--message", "x"]);
    assert_eq!(usage.status.code(), Some(252), "{}", stderr(&usage));

    let hmac = env.ok(
        &env.owner,
        &[
            "create-key",
            "--key-spec",
            "HMAC_384",
            "--key-usage",
            "GENERATE_VERIFY_MAC",
        ],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = env.ok(
        &env.owner,
        &[
            "generate-mac",
            "--key-id",
            &hmac,
            "--message",
            "user=42",
            "--mac-algorithm",
            "HMAC_SHA_384",
        ],
    );
    let mac = base64::engine::general_purpose::STANDARD
        .decode(mac["Mac"].as_str().unwrap())
        .unwrap();
    assert_eq!(mac.len(), 48);
    support::cli::write(&env.path("tag.mac"), &mac);
    let mac_arg = format!("fileb://{}", env.path("tag.mac").display());
    let bad = env.run(
        &env.owner,
        &[
            "verify-mac",
            "--key-id",
            &hmac,
            "--message",
            "user=43",
            "--mac-algorithm",
            "HMAC_SHA_384",
            "--mac",
            &mac_arg,
        ],
    );
    support::cli::assert_aws_error(&bad, "KMSInvalidMacException", "VerifyMac");
    let log = env.audit_log();
    assert!(
        log.contains("\"VerifyMac\""),
        "the audit trail records VerifyMac"
    );
}

/// The policy groups (item 2 of issue 15's part B): `sign` allows Sign,
/// Verify, the MAC operations and GetPublicKey and nothing else; `encrypt`
/// allows GetPublicKey and the data key pairs but not Sign.
#[test]
fn sign_and_encrypt_groups_hold_exactly_their_actions() {
    use rewrap::api::*;
    use rewrap::error::ErrorCode;
    use rewrap::kms::Kms;
    use rewrap::secret::Secret;
    let env = support::library::Env::new();
    std::fs::write(
        env.home.join("policies").join("groups.toml"),
        r#"
[[statement]]
sid = "signer"
effect = "allow"
principals = ["signer"]
actions = ["sign"]
resources = ["*"]

[[statement]]
sid = "writer"
effect = "allow"
principals = ["writer"]
actions = ["encrypt"]
resources = ["*"]
"#,
    )
    .unwrap();
    env.service.reload_policies().unwrap();
    let create = |spec: &str, usage: &str| {
        env.owner
            .create_key(&CreateKeyRequest {
                key_spec: Some(spec.into()),
                key_usage: Some(usage.into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .key_id
    };
    let ec = create("ECC_NIST_P256", "SIGN_VERIFY");
    let mac = create("HMAC_224", "GENERATE_VERIFY_MAC");
    let sym = create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
    let signer = env.principal("signer");
    let writer = env.principal("writer");
    let sign = |who: &rewrap::service::LocalSession| {
        who.sign(&SignRequest {
            key_id: ec.clone(),
            message: Secret::from_slice(b"m"),
            signing_algorithm: "ECDSA_SHA_256".into(),
            ..Default::default()
        })
        .map(|_| ())
    };
    let code = |r: rewrap::error::Result<()>| r.err().map(|e| e.code);
    let public = |who: &rewrap::service::LocalSession| {
        who.get_public_key(&KeyIdRequest {
            key_id: ec.clone(),
            grant_tokens: None,
        })
        .map(|_| ())
    };
    let pair = |who: &rewrap::service::LocalSession| {
        who.generate_data_key_pair(&GenerateDataKeyPairRequest {
            key_id: sym.clone(),
            key_pair_spec: "ECC_NIST_P256".into(),
            ..Default::default()
        })
        .map(|_| ())
    };
    let hmac = |who: &rewrap::service::LocalSession| {
        who.generate_mac(&GenerateMacRequest {
            key_id: mac.clone(),
            message: Secret::from_slice(b"m"),
            mac_algorithm: "HMAC_SHA_224".into(),
            grant_tokens: None,
        })
        .map(|_| ())
    };
    let decrypt = |who: &rewrap::service::LocalSession| {
        let blob = env
            .owner
            .encrypt(&EncryptRequest {
                key_id: sym.clone(),
                plaintext: Secret::from_slice(b"p"),
                ..Default::default()
            })
            .unwrap()
            .ciphertext_blob;
        who.decrypt(&DecryptRequest {
            ciphertext_blob: blob,
            ..Default::default()
        })
        .map(|_| ())
    };
    let denied = Some(ErrorCode::AccessDenied);
    assert_eq!(
        [sign(&signer), public(&signer), hmac(&signer)].map(code),
        [None, None, None]
    );
    assert_eq!(
        [pair(&signer), decrypt(&signer)].map(code),
        [denied, denied]
    );
    assert_eq!([public(&writer), pair(&writer)].map(code), [None, None]);
    assert_eq!(
        [sign(&writer), hmac(&writer), decrypt(&writer)].map(code),
        [denied, denied, denied]
    );
}

/// Writes envelopes of `bodies` into a fresh folder `name`, each data key
/// wrapped offline under `public_der` (the RSA key `rsa_arn`), as an
/// application holding only the downloaded public key would.
fn offline_envelopes(
    env: &Env,
    name: &str,
    public_der: &[u8],
    rsa_arn: &str,
    bodies: &[(&str, rewrap::envelope::SlotWrapping)],
) -> std::path::PathBuf {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = rewrap::files::EncryptOptions::new(rsa_arn);
    opts.context = [("purpose".to_string(), "app-data".to_string())].into();
    for (i, (body, wrapping)) in bodies.iter().enumerate() {
        let mut out = Vec::new();
        rewrap::files::encrypt_stream_offline(
            public_der,
            *wrapping,
            &opts,
            &mut body.as_bytes(),
            &mut out,
        )
        .unwrap();
        std::fs::write(dir.join(format!("f{i}.rwp")), out).unwrap();
    }
    dir
}

/// The active slot of the envelope at `path`.
fn active_slot(path: &std::path::Path) -> rewrap::envelope::Slot {
    let bytes = std::fs::read(path).unwrap();
    let parsed = rewrap::envelope::ParsedHeader::read_from(&mut &bytes[..]).unwrap();
    parsed.slots.active().unwrap().1.clone()
}

#[test]
fn an_envelope_wrapped_offline_under_an_rsa_public_key_rotates_like_any_other() {
    use base64::Engine;
    use rewrap::envelope::SlotWrapping;
    let env = Env::new();
    let o = &env.owner;
    let rotator = env.principal("storage-rotator");
    let rsa = env.ok(
        o,
        &[
            "create-key",
            "--key-spec",
            "RSA_2048",
            "--key-usage",
            "ENCRYPT_DECRYPT",
        ],
    )["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let target = env.key("target");
    let target_arn = env.ok(o, &["describe-key", "--key-id", &target])["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let public = base64::engine::general_purpose::STANDARD
        .decode(
            env.ok(o, &["get-public-key", "--key-id", &rsa])["PublicKey"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let bodies = [
        ("offline body one", SlotWrapping::RsaOaepSha256),
        ("offline body two", SlotWrapping::RsaOaepSha1),
    ];
    let local = offline_envelopes(&env, "local", &public, &rsa, &bodies);
    let remote = offline_envelopes(&env, "remote", &public, &rsa, &bodies);
    let slot = active_slot(&local.join("f0.rwp"));
    assert_eq!(
        (slot.wrapping, slot.key_arn.as_str()),
        (SlotWrapping::RsaOaepSha256, rsa.as_str())
    );
    assert_eq!(slot.wrapped_key.len(), 256);
    // Before rotation, the envelope opens through Decrypt on the RSA key.
    let out = env.run(
        o,
        &[
            "decrypt-file",
            local.join("f1.rwp").to_str().unwrap(),
            "-o",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"offline body two");
    // The storage rotator re-wraps them, locally and through `rewrap serve`;
    // each run's report (exit 0).
    let rotate = |dir: &std::path::Path, url: Option<&str>| {
        let mut cmd = env.command(&rotator);
        if let Some(url) = url {
            cmd.args(["--endpoint-url", url]);
        }
        let out = cmd
            .args(["rotate", "--to", &target, "--no-progress"])
            .arg(dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let server = env.serve();
    for report in [rotate(&local, None), rotate(&remote, Some(&server.url))] {
        assert_eq!(
            (report["rotated"].as_u64(), report["failed"].as_u64()),
            (Some(2), Some(0)),
            "{report}"
        );
    }
    // Afterwards each slot is an ordinary one under the target, and the
    // envelope decrypts to the bytes written.
    for dir in [&local, &remote] {
        for (i, (body, _)) in bodies.iter().enumerate() {
            let path = dir.join(format!("f{i}.rwp"));
            let slot = active_slot(&path);
            assert_eq!(
                (slot.wrapping, slot.key_arn.as_str(), slot.sequence),
                (SlotWrapping::Kms, target_arn.as_str(), 2)
            );
            let out = env.run(o, &["decrypt-file", path.to_str().unwrap(), "-o", "-"]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(out.stdout, body.as_bytes());
        }
    }
    // A second run finds them current.
    let report = rotate(&local, None);
    assert_eq!(report["already_current"].as_u64(), Some(2), "{report}");
}
