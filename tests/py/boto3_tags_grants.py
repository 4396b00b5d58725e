"""Tags, DryRun and grants through boto3 against `rewrap serve`, with the
exact error codes and HTTP statuses (issue 15).

Driven by tests/kms_tags_grants.rs. Arguments come from the environment:
  REWRAP_URL                         the server's endpoint URL
  OWNER_KEY_ID / OWNER_SECRET        a principal allowed everything
  READER_KEY_ID / READER_SECRET      `app-reader` (decrypt under purpose=app-data only)
  GRANTEE_KEY_ID / GRANTEE_SECRET    `grantee-job`: no policy statement at all
  DENIED_KEY_ID / DENIED_SECRET      `grantee-denied`: an explicit deny of decrypt
Prints one line per check and `ALL CHECKS PASSED n` at the end; a failed
check raises, so the process exits non-zero with the reason.
"""

import os

import boto3
import botocore.config
from botocore.exceptions import ClientError

URL = os.environ["REWRAP_URL"]
CHECKS = 0


def client(who):
    return boto3.client(
        "kms",
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=os.environ[who + "_KEY_ID"],
        aws_secret_access_key=os.environ[who + "_SECRET"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def ok(name, cond, detail=""):
    global CHECKS
    if not cond:
        raise AssertionError(f"check failed: {name} {detail}")
    CHECKS += 1
    print(f"ok {name}")


def expect_error(name, code, fn, status=400, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        http = e.response["ResponseMetadata"]["HTTPStatusCode"]
        ok(name, (got, http) == (code, status), f"expected {code} {status}, got {got} {http}: {e}")
        return e.response["Error"]["Message"]
    raise AssertionError(f"check failed: {name}: expected {code}, the call succeeded")


owner = client("OWNER")
reader = client("READER")
grantee = client("GRANTEE")
denied = client("DENIED")
APP = {"purpose": "app-data"}

# ----- tags
key = owner.create_key(Description="tagged", Tags=[{"TagKey": "team", "TagValue": "hr"}])["KeyMetadata"]
k = key["KeyId"]
tags = owner.list_resource_tags(KeyId=k)
ok("create_key keeps its tags", tags["Tags"] == [{"TagKey": "team", "TagValue": "hr"}] and tags["Truncated"] is False, tags)
owner.tag_resource(KeyId=k, Tags=[{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "storage"}, {"TagKey": "note", "TagValue": ""}])
tags = owner.list_resource_tags(KeyId=key["Arn"])["Tags"]
ok("tag_resource adds and replaces", tags == [
    {"TagKey": "env", "TagValue": "prod"},
    {"TagKey": "note", "TagValue": ""},
    {"TagKey": "team", "TagValue": "storage"},
], tags)
page = owner.list_resource_tags(KeyId=k, Limit=2)
ok("list_resource_tags pages", page["Truncated"] is True and len(page["Tags"]) == 2, page)
rest = owner.list_resource_tags(KeyId=k, Limit=2, Marker=page["NextMarker"])
ok("list_resource_tags next page", rest["Tags"] == [{"TagKey": "team", "TagValue": "storage"}] and rest["Truncated"] is False, rest)
owner.untag_resource(KeyId=k, TagKeys=["env", "never-there"])
tags = owner.list_resource_tags(KeyId=k)["Tags"]
ok("untag_resource removes, ignores absent keys", [t["TagKey"] for t in tags] == ["note", "team"], tags)
expect_error("tag key with the reserved aws: prefix", "TagException", owner.tag_resource, KeyId=k, Tags=[{"TagKey": "AWS:owner", "TagValue": "x"}])
expect_error("tag key of 129 characters", "ValidationException", owner.tag_resource, KeyId=k, Tags=[{"TagKey": "k" * 129, "TagValue": "x"}])
expect_error("tag value of 257 characters", "ValidationException", owner.tag_resource, KeyId=k, Tags=[{"TagKey": "big", "TagValue": "v" * 257}])
expect_error("51 tags on one key", "TagException", owner.tag_resource, KeyId=k, Tags=[{"TagKey": f"t{i}", "TagValue": "x"} for i in range(49)])
ok("a refused TagResource changes nothing", len(owner.list_resource_tags(KeyId=k)["Tags"]) == 2)
expect_error("create_key with a reserved tag", "TagException", owner.create_key, Tags=[{"TagKey": "aws:x", "TagValue": "y"}])
expect_error("tag_resource without administer rights", "AccessDeniedException", reader.tag_resource, KeyId=k, Tags=[{"TagKey": "a", "TagValue": "b"}])
expect_error("list_resource_tags without rights", "AccessDeniedException", grantee.list_resource_tags, KeyId=k)
expect_error("untag_resource of an unknown key", "NotFoundException", owner.untag_resource, KeyId="11111111-2222-3333-4444-555555555555", TagKeys=["a"])

# ----- DryRun: authorization and key state checked, the key not used, HTTP 412
blob = owner.encrypt(KeyId=k, Plaintext=b"dry", EncryptionContext=APP)["CiphertextBlob"]
expect_error("encrypt DryRun", "DryRunOperationException", owner.encrypt, status=412, KeyId=k, Plaintext=b"x", DryRun=True)
expect_error("decrypt DryRun", "DryRunOperationException", owner.decrypt, status=412, CiphertextBlob=blob, EncryptionContext=APP, DryRun=True)
expect_error("re_encrypt DryRun", "DryRunOperationException", owner.re_encrypt, status=412, CiphertextBlob=blob, SourceEncryptionContext=APP, DestinationKeyId=k, DestinationEncryptionContext=APP, DryRun=True)
expect_error("generate_data_key DryRun", "DryRunOperationException", owner.generate_data_key, status=412, KeyId=k, KeySpec="AES_256", DryRun=True)
expect_error("generate_data_key_without_plaintext DryRun", "DryRunOperationException", owner.generate_data_key_without_plaintext, status=412, KeyId=k, NumberOfBytes=16, DryRun=True)
expect_error("DryRun of a reader's Decrypt under another context", "AccessDeniedException", reader.decrypt, CiphertextBlob=blob, EncryptionContext={"purpose": "other"}, DryRun=True)
expect_error("DryRun of a reader's Decrypt it may make", "DryRunOperationException", reader.decrypt, status=412, CiphertextBlob=blob, EncryptionContext=APP, DryRun=True)
expect_error("DryRun of an Encrypt the reader may not make", "AccessDeniedException", reader.encrypt, KeyId=k, Plaintext=b"x", DryRun=True)
off = owner.create_key(Description="disabled")["KeyMetadata"]["KeyId"]
owner.disable_key(KeyId=off)
expect_error("DryRun on a disabled key", "DisabledException", owner.encrypt, KeyId=off, Plaintext=b"x", DryRun=True)
ok("DryRun=False runs the operation", owner.encrypt(KeyId=k, Plaintext=b"x", DryRun=False)["KeyId"] == key["Arn"])

# ----- grants
expect_error("grantee without a grant", "AccessDeniedException", grantee.decrypt, CiphertextBlob=blob, EncryptionContext=APP)
g = owner.create_grant(
    KeyId=k,
    GranteePrincipal="grantee-job",
    RetiringPrincipal="grantee-job",
    Operations=["Decrypt", "DescribeKey"],
    Constraints={"EncryptionContextSubset": APP},
    Name="nightly-job",
)
ok("create_grant returns id and token", len(g["GrantId"]) == 64 and len(g["GrantToken"]) >= 32, g)
again = owner.create_grant(KeyId=k, GranteePrincipal="grantee-job", RetiringPrincipal="grantee-job", Operations=["Decrypt", "DescribeKey"], Constraints={"EncryptionContextSubset": APP}, Name="nightly-job")
ok("create_grant with the same Name is idempotent", again["GrantId"] == g["GrantId"] and again["GrantToken"] != g["GrantToken"], again)
plain = grantee.decrypt(CiphertextBlob=blob, EncryptionContext=APP, GrantTokens=[g["GrantToken"]])["Plaintext"]
ok("the grantee decrypts under the grant", plain == b"dry")
plain = grantee.decrypt(CiphertextBlob=blob, EncryptionContext=APP, GrantTokens=[again["GrantToken"], g["GrantToken"]])["Plaintext"]
ok("every token of the grant is valid at once", plain == b"dry")
expect_error("an unknown grant token", "InvalidGrantTokenException", owner.encrypt, KeyId=k, Plaintext=b"x", GrantTokens=["no-such-token"])
expect_error("one unknown token among valid ones", "InvalidGrantTokenException", grantee.decrypt, CiphertextBlob=blob, EncryptionContext=APP, GrantTokens=[g["GrantToken"], "A" * 64])
ok("the grantee describes the key under the grant", grantee.describe_key(KeyId=k)["KeyMetadata"]["KeyId"] == k)
other = owner.encrypt(KeyId=k, Plaintext=b"other", EncryptionContext={"purpose": "other"})["CiphertextBlob"]
expect_error("the grant's constraint holds", "AccessDeniedException", grantee.decrypt, CiphertextBlob=other, EncryptionContext={"purpose": "other"})
expect_error("the grant gives only its operations", "AccessDeniedException", grantee.encrypt, KeyId=k, Plaintext=b"x", EncryptionContext=APP)
expect_error("DryRun under the grant", "DryRunOperationException", grantee.decrypt, status=412, CiphertextBlob=blob, EncryptionContext=APP, DryRun=True)
listed = owner.list_grants(KeyId=k)["Grants"]
ok("list_grants", [(x["GrantId"], x["GranteePrincipal"], x["Operations"], x["Name"], x["KeyId"]) for x in listed]
   == [(g["GrantId"], "grantee-job", ["Decrypt", "DescribeKey"], "nightly-job", key["Arn"])], listed)
ok("list_grants shows constraints", listed[0]["Constraints"] == {"EncryptionContextSubset": APP}, listed)
ok("list_retirable_grants", [x["GrantId"] for x in owner.list_retirable_grants(RetiringPrincipal="grantee-job")["Grants"]] == [g["GrantId"]])
ok("list_grants by grantee", owner.list_grants(KeyId=k, GranteePrincipal="app-reader")["Grants"] == [])
expect_error("list_grants without rights", "AccessDeniedException", grantee.list_grants, KeyId=k)

# An explicit deny in a policy wins over a grant.
d = owner.create_grant(KeyId=k, GranteePrincipal="grantee-denied", Operations=["Decrypt"])
expect_error("explicit deny wins over a grant", "AccessDeniedException", denied.decrypt, CiphertextBlob=blob, EncryptionContext=APP)
owner.revoke_grant(KeyId=k, GrantId=d["GrantId"])
expect_error("a revoked grant's token", "InvalidGrantTokenException", owner.decrypt, CiphertextBlob=blob, EncryptionContext=APP, GrantTokens=[d["GrantToken"]])
expect_error("revoke a revoked grant", "NotFoundException", owner.revoke_grant, KeyId=k, GrantId=d["GrantId"])

# A grant with CreateGrant hands on no more than it holds.
p = owner.create_grant(KeyId=k, GranteePrincipal="grantee-job", Operations=["Decrypt", "CreateGrant"])
expect_error("a grant cannot hand on operations it lacks", "AccessDeniedException", grantee.create_grant, KeyId=k, GranteePrincipal="grantee-job", Operations=["Encrypt"])
child = grantee.create_grant(KeyId=k, GranteePrincipal="app-reader", Operations=["Decrypt"])
ok("a grant hands on its own operations", len(child["GrantId"]) == 64)
owner.revoke_grant(KeyId=k, GrantId=child["GrantId"])
owner.revoke_grant(KeyId=k, GrantId=p["GrantId"])

# Validation and errors of the grant operations.
expect_error("create_grant with an unknown operation", "ValidationException", owner.create_grant, KeyId=k, GranteePrincipal="grantee-job", Operations=["Frobnicate"])
expect_error("create_grant both constraints", "ValidationException", owner.create_grant, KeyId=k, GranteePrincipal="grantee-job", Operations=["Decrypt"], Constraints={"EncryptionContextSubset": APP, "EncryptionContextEquals": APP})
expect_error("create_grant to an unknown principal", "ValidationException", owner.create_grant, KeyId=k, GranteePrincipal="nobody-here", Operations=["Decrypt"])
expect_error("create_grant without rights", "AccessDeniedException", reader.create_grant, KeyId=k, GranteePrincipal="app-reader", Operations=["Encrypt"])
expect_error("create_grant DryRun", "DryRunOperationException", owner.create_grant, status=412, KeyId=k, GranteePrincipal="grantee-job", Operations=["Decrypt"], DryRun=True)
expect_error("revoke_grant with a malformed id", "InvalidGrantIdException", owner.revoke_grant, KeyId=k, GrantId="not-a-grant")
expect_error("revoke_grant of an unknown grant", "NotFoundException", owner.revoke_grant, KeyId=k, GrantId="0" * 64)
expect_error("retire_grant with an unknown token", "InvalidGrantTokenException", grantee.retire_grant, GrantToken="no-such-token")
expect_error("retire_grant by someone else", "AccessDeniedException", reader.retire_grant, GrantToken=g["GrantToken"])
ok("only the DryRun grant was not created", len(owner.list_grants(KeyId=k)["Grants"]) == 1)

# The retiring principal retires it; the grantee loses the right at once.
grantee.retire_grant(GrantToken=g["GrantToken"])
expect_error("after retire_grant the grantee is refused", "AccessDeniedException", grantee.decrypt, CiphertextBlob=blob, EncryptionContext=APP)
ok("no grants left", owner.list_grants(KeyId=k)["Grants"] == [])
expect_error("a retired grant's token", "InvalidGrantTokenException", grantee.decrypt, CiphertextBlob=blob, EncryptionContext=APP, GrantTokens=[g["GrantToken"]])
expect_error("a retired grant's token on DescribeKey", "InvalidGrantTokenException", owner.describe_key, KeyId=k, GrantTokens=[again["GrantToken"]])
expect_error("retire_grant twice", "InvalidGrantTokenException", grantee.retire_grant, GrantToken=g["GrantToken"])

print(f"ALL CHECKS PASSED {CHECKS}")
