"""Every KMS operation rewrap serves, through boto3, with the exact error codes.

Driven by tests/server_e2e.rs. Arguments come from the environment:
  REWRAP_URL                       the server's endpoint URL
  OWNER_KEY_ID / OWNER_SECRET      credentials of a principal allowed everything
  READER_KEY_ID / READER_SECRET    credentials of `app-reader` (decrypt only)
Prints one line per check and `ALL CHECKS PASSED n` at the end; any failed
check raises, so the process exits non-zero with the reason.
"""

import base64
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

URL = os.environ["REWRAP_URL"]
CHECKS = 0


def client(key_id, secret):
    return boto3.client(
        "kms",
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def ok(name, cond, detail=""):
    global CHECKS
    if not cond:
        raise AssertionError(f"check failed: {name} {detail}")
    CHECKS += 1
    print(f"ok {name}")


def expect_error(name, code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        ok(name, got == code, f"expected {code}, got {got}: {e}")
        return
    raise AssertionError(f"check failed: {name}: expected {code}, the call succeeded")


owner = client(os.environ["OWNER_KEY_ID"], os.environ["OWNER_SECRET"])
reader = client(os.environ["READER_KEY_ID"], os.environ["READER_SECRET"])

# Keys and metadata.
k1 = owner.create_key(Description="boto3 key one")["KeyMetadata"]
k2 = owner.create_key(Description="boto3 key two")["KeyMetadata"]
ok("create_key", k1["KeyState"] == "Enabled" and k1["Description"] == "boto3 key one")
ok("describe_key", owner.describe_key(KeyId=k1["KeyId"])["KeyMetadata"]["Arn"] == k1["Arn"])
owner.update_key_description(KeyId=k1["KeyId"], Description="boto3 key one, renamed")
ok("update_key_description", owner.describe_key(KeyId=k1["KeyId"])["KeyMetadata"]["Description"] == "boto3 key one, renamed")
expect_error("update_key_description by a reader", "AccessDeniedException", reader.update_key_description, KeyId=k1["KeyId"], Description="x")
ids = [k["KeyId"] for k in owner.list_keys()["Keys"]]
ok("list_keys", k1["KeyId"] in ids and k2["KeyId"] in ids)

# Aliases.
owner.create_alias(AliasName="alias/boto3-one", TargetKeyId=k1["KeyId"])
ok("create_alias", owner.describe_key(KeyId="alias/boto3-one")["KeyMetadata"]["KeyId"] == k1["KeyId"])
owner.update_alias(AliasName="alias/boto3-one", TargetKeyId=k2["KeyId"])
ok("update_alias", owner.describe_key(KeyId="alias/boto3-one")["KeyMetadata"]["KeyId"] == k2["KeyId"])
names = [a["AliasName"] for a in owner.list_aliases()["Aliases"]]
ok("list_aliases", "alias/boto3-one" in names)
owner.delete_alias(AliasName="alias/boto3-one")
expect_error("delete_alias", "NotFoundException", owner.describe_key, KeyId="alias/boto3-one")

# Cryptography.
ctx = {"purpose": "app-data"}
ct = owner.encrypt(KeyId=k1["KeyId"], Plaintext=b"top secret", EncryptionContext=ctx)["CiphertextBlob"]
pt = owner.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)
ok("encrypt/decrypt", pt["Plaintext"] == b"top secret" and pt["KeyId"] == k1["Arn"])
re = owner.re_encrypt(
    CiphertextBlob=ct,
    SourceEncryptionContext=ctx,
    DestinationKeyId=k2["KeyId"],
    DestinationEncryptionContext=ctx,
)
ok("re_encrypt", re["SourceKeyId"] == k1["Arn"] and re["KeyId"] == k2["Arn"])
ok("decrypt after re_encrypt", owner.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"top secret")
dk = owner.generate_data_key(KeyId=k1["KeyId"], KeySpec="AES_256")
ok("generate_data_key", len(dk["Plaintext"]) == 32)
ok("generate_data_key decrypts", owner.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"])
dkw = owner.generate_data_key_without_plaintext(KeyId=k1["KeyId"], NumberOfBytes=16)
ok("generate_data_key_without_plaintext", "Plaintext" not in dkw and len(owner.decrypt(CiphertextBlob=dkw["CiphertextBlob"])["Plaintext"]) == 16)
ok("generate_random", len(owner.generate_random(NumberOfBytes=48)["Plaintext"]) == 48)

# Rotation.
owner.enable_key_rotation(KeyId=k1["KeyId"])
ok("enable_key_rotation", owner.get_key_rotation_status(KeyId=k1["KeyId"])["KeyRotationEnabled"] is True)
owner.disable_key_rotation(KeyId=k1["KeyId"])
ok("disable_key_rotation", owner.get_key_rotation_status(KeyId=k1["KeyId"])["KeyRotationEnabled"] is False)
owner.rotate_key_on_demand(KeyId=k1["KeyId"])
rotations = owner.list_key_rotations(KeyId=k1["KeyId"])["Rotations"]
ok("rotate_key_on_demand/list_key_rotations", len(rotations) == 1 and rotations[0]["RotationType"] == "ON_DEMAND")
ok("decrypt after rotation", owner.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)["Plaintext"] == b"top secret")

# Policies.
ok("list_key_policies", owner.list_key_policies(KeyId=k1["KeyId"])["PolicyNames"] == ["default"])
ok("get_key_policy", "Statement" in owner.get_key_policy(KeyId=k1["KeyId"], PolicyName="default")["Policy"])

# Errors, each with the exact code boto3 raises.
expect_error("NotFoundException", "NotFoundException", owner.describe_key, KeyId="00000000-0000-0000-0000-000000000000")
tampered = bytearray(ct)
tampered[-1] ^= 1
expect_error("InvalidCiphertextException", "InvalidCiphertextException", owner.decrypt, CiphertextBlob=bytes(tampered), EncryptionContext=ctx)
expect_error("InvalidCiphertextException (context)", "InvalidCiphertextException", owner.decrypt, CiphertextBlob=ct, EncryptionContext={"purpose": "other"})
expect_error("IncorrectKeyException", "IncorrectKeyException", owner.decrypt, CiphertextBlob=ct, EncryptionContext=ctx, KeyId=k2["KeyId"])
expect_error("AccessDeniedException", "AccessDeniedException", reader.encrypt, KeyId=k1["KeyId"], Plaintext=b"x")
expect_error("AccessDeniedException (context)", "AccessDeniedException", reader.decrypt, CiphertextBlob=ct, EncryptionContext={"purpose": "other"})
ok("reader decrypts its context", reader.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)["Plaintext"] == b"top secret")
expect_error("ValidationException (plaintext 4097)", "ValidationException", owner.encrypt, KeyId=k1["KeyId"], Plaintext=b"x" * 4097)
ok("plaintext 4096 accepted", len(owner.encrypt(KeyId=k1["KeyId"], Plaintext=b"x" * 4096)["CiphertextBlob"]) > 4096)
expect_error("ValidationException (ciphertext 6145)", "ValidationException", owner.decrypt, CiphertextBlob=b"x" * 6145)
expect_error("LimitExceededException (11 grant tokens)", "LimitExceededException", owner.encrypt, KeyId=k1["KeyId"], Plaintext=b"x", GrantTokens=["t"] * 11)
expect_error("ValidationException (random 1025)", "ValidationException", owner.generate_random, NumberOfBytes=1025)
owner.disable_key(KeyId=k2["KeyId"])
expect_error("DisabledException", "DisabledException", owner.encrypt, KeyId=k2["KeyId"], Plaintext=b"x")
owner.enable_key(KeyId=k2["KeyId"])
ok("enable_key", owner.describe_key(KeyId=k2["KeyId"])["KeyMetadata"]["Enabled"] is True)
sched = owner.schedule_key_deletion(KeyId=k2["KeyId"], PendingWindowInDays=7)
ok("schedule_key_deletion", sched["KeyState"] == "PendingDeletion" and sched["PendingWindowInDays"] == 7)
expect_error("KMSInvalidStateException", "KMSInvalidStateException", owner.encrypt, KeyId=k2["KeyId"], Plaintext=b"x")
owner.cancel_key_deletion(KeyId=k2["KeyId"])
ok("cancel_key_deletion", owner.describe_key(KeyId=k2["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled")
expect_error("AlreadyExistsException", "AlreadyExistsException", lambda: [owner.create_alias(AliasName="alias/dup", TargetKeyId=k1["KeyId"]) for _ in range(2)])

# Authentication, refused before anything runs.
expect_error("InvalidSignatureException", "InvalidSignatureException", client(os.environ["OWNER_KEY_ID"], "wrong-secret").list_keys)
expect_error("UnrecognizedClientException", "UnrecognizedClientException", client("AKIDNOTAKEY", "x").list_keys)

print(f"ALL CHECKS PASSED {CHECKS}")
sys.stdout.flush()
