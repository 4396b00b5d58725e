#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/seed-*) from the test
vectors and shipped files. Run from the repository root; idempotent."""
import glob, json, os, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"

def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)

HEADER_FIXED = 48
SLOT = 1024
for p in sorted(glob.glob(str(root / "tests/vectors/envelope/*.json"))):
    v = json.load(open(p))
    name = pathlib.Path(p).stem
    env = bytes.fromhex(v["envelope_hex"])
    put("envelope_header", name, env)
    if len(env) >= HEADER_FIXED and env[:8] == b"\x89RWP\r\n\x1a\n":
        ctx = int.from_bytes(env[44:48], "big")
        h = HEADER_FIXED + ctx + 32
        put("key_object", name, env[: h + 2 * SLOT])
        # Vectors with chunk 64 and no context share the stream target's
        # header and key, so their bodies open there.
        put("stream_body", name, env[h + 2 * SLOT:])

for p in sorted(glob.glob(str(root / "tests/vectors/ciphertext_blob/*.json"))):
    v = json.load(open(p))
    put("ciphertext_blob", pathlib.Path(p).stem, bytes.fromhex(v.get("blob_hex", "")))

for p in sorted(glob.glob(str(root / "tests/vectors/sigv4/*.txt"))):
    fields, headers = {}, []
    for line in open(p).read().splitlines():
        k, _, val = line.partition(": ")
        if k == "header":
            headers.append(val)
        else:
            fields[k] = val
    name = pathlib.Path(p).stem
    auth = (f"AWS4-HMAC-SHA256 Credential={fields['access-key']}/{fields.get('date', '20150830')}/"
            f"{fields['region']}/{fields['service']}/aws4_request, "
            f"SignedHeaders={fields['signed-headers']}, Signature={fields['signature']}")
    put("sigv4_authorization", name, auth)
    target = fields["path"] + ("?" + fields["query"] if fields.get("query") else "")
    head = [target] + [h.replace(":", ": ", 1) for h in headers] + [f"authorization: {auth}"]
    put("sigv4_request", name, "\n".join(head) + "\n\n" + fields.get("body", ""))

ops = ["{}",
       '{"KeyId":"alias/app-data","Plaintext":"aGVsbG8="}',
       '{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001","KeySpec":"AES_256","EncryptionContext":{"purpose":"app-data"}}',
       '{"CiphertextBlob":"AQA=","EncryptionContext":{"a":"b"},"GrantTokens":[]}',
       '{"Description":"d","KeyUsage":"ENCRYPT_DECRYPT","Tags":[{"TagKey":"k","TagValue":"v"}]}',
       '{"Limit":10,"Marker":"m"}']
for i in range(40):
    for j, body in enumerate(ops):
        if (i + j) % 3 == 0:
            put("kms_request", f"op{i}-{j}", bytes([i]) + body.encode())

for p in sorted(glob.glob(str(root / "policies/*.toml"))):
    put("policy_file", pathlib.Path(p).stem, open(p, "rb").read())

put("checkpoint", "mid-pass", json.dumps({
    "format": 1, "location": "s3://bucket/prefix", "shard": "0/4",
    "last_key": "prefix/a/b.rwp", "objects": 1234, "complete": False,
    "updated_at": "2026-01-01T00:00:00Z"}))
put("checkpoint", "complete", json.dumps({
    "format": 1, "location": "file:///data", "objects": 0, "complete": True,
    "updated_at": "2026-01-01T00:00:00Z"}))

# audit_line seeds (seed-one-record, seed-three-records, seed-torn) are
# lines of a real audit log written by `rewrap init` / `create-key` /
# `list-keys` / a failed `describe-key`; they are kept as files, not
# generated here.

# Closed audit segments: each vector's whole file (magic first), and the
# body of the valid one (which the entry point compresses).
for p in sorted(glob.glob(str(root / "tests/vectors/audit_segment/*.json"))):
    v = json.load(open(p))
    name = pathlib.Path(p).stem
    put("audit_segment", name, bytes.fromhex(v["segment_hex"]))
    if "body" in v:
        put("audit_segment", name + "-body", v["body"])

# SOPS files the real sops 3.11 wrote, and the same with CRLF line ends.
for p in sorted(glob.glob(str(root / "tests/vectors/sops/*"))):
    name = pathlib.Path(p).name.replace(".", "-")
    data = pathlib.Path(p).read_bytes()
    put("sops_file", name, data)
    put("sops_file", name + "-crlf", data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

# x-rewrap-object header values: as the client encodes them (paths, object
# URLs, non-ASCII and escaped control characters), and malformed ones.
for name, value in [
    ("path", "/srv/conf/db.enc.yaml"),
    ("url", "s3://bucket/conf/0.enc.json"),
    ("non-ascii", "/data/b%20%C3%A4.txt"),
    ("escaped-control", "tree/c\\u{a}d.txt"),
    ("lowercase-hex", "a%2fb%c3%a4"),
    ("truncated-escape", "a%4"),
    ("bad-escape", "a%zz"),
    ("control", "a%0Ab"),
    ("not-utf8", "%FF%FE"),
    ("empty", ""),
    ("long", "/d" + "%41" * 1400),
]:
    put("object_header", name, value)
