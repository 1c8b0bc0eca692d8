"""boto3 against keyplane's AWS KMS front: every action keyplane serves, and each error AWS
clients name, from a real trigger. Run by host/tests/aws_kms.rs with the environment of
tests/common/aws.rs (credentials of a tenant admin, the endpoint, the CA bundle) and:

  ACCOUNT         the tenant's account id
  MEMBER_KEY      "<id>:<secret>" of an access key of a member of the tenant (no grants)
  APPROVER_TOKEN  a bearer token of a second admin (approves deletions on the native API)

Prints one line per check; any failure raises (non-zero exit)."""

import base64
import datetime
import json
import os
import ssl
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ENDPOINT = os.environ["KEYPLANE_ENDPOINT"]
CA = os.environ["AWS_CA_BUNDLE"]
ACCOUNT = os.environ["ACCOUNT"]
REGION = os.environ["AWS_DEFAULT_REGION"]

# No retries: an error must come back as it was answered, once.
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client("kms", config=NO_RETRY)
raw = boto3.client(
    "kms", config=Config(parameter_validation=False, retries={"max_attempts": 1})
)


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def error_of(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", ""), e
    raise AssertionError(f"{call.__name__} did not fail")


def expect_error(name, code, call, *args, **kwargs):
    got, message, e = error_of(call, *args, **kwargs)
    check(name, got == code, f"expected {code}, got {got}: {message}")
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    check(f"{name} (status)", status == 400, f"status {status}")
    return message


def native(op, token, body):
    ctx = ssl.create_default_context(cafile=CA)
    req = urllib.request.Request(
        f"{ENDPOINT}/v1/{op}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.loads(r.read())


def arn(key_id):
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


# --- identity -----------------------------------------------------------------------------
me = boto3.client("sts", config=NO_RETRY).get_caller_identity()
check("sts get-caller-identity account", me["Account"] == ACCOUNT, me)
check("sts get-caller-identity arn", me["Arn"].startswith(f"arn:aws:iam::{ACCOUNT}:user/"), me)

# --- keys ---------------------------------------------------------------------------------
created = kms.create_key(Description="boto3 key", Tags=[{"TagKey": "team", "TagValue": "a"}])
meta = created["KeyMetadata"]
key = meta["KeyId"]
check("create-key arn", meta["Arn"] == arn(key), meta)
check("create-key account", meta["AWSAccountId"] == ACCOUNT, meta)
check("create-key spec", meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyUsage"] == "ENCRYPT_DECRYPT", meta)
check("create-key state", meta["KeyState"] == "Enabled" and meta["Enabled"] is True, meta)
check("create-key creation date", isinstance(meta["CreationDate"], datetime.datetime), meta)

for key_id in [key, arn(key)]:
    d = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    check(f"describe-key by {key_id[:4]}", d["KeyId"] == key and d["Description"] == "boto3 key", d)

listed = []
pages = kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 1})
for page in pages:
    listed += [k["KeyId"] for k in page["Keys"]]
check("list-keys pages", key in listed and len(listed) == len(set(listed)), listed)

kms.disable_key(KeyId=key)
check("disable-key", kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled")
expect_error("encrypt with a disabled key", "DisabledException", kms.encrypt, KeyId=key, Plaintext=b"x")
kms.enable_key(KeyId=key)
check("enable-key", kms.describe_key(KeyId=key)["KeyMetadata"]["Enabled"] is True)

# --- aliases ------------------------------------------------------------------------------
kms.create_alias(AliasName="alias/boto3", TargetKeyId=key)
expect_error("create an alias twice", "AlreadyExistsException",
             kms.create_alias, AliasName="alias/boto3", TargetKeyId=key)
# As AWS answers them: ValidationException, in AWS's words.
expect_error("an alias name without alias/", "ValidationException",
             kms.create_alias, AliasName="boto3-alias", TargetKeyId=key)
expect_error("an alias name with '.'", "ValidationException",
             kms.create_alias, AliasName="alias/boto3.dotted", TargetKeyId=key)
expect_error("an alias name with ':' (in AWS's model pattern, refused by AWS)", "ValidationException",
             kms.create_alias, AliasName="alias/boto3:colon", TargetKeyId=key)
expect_error("an alias name under alias/aws/", "InvalidAliasNameException",
             kms.create_alias, AliasName="alias/aws/boto3", TargetKeyId=key)
# An alias another front named (keyplane's own aliases take ':' and '.') is still updated and
# deleted here.
native("create-alias", os.environ["APPROVER_TOKEN"], {"alias_name": "alias/boto3:colon", "target_key_id": key})
kms.update_alias(AliasName="alias/boto3:colon", TargetKeyId=key)
kms.delete_alias(AliasName="alias/boto3:colon")
check("an alias named natively with ':' is deleted through AWS",
      "alias/boto3:colon" not in [a["AliasName"] for a in kms.list_aliases()["Aliases"]])
aliases = kms.list_aliases(KeyId=key)["Aliases"]
check("list-aliases", [a["AliasName"] for a in aliases] == ["alias/boto3"], aliases)
check("list-aliases arn", aliases[0]["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/boto3", aliases)
other = kms.create_key()["KeyMetadata"]["KeyId"]
kms.update_alias(AliasName="alias/boto3", TargetKeyId=arn(other))
check("update-alias", kms.describe_key(KeyId="alias/boto3")["KeyMetadata"]["KeyId"] == other)
signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
expect_error("update-alias to another kind of key", "ValidationException",
             kms.update_alias, AliasName="alias/boto3", TargetKeyId=signer)
alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/boto3"
check("describe-key by alias ARN", kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == other)
kms.delete_alias(AliasName="alias/boto3")
expect_error("a deleted alias", "NotFoundException", kms.describe_key, KeyId="alias/boto3")
expect_error("list-aliases with a marker it did not give", "InvalidMarkerException",
             kms.list_aliases, Marker="not a marker")
expect_error("list-keys with a marker it did not give", "InvalidMarkerException",
             kms.list_keys, Marker="!!!")

# --- encryption ---------------------------------------------------------------------------
ec = {"purpose": "boto3", "tenant": "acme"}
enc = kms.encrypt(KeyId=key, Plaintext=b"attack at dawn", EncryptionContext=ec)
check("encrypt names the key by ARN", enc["KeyId"] == arn(key), enc["KeyId"])
check("encrypt algorithm", enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT")
blob = enc["CiphertextBlob"]
dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec)
check("decrypt", dec["Plaintext"] == b"attack at dawn" and dec["KeyId"] == arn(key), dec)
dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec, KeyId=arn(key))
check("decrypt with its KeyId", dec["Plaintext"] == b"attack at dawn")
expect_error("decrypt naming another key", "IncorrectKeyException",
             kms.decrypt, CiphertextBlob=blob, EncryptionContext=ec, KeyId=other)
expect_error("decrypt with another encryption context", "InvalidCiphertextException",
             kms.decrypt, CiphertextBlob=blob, EncryptionContext={"purpose": "other"})
altered = bytearray(blob)
altered[-1] ^= 1
expect_error("decrypt an altered ciphertext", "InvalidCiphertextException",
             kms.decrypt, CiphertextBlob=bytes(altered), EncryptionContext=ec)
expect_error("decrypt garbage", "InvalidCiphertextException",
             kms.decrypt, CiphertextBlob=b"not a ciphertext")
expect_error("encrypt under an unknown key", "NotFoundException",
             kms.encrypt, KeyId="k-00000000000000000000000000000000", Plaintext=b"x")
expect_error("encrypt under a key ARN of another account", "NotFoundException",
             kms.encrypt, KeyId=f"arn:aws:kms:{REGION}:999999999999:key/{key}", Plaintext=b"x")
msg = expect_error("encrypt 4097 bytes", "ValidationException",
                   kms.encrypt, KeyId=key, Plaintext=b"x" * 4097)
check("the validation message is AWS's",
      msg == "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
             "Member must have length less than or equal to 4096", msg)
msg = expect_error("encrypt an empty plaintext", "ValidationException",
                   kms.encrypt, KeyId=key, Plaintext=b"")
check("the empty-plaintext message is AWS's", "greater than or equal to 1" in msg, msg)
expect_error("encrypt without a KeyId (client checks off)", "ValidationException",
             raw.encrypt, Plaintext=b"x")
expect_error("dry run", "DryRunOperationException",
             kms.encrypt, KeyId=key, Plaintext=b"x", DryRun=True)

re = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec, DestinationKeyId=other)
check("re-encrypt", re["KeyId"] == arn(other) and re["SourceKeyId"] == arn(key), re)
check("re-encrypted decrypts", kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"attack at dawn")
expect_error("re-encrypt naming another source key", "IncorrectKeyException",
             kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=ec,
             SourceKeyId=other, DestinationKeyId=other)

dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ec)
check("generate-data-key", len(dk["Plaintext"]) == 32 and dk["KeyId"] == arn(key))
check("its data key decrypts",
      kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ec)["Plaintext"] == dk["Plaintext"])
dk = kms.generate_data_key(KeyId=key, NumberOfBytes=64)
check("generate-data-key NumberOfBytes", len(dk["Plaintext"]) == 64)
dk = kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_128")
check("generate-data-key-without-plaintext", "Plaintext" not in dk)
check("and it decrypts to 16 bytes", len(kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"]) == 16)
check("generate-random", len(kms.generate_random(NumberOfBytes=48)["Plaintext"]) == 48)
expect_error("generate-random past AWS's 1024 bytes", "ValidationException",
             kms.generate_random, NumberOfBytes=1025)

# --- asymmetric keys and MACs -------------------------------------------------------------
signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
check("an ECC key", signer["SigningAlgorithms"] == ["ECDSA_SHA_256"], signer)
signer = signer["KeyId"]
expect_error("encrypt with a signing key", "InvalidKeyUsageException",
             kms.encrypt, KeyId=signer, Plaintext=b"x")
sig = kms.sign(KeyId=signer, Message=b"contract", SigningAlgorithm="ECDSA_SHA_256")
check("sign", sig["KeyId"] == arn(signer) and len(sig["Signature"]) > 60)
ok = kms.verify(KeyId=signer, Message=b"contract", Signature=sig["Signature"],
                SigningAlgorithm="ECDSA_SHA_256")
check("verify", ok["SignatureValid"] is True)
expect_error("verify a wrong signature", "KMSInvalidSignatureException",
             kms.verify, KeyId=signer, Message=b"contract!", Signature=sig["Signature"],
             SigningAlgorithm="ECDSA_SHA_256")
pub = kms.get_public_key(KeyId=signer)
check("get-public-key", pub["KeySpec"] == "ECC_NIST_P256" and pub["PublicKey"][:2] == b"\x30\x59", pub)

rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
sig = kms.sign(KeyId=rsa, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
check("RSA PSS", kms.verify(KeyId=rsa, Message=b"m", Signature=sig["Signature"],
                            SigningAlgorithm="RSASSA_PSS_SHA_256")["SignatureValid"])

expect_error("a signing algorithm the key cannot do", "InvalidKeyUsageException",
             kms.sign, KeyId=rsa, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")

# Ed25519 as AWS names it: ED25519_SHA_512 over the message itself (RAW).
ed = kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
check("an Ed25519 key", ed["SigningAlgorithms"] == ["ED25519_SHA_512"], ed)
sig = kms.sign(KeyId=ed["KeyId"], Message=b"m", MessageType="RAW", SigningAlgorithm="ED25519_SHA_512")
check("Ed25519 sign", sig["SigningAlgorithm"] == "ED25519_SHA_512" and len(sig["Signature"]) == 64, sig)
check("Ed25519 verify", kms.verify(KeyId=ed["KeyId"], Message=b"m", MessageType="RAW",
                                   Signature=sig["Signature"],
                                   SigningAlgorithm="ED25519_SHA_512")["SignatureValid"])
check("Ed25519 public key", kms.get_public_key(KeyId=ed["KeyId"])["SigningAlgorithms"] == ["ED25519_SHA_512"])
expect_error("Ed25519ph", "UnsupportedOperationException",
             kms.sign, KeyId=ed["KeyId"], Message=b"\0" * 64, MessageType="DIGEST",
             SigningAlgorithm="ED25519_PH_SHA_512")
# AWS rotates only symmetric encryption keys: a rotated signing key would verify nothing its
# clients signed before (they name no version).
expect_error("rotate a signing key", "UnsupportedOperationException",
             kms.rotate_key_on_demand, KeyId=ed["KeyId"])
expect_error("automatic rotation of a signing key", "UnsupportedOperationException",
             kms.enable_key_rotation, KeyId=rsa)
# Without KeyUsage a key is for encryption, whatever its spec (AWS's default).
plain_rsa = kms.create_key(KeySpec="RSA_2048")["KeyMetadata"]
check("an RSA key without a usage encrypts", plain_rsa["KeyUsage"] == "ENCRYPT_DECRYPT", plain_rsa)
# Its metadata lists the encryption algorithms Encrypt takes, as GetPublicKey does (an SDK may
# pick from either; both listed two, and Encrypt refused the one the HSM lacks).
public = kms.get_public_key(KeyId=plain_rsa["KeyId"])
for listed in (plain_rsa["EncryptionAlgorithms"],
               kms.describe_key(KeyId=plain_rsa["KeyId"])["KeyMetadata"]["EncryptionAlgorithms"]):
    check("an RSA key's algorithms are GetPublicKey's",
          listed == public["EncryptionAlgorithms"] and listed, (listed, public["EncryptionAlgorithms"]))
    for algorithm in listed:
        kms.encrypt(KeyId=plain_rsa["KeyId"], Plaintext=b"x", EncryptionAlgorithm=algorithm)
# An algorithm that does not fit the key: as AWS answers it (sops and the SDKs match on it).
message = expect_error("an RSA key without EncryptionAlgorithm", "InvalidKeyUsageException",
                       kms.encrypt, KeyId=plain_rsa["KeyId"], Plaintext=b"x")
check("in AWS's words", "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048" in message, message)
expect_error("an OAEP algorithm with a symmetric key", "InvalidKeyUsageException",
             kms.encrypt, KeyId=key, Plaintext=b"x", EncryptionAlgorithm=listed[0])
expect_error("an ECC key without a usage", "ValidationException",
             kms.create_key, KeySpec="ECC_NIST_P256")

mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
check("an HMAC key", mac_key["MacAlgorithms"] == ["HMAC_SHA_256"], mac_key)
mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"msg", MacAlgorithm="HMAC_SHA_256")
check("generate-mac", len(mac["Mac"]) == 32)
check("verify-mac", kms.verify_mac(KeyId=mac_key["KeyId"], Message=b"msg", Mac=mac["Mac"],
                                   MacAlgorithm="HMAC_SHA_256")["MacValid"])
expect_error("verify a wrong MAC", "KMSInvalidMacException",
             kms.verify_mac, KeyId=mac_key["KeyId"], Message=b"msg!", Mac=mac["Mac"],
             MacAlgorithm="HMAC_SHA_256")
# Longer than any MAC or signature made, within AWS's model (6 KiB): invalid, not a bad request.
expect_error("verify a MAC longer than any", "KMSInvalidMacException",
             kms.verify_mac, KeyId=mac_key["KeyId"], Message=b"msg", Mac=mac["Mac"] * 3,
             MacAlgorithm="HMAC_SHA_256")
expect_error("verify a signature longer than any", "KMSInvalidSignatureException",
             kms.verify, KeyId=signer, Message=b"contract", Signature=b"\x30" * 2000,
             SigningAlgorithm="ECDSA_SHA_256")

agree = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
peer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
a = kms.derive_shared_secret(KeyId=agree, KeyAgreementAlgorithm="ECDH",
                             PublicKey=kms.get_public_key(KeyId=peer)["PublicKey"])
b = kms.derive_shared_secret(KeyId=peer, KeyAgreementAlgorithm="ECDH",
                             PublicKey=kms.get_public_key(KeyId=agree)["PublicKey"])
check("derive-shared-secret agrees", a["SharedSecret"] == b["SharedSecret"] and len(a["SharedSecret"]) == 32)

# --- rotation -----------------------------------------------------------------------------
kms.rotate_key_on_demand(KeyId=key)
rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
check("list-key-rotations", len(rotations) == 1 and rotations[0]["KeyId"] == arn(key), rotations)
check("an old ciphertext still decrypts after rotation",
      kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec)["Plaintext"] == b"attack at dawn")

# --- imported key material ----------------------------------------------------------------
ext = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
check("an EXTERNAL key waits for its material", ext["KeyState"] == "PendingImport" and ext["Origin"] == "EXTERNAL", ext)
params = kms.get_parameters_for_import(KeyId=ext["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                       WrappingKeySpec="RSA_2048")
check("get-parameters-for-import", params["KeyId"] == arn(ext["KeyId"]) and len(params["ImportToken"]) > 0)
wrapping = serialization.load_der_public_key(params["PublicKey"])
material = os.urandom(32)
wrapped = wrapping.encrypt(material, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                  algorithm=hashes.SHA1(), label=None))
kms.import_key_material(KeyId=ext["KeyId"], ImportToken=params["ImportToken"],
                        EncryptedKeyMaterial=wrapped,
                        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
check("import-key-material", kms.describe_key(KeyId=ext["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled")
ct = kms.encrypt(KeyId=ext["KeyId"], Plaintext=b"imported")["CiphertextBlob"]
check("the imported key encrypts and decrypts", kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"imported")
kms.delete_imported_key_material(KeyId=ext["KeyId"])
check("delete-imported-key-material", kms.describe_key(KeyId=ext["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport")
expect_error("decrypt while the material is gone", "KMSInvalidStateException",
             kms.decrypt, CiphertextBlob=ct)
params = kms.get_parameters_for_import(KeyId=ext["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                       WrappingKeySpec="RSA_2048")
wrapping = serialization.load_der_public_key(params["PublicKey"])
kms.import_key_material(KeyId=ext["KeyId"], ImportToken=params["ImportToken"],
                        EncryptedKeyMaterial=wrapping.encrypt(material, padding.OAEP(
                            mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)),
                        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
check("the same material again opens what it sealed", kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"imported")
# What a key's origin does not allow: UnsupportedOperationException, as AWS answers it.
expect_error("rotate-key-on-demand of imported material", "UnsupportedOperationException",
             kms.rotate_key_on_demand, KeyId=ext["KeyId"])
expect_error("import parameters for a key keyplane made", "UnsupportedOperationException",
             kms.get_parameters_for_import, KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_1",
             WrappingKeySpec="RSA_2048")
other_ext = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
waiting = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
foreign = kms.get_parameters_for_import(KeyId=other_ext, WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                        WrappingKeySpec="RSA_2048")
expect_error("an import token of another key", "InvalidImportTokenException",
             kms.import_key_material, KeyId=waiting, ImportToken=foreign["ImportToken"],
             EncryptedKeyMaterial=wrapped, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
expect_error("an import token keyplane never made", "InvalidImportTokenException",
             kms.import_key_material, KeyId=waiting, ImportToken=b"\xff\xfe junk",
             EncryptedKeyMaterial=wrapped, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")

# --- Nitro Enclaves recipients: keyplane has no attestation, so never answers for one -----
# With a Recipient AWS answers CiphertextForRecipient and no plaintext; keyplane cannot check
# an attestation document, and must not answer the plaintext instead.
recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b"\x84" * 64}
for name, call, kwargs in [
    ("decrypt", kms.decrypt, {"CiphertextBlob": blob, "EncryptionContext": ec}),
    ("generate-data-key", kms.generate_data_key, {"KeyId": key, "KeySpec": "AES_256"}),
    ("generate-data-key-pair", kms.generate_data_key_pair, {"KeyId": key, "KeyPairSpec": "RSA_2048"}),
    ("generate-random", kms.generate_random, {"NumberOfBytes": 32}),
    ("derive-shared-secret", kms.derive_shared_secret,
     {"KeyId": agree, "KeyAgreementAlgorithm": "ECDH", "PublicKey": kms.get_public_key(KeyId=peer)["PublicKey"]}),
]:
    msg = expect_error(f"{name} for a Nitro Enclaves recipient", "UnsupportedOperationException",
                       call, Recipient=recipient, **kwargs)
    check(f"{name} for a recipient says why", "Recipient" in msg, msg)
    expect_error(f"{name} for a recipient, dry run", "UnsupportedOperationException",
                 call, Recipient=recipient, **kwargs, **({} if name == "generate-random" else {"DryRun": True}))

# --- Decrypt's dry run without a ciphertext (DryRunModifiers IGNORE_CIPHERTEXT) -------------
expect_error("a dry run of decrypt, IGNORE_CIPHERTEXT, with its ciphertext", "DryRunOperationException",
             kms.decrypt, CiphertextBlob=blob, EncryptionContext=ec, DryRun=True,
             DryRunModifiers=["IGNORE_CIPHERTEXT"])
msg = expect_error("a dry run of decrypt, IGNORE_CIPHERTEXT, without a ciphertext",
                   "UnsupportedOperationException",
                   kms.decrypt, KeyId=key, EncryptionContext=ec, DryRun=True,
                   DryRunModifiers=["IGNORE_CIPHERTEXT"])
check("...says what to send instead", "IGNORE_CIPHERTEXT" in msg and "CiphertextBlob" in msg, msg)
expect_error("a dry run of re-encrypt, IGNORE_CIPHERTEXT, without a ciphertext",
             "UnsupportedOperationException",
             kms.re_encrypt, SourceKeyId=key, DestinationKeyId=key, DryRun=True,
             DryRunModifiers=["IGNORE_CIPHERTEXT"])
msg = expect_error("a DryRunModifier outside the model", "ValidationException",
                   raw.decrypt, CiphertextBlob=blob, EncryptionContext=ec, DryRun=True,
                   DryRunModifiers=["IGNORE_EVERYTHING"])
check("...in AWS's words", "Member must satisfy enum value set: [IGNORE_CIPHERTEXT]" in msg, msg)
expect_error("decrypt without a ciphertext, not a dry run", "ValidationException",
             raw.decrypt, KeyId=key, DryRunModifiers=["IGNORE_CIPHERTEXT"])

# --- enumerations: outside AWS's model ValidationException; in it but not keyplane's, -------
# UnsupportedOperationException naming the value. The model is the installed botocore's: a
# value it gains that keyplane does not list fails here until the front knows it.
service = kms.meta.service_model


def model_enum(shape):
    return service.shape_for(shape).enum


# What keyplane serves of each enumeration, as AWS names it.
SERVED = {
    "KeySpec": {"SYMMETRIC_DEFAULT", "HMAC_256", "HMAC_384", "HMAC_512", "ECC_NIST_P256",
                "ECC_NIST_P384", "ECC_NIST_EDWARDS25519", "RSA_2048", "RSA_3072", "RSA_4096"},
    "KeyUsageType": {"ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"},
    "MessageType": {"RAW", "DIGEST"},
    "SigningAlgorithmSpec": {"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
                             "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
                             "RSASSA_PKCS1_V1_5_SHA_512", "ECDSA_SHA_256", "ECDSA_SHA_384",
                             "ED25519_SHA_512"},
    "EncryptionAlgorithmSpec": {"SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"},
    "MacAlgorithmSpec": {"HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512"},
    "GrantOperation": set(model_enum("GrantOperation")) - {"Encapsulate", "Decapsulate"},
    # keyplane implements the SHA-256 ones; whether the HSM takes them is the operation's to
    # say (SoftHSM2 does not: UnsupportedOperationException too, with its own reason).
    "AlgorithmSpec": {"RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1", "RSAES_OAEP_SHA_256",
                      "RSA_AES_KEY_WRAP_SHA_256"},
    "WrappingKeySpec": {"RSA_2048", "RSA_3072", "RSA_4096"},
    "DataKeyPairSpec": {"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384"},
}
SERVED["CustomerMasterKeySpec"] = SERVED["KeySpec"]
mac_id = mac_key["KeyId"]
some_sig = kms.sign(KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
some_mac = kms.generate_mac(KeyId=mac_id, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
# (action, its request with the value put in, the model's shape, the member as AWS's messages
# write it).
ENUM_MEMBERS = [
    ("CreateKey", lambda v: raw.create_key(KeySpec=v), "KeySpec", "keySpec"),
    ("CreateKey", lambda v: raw.create_key(CustomerMasterKeySpec=v), "CustomerMasterKeySpec",
     "customerMasterKeySpec"),
    ("CreateKey", lambda v: raw.create_key(KeyUsage=v), "KeyUsageType", "keyUsage"),
    ("Sign", lambda v: raw.sign(KeyId=signer, Message=b"m", MessageType=v,
                                SigningAlgorithm="ECDSA_SHA_256"), "MessageType", "messageType"),
    ("Verify", lambda v: raw.verify(KeyId=signer, Message=b"m", MessageType=v, Signature=some_sig,
                                    SigningAlgorithm="ECDSA_SHA_256"), "MessageType", "messageType"),
    ("Sign", lambda v: raw.sign(KeyId=signer, Message=b"m", SigningAlgorithm=v),
     "SigningAlgorithmSpec", "signingAlgorithm"),
    ("Verify", lambda v: raw.verify(KeyId=signer, Message=b"m", Signature=some_sig, SigningAlgorithm=v),
     "SigningAlgorithmSpec", "signingAlgorithm"),
    ("Encrypt", lambda v: raw.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm=v),
     "EncryptionAlgorithmSpec", "encryptionAlgorithm"),
    ("Decrypt", lambda v: raw.decrypt(CiphertextBlob=blob, EncryptionContext=ec, EncryptionAlgorithm=v),
     "EncryptionAlgorithmSpec", "encryptionAlgorithm"),
    ("ReEncrypt", lambda v: raw.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec,
                                           DestinationKeyId=key, SourceEncryptionAlgorithm=v),
     "EncryptionAlgorithmSpec", "sourceEncryptionAlgorithm"),
    ("ReEncrypt", lambda v: raw.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec,
                                           DestinationKeyId=key, DestinationEncryptionAlgorithm=v),
     "EncryptionAlgorithmSpec", "destinationEncryptionAlgorithm"),
    ("GenerateMac", lambda v: raw.generate_mac(KeyId=mac_id, Message=b"m", MacAlgorithm=v),
     "MacAlgorithmSpec", "macAlgorithm"),
    ("VerifyMac", lambda v: raw.verify_mac(KeyId=mac_id, Message=b"m", Mac=some_mac, MacAlgorithm=v),
     "MacAlgorithmSpec", "macAlgorithm"),
    ("CreateGrant", lambda v: raw.create_grant(KeyId=key, GranteePrincipal=me["Arn"], Operations=[v]),
     "GrantOperation", "operations"),
    ("GetParametersForImport", lambda v: raw.get_parameters_for_import(
        KeyId=waiting, WrappingAlgorithm=v, WrappingKeySpec="RSA_2048"), "AlgorithmSpec",
     "wrappingAlgorithm"),
    ("GetParametersForImport", lambda v: raw.get_parameters_for_import(
        KeyId=waiting, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec=v), "WrappingKeySpec",
     "wrappingKeySpec"),
    ("GenerateDataKeyPair", lambda v: raw.generate_data_key_pair(KeyId=key, KeyPairSpec=v),
     "DataKeyPairSpec", "keyPairSpec"),
]
for action, call, shape, field in ENUM_MEMBERS:
    for value in model_enum(shape):
        if value in SERVED[shape]:
            continue
        msg = expect_error(f"{action} {shape} {value}, AWS's but not keyplane's",
                           "UnsupportedOperationException", call, value)
        check(f"...names {value}", value in msg, msg)
    msg = expect_error(f"{action} {shape} outside the model", "ValidationException", call, "NOT_A_VALUE")
    check(f"...in AWS's words ({action} {shape})",
          f"at '{field}' failed to satisfy constraint" in msg
          and "Member must satisfy enum value set: [" in msg, msg)
    check(f"...listing the model's values ({action} {shape})",
          all(v in msg for v in model_enum(shape)), msg)

# --- description, tags, automatic rotation, key policy ------------------------------------
kms.update_key_description(KeyId=key, Description="renamed")
check("update-key-description", kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "renamed")
kms.tag_resource(KeyId=key, Tags=[{"TagKey": "env", "TagValue": "test"}, {"TagKey": "team", "TagValue": "b"}])
kms.untag_resource(KeyId=key, TagKeys=["env"])
tags = []
for page in kms.get_paginator("list_resource_tags").paginate(KeyId=key, PaginationConfig={"PageSize": 1}):
    tags += page["Tags"]
check("tag-resource, untag-resource, list-resource-tags", tags == [{"TagKey": "team", "TagValue": "b"}], tags)
# Tags that cannot be: TagException, as AWS answers them, and nothing written.
expect_error("a tag key given twice", "TagException", kms.tag_resource, KeyId=key,
             Tags=[{"TagKey": "x", "TagValue": "1"}, {"TagKey": "x", "TagValue": "2"}])
expect_error("a tag key beginning with aws:", "TagException", kms.tag_resource, KeyId=key,
             Tags=[{"TagKey": "AWS:owner", "TagValue": "me"}])
expect_error("more than 50 tags on a key", "TagException", kms.tag_resource, KeyId=key,
             Tags=[{"TagKey": f"t{i}", "TagValue": "v"} for i in range(50)])
expect_error("a tag key beginning with aws: at create-key", "TagException", kms.create_key,
             Tags=[{"TagKey": "aws:cloudformation:stack-name", "TagValue": "s"}])
check("tags unchanged", kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "team", "TagValue": "b"}])
# Lengths are counted in characters, as the model counts them: 128 and 256 characters of
# another script (three UTF-8 bytes each) fit, as a description of 8192 does.
wide = [{"TagKey": "鍵" * 128, "TagValue": "値" * 256}]
kms.tag_resource(KeyId=key, Tags=wide)
check("a tag of 128 and 256 characters", wide[0] in kms.list_resource_tags(KeyId=key)["Tags"])
kms.untag_resource(KeyId=key, TagKeys=[wide[0]["TagKey"]])
kms.update_key_description(KeyId=key, Description="説" * 8192)
check("a description of 8192 characters",
      kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "説" * 8192)
expect_error("a tag value of 257 characters", "ValidationException", kms.tag_resource, KeyId=key,
             Tags=[{"TagKey": "k", "TagValue": "値" * 257}])

check("rotation is off at first", kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False)
kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=180)
status = kms.get_key_rotation_status(KeyId=key)
check("enable-key-rotation", status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 180, status)
check("its next rotation", (status["NextRotationDate"] - datetime.datetime.now(datetime.timezone.utc)).days in (179, 180), status)
expect_error("a rotation period out of range", "ValidationException",
             raw.enable_key_rotation, KeyId=key, RotationPeriodInDays=30)
kms.disable_key_rotation(KeyId=key)
check("disable-key-rotation", kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False)

policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
check("the default key policy names the account",
      policy["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{ACCOUNT}:root", policy)
mine = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                           "Action": "kms:Decrypt", "Resource": "*"}]})
kms.put_key_policy(KeyId=key, PolicyName="default", Policy=mine)
check("put-key-policy then get-key-policy", kms.get_key_policy(KeyId=key)["Policy"] == mine)
check("list-key-policies", kms.list_key_policies(KeyId=key)["PolicyNames"] == ["default"])
expect_error("a key policy that is not JSON", "MalformedPolicyDocumentException",
             kms.put_key_policy, KeyId=key, PolicyName="default", Policy="{not json")
with_policy = kms.create_key(Policy=mine)["KeyMetadata"]["KeyId"]
check("create-key with a policy", kms.get_key_policy(KeyId=with_policy)["Policy"] == mine)

# --- grants: Cedar honours them (context.granted), within their constraints ----------------
member_id, member_secret = os.environ["MEMBER_KEY"].split(":", 1)
member = boto3.client("kms", aws_access_key_id=member_id, aws_secret_access_key=member_secret,
                      config=NO_RETRY)
member_arn = boto3.client("sts", aws_access_key_id=member_id, aws_secret_access_key=member_secret,
                          config=NO_RETRY).get_caller_identity()["Arn"]
expect_error("no grant: the member does not see the key", "NotFoundException",
             member.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})
grant = kms.create_grant(KeyId=key, GranteePrincipal=member_arn, Operations=["Encrypt", "Decrypt"],
                         RetiringPrincipal=me["Arn"],
                         Constraints={"EncryptionContextSubset": {"app": "billing"}}, Name="billing")
again = kms.create_grant(KeyId=key, GranteePrincipal=member_arn, Operations=["Encrypt", "Decrypt"],
                         RetiringPrincipal=me["Arn"],
                         Constraints={"EncryptionContextSubset": {"app": "billing"}}, Name="billing")
check("create-grant with a name is idempotent", again["GrantId"] == grant["GrantId"])
# Material keyplane cannot import is a request it does not serve, not a malformed one.
expect_error("an HMAC key of imported material", "UnsupportedOperationException", kms.create_key,
             KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC", Origin="EXTERNAL")
# Members for grants to AWS services are refused, never dropped: a grant whose SourceArn
# constraint were ignored would be wider than asked.
granted_before = len(kms.list_grants(KeyId=key)["Grants"])
expect_error("a grant constrained by SourceArn", "UnsupportedOperationException",
             kms.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["Decrypt"],
             Constraints={"SourceArn": "arn:aws:s3:::keyplane-bucket"})
expect_error("a grant to a service principal", "UnsupportedOperationException",
             kms.create_grant, KeyId=key, GranteeServicePrincipal="s3.amazonaws.com",
             Operations=["Decrypt"])
expect_error("a grant retired by a service principal", "UnsupportedOperationException",
             kms.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["Decrypt"],
             RetiringServicePrincipal="s3.amazonaws.com")
check("...and none of them was made", len(kms.list_grants(KeyId=key)["Grants"]) == granted_before)
expect_error("grants listed by service principal", "UnsupportedOperationException",
             kms.list_grants, KeyId=key, GranteeServicePrincipal="s3.amazonaws.com")
expect_error("retirable grants of a service principal", "UnsupportedOperationException",
             kms.list_retirable_grants, RetiringServicePrincipal="s3.amazonaws.com")
granted = member.encrypt(KeyId=key, Plaintext=b"for billing", EncryptionContext={"app": "billing", "x": "1"})
check("the grantee encrypts within the constraint",
      member.decrypt(CiphertextBlob=granted["CiphertextBlob"],
                     EncryptionContext={"app": "billing", "x": "1"})["Plaintext"] == b"for billing")
expect_error("the grantee outside the constraint", "NotFoundException",
             member.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"})
# AWS: "the key in each key-value pair is not case sensitive, but the value is".
member.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"App": "billing"})
expect_error("...whose values match exactly", "NotFoundException",
             member.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "Billing"})
code, _, _ = error_of(member.sign, KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
check("a grant on one key gives nothing on another", code == "NotFoundException", code)
listed = kms.list_grants(KeyId=key)["Grants"]
check("list-grants", [g["GrantId"] for g in listed] == [grant["GrantId"]] and
      listed[0]["GranteePrincipal"] == member_arn and
      sorted(listed[0]["Operations"]) == ["Decrypt", "Encrypt"] and
      listed[0]["Constraints"] == {"EncryptionContextSubset": {"app": "billing"}}, listed)
retirable = kms.list_retirable_grants(RetiringPrincipal=me["Arn"])["Grants"]
check("list-retirable-grants", grant["GrantId"] in [g["GrantId"] for g in retirable], retirable)
# (and it may not describe the key either: refused as if the key did not exist)
expect_error("the grantee may not retire a grant that does not let it", "NotFoundException",
             member.retire_grant, GrantToken=grant["GrantToken"])
kms.retire_grant(GrantToken=grant["GrantToken"])
check("retire-grant by its retiring principal", kms.list_grants(KeyId=key)["Grants"] == [])
# Ids and tokens that cannot be a grant's get the model's names for them.
expect_error("a malformed grant id to revoke", "InvalidGrantIdException",
             kms.revoke_grant, KeyId=key, GrantId="not-a-grant")
expect_error("a malformed grant id to list", "InvalidGrantIdException",
             kms.list_grants, KeyId=key, GrantId="not-a-grant")
expect_error("a malformed grant id to retire", "InvalidGrantIdException",
             kms.retire_grant, KeyId=key, GrantId="not-a-grant")
expect_error("a malformed grant token to retire", "InvalidGrantTokenException",
             kms.retire_grant, GrantToken="not-a-grant")
expect_error("a retired grant gives nothing", "NotFoundException",
             member.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})
pairs = kms.create_grant(KeyId=key, GranteePrincipal=member_arn,
                         Operations=["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"])
listed = kms.list_grants(KeyId=key, GrantId=pairs["GrantId"])["Grants"]
check("a grant of data key pairs lists as made",
      sorted(listed[0]["Operations"]) == ["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"],
      listed)
kms.revoke_grant(KeyId=key, GrantId=pairs["GrantId"])
second = kms.create_grant(KeyId=key, GranteePrincipal=member_arn, Operations=["DescribeKey"])
check("a DescribeKey grant", member.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key)
expect_error("...lets it describe, not encrypt", "AccessDeniedException",
             member.encrypt, KeyId=key, Plaintext=b"x")
kms.revoke_grant(KeyId=key, GrantId=second["GrantId"])
expect_error("revoke-grant", "NotFoundException", member.describe_key, KeyId=key)
# A dry run answers as the request would: the checks a request makes after its first decision
# (a grant passed on through a grant, re-encryption's destination key) run in a dry run too.
passer = kms.create_grant(KeyId=key, GranteePrincipal=member_arn, Operations=["CreateGrant", "DescribeKey"])
expect_error("a dry run of a grant beyond the grant that passes it on", "AccessDeniedException",
             member.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["Decrypt"],
             DryRun=True)
expect_error("...and of one that passes on what it holds", "DryRunOperationException",
             member.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["DescribeKey"],
             DryRun=True)
kms.revoke_grant(KeyId=key, GrantId=passer["GrantId"])
rewrapper = kms.create_grant(KeyId=key, GranteePrincipal=member_arn, Operations=["ReEncryptFrom", "DescribeKey"])
expect_error("a dry run of a re-encryption to a key the caller may not use", "NotFoundException",
             member.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=ec, DestinationKeyId=other,
             DryRun=True)
# AWS authorizes ReEncryptTo on the destination even when it is the source key.
expect_error("a re-encryption under the same key with ReEncryptFrom alone", "AccessDeniedException",
             member.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=ec, DestinationKeyId=key,
             DestinationEncryptionContext=ec)
kms.revoke_grant(KeyId=key, GrantId=rewrapper["GrantId"])
expect_error("an operation that cannot be granted", "ValidationException",
             kms.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["ScheduleKeyDeletion"])
# keyplane's principals are users; a role of the same name is someone else.
expect_error("a role as grantee", "UnsupportedOperationException",
             kms.create_grant, KeyId=key, Operations=["Decrypt"],
             GranteePrincipal=member_arn.replace(":user/", ":role/"))
expect_error("a grantee of another account", "NotFoundException",
             kms.create_grant, KeyId=key, GranteePrincipal="arn:aws:iam::999999999999:user/x",
             Operations=["Decrypt"])
expect_error("a dry-run grant", "DryRunOperationException",
             kms.create_grant, KeyId=key, GranteePrincipal=member_arn, Operations=["Decrypt"], DryRun=True)

# --- deletion (guarded: a second admin approves first, on the native API) ------------------
expect_error("schedule-key-deletion without an approval", "AccessDeniedException",
             kms.schedule_key_deletion, KeyId=other, PendingWindowInDays=7)
native("approve-key-deletion", os.environ["APPROVER_TOKEN"], {"key_id": other, "requester": me["UserId"]})
kms.enable_key_rotation(KeyId=other, RotationPeriodInDays=180)
sched = kms.schedule_key_deletion(KeyId=other, PendingWindowInDays=7)
check("schedule-key-deletion", sched["KeyState"] == "PendingDeletion" and sched["PendingWindowInDays"] == 7, sched)
check("its deletion date", isinstance(sched["DeletionDate"], datetime.datetime), sched)
expect_error("encrypt with a key pending deletion", "KMSInvalidStateException",
             kms.encrypt, KeyId=other, Plaintext=b"x")
expect_error("a grant on a key pending deletion", "KMSInvalidStateException",
             kms.create_grant, KeyId=other, GranteePrincipal=member_arn, Operations=["Decrypt"])
# AWS: "While a KMS key is pending deletion, its key rotation status is false"; a cancelled
# deletion shows the period again.
status = kms.get_key_rotation_status(KeyId=other)
check("a key pending deletion does not rotate", status["KeyRotationEnabled"] is False
      and "NextRotationDate" not in status, status)
check("cancel-key-deletion", kms.cancel_key_deletion(KeyId=other)["KeyId"] == arn(other))
check("a cancelled key is disabled", kms.describe_key(KeyId=other)["KeyMetadata"]["KeyState"] == "Disabled")
# AWS's key-state table: no grant on a disabled key, nor on one pending deletion (above).
expect_error("a grant on a disabled key", "DisabledException",
             kms.create_grant, KeyId=other, GranteePrincipal=member_arn, Operations=["Decrypt"])
expect_error("...nor its dry run", "DisabledException",
             kms.create_grant, KeyId=other, GranteePrincipal=member_arn, Operations=["Decrypt"],
             DryRun=True)
status = kms.get_key_rotation_status(KeyId=other)
check("...and rotates again once enabled", status["KeyRotationEnabled"] is True
      and status["RotationPeriodInDays"] == 180, status)

# --- who may do what: Cedar decides, as for the native API ----------------------------------
expect_error("a member creates no key", "AccessDeniedException", member.create_key)
# A key its caller may not even describe is answered as if it did not exist.
expect_error("a member without a grant does not see the key", "NotFoundException",
             member.encrypt, KeyId=key, Plaintext=b"x")

# --- signatures ---------------------------------------------------------------------------
wrong = boto3.client("kms", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key="x" * 40, config=NO_RETRY)
expect_error("a wrong secret", "InvalidSignatureException", wrong.list_keys)
unknown = boto3.client("kms", aws_access_key_id="AKIAAAAAAAAAAAAAAAAA",
                       aws_secret_access_key="x" * 40, config=NO_RETRY)
expect_error("an unknown access key", "UnrecognizedClientException", unknown.list_keys)
unsigned = boto3.client("kms", config=Config(signature_version=botocore.UNSIGNED,
                                             retries={"max_attempts": 1}))
expect_error("no signature", "MissingAuthenticationTokenException", unsigned.list_keys)

real_now = botocore.auth.get_current_datetime
try:
    botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=10)
    msg = expect_error("an X-Amz-Date 10 minutes old", "InvalidSignatureException", kms.list_keys)
    check("the expiry message is AWS's", msg.startswith("Signature expired:") and msg.endswith("- 5 min.)"), msg)
finally:
    botocore.auth.get_current_datetime = real_now

expect_error("an action keyplane does not have", "UnsupportedOperationException",
             kms.describe_custom_key_stores)


def signed_target(target):
    """POST {} to the endpoint with X-Amz-Target `target`, signed as boto3 signs: (status, body)."""
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=ENDPOINT + "/", data=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    botocore.auth.SigV4Auth(boto3.Session().get_credentials(), "kms", REGION).add_auth(req)
    prepared = req.prepare()
    ctx = ssl.create_default_context(cafile=CA)
    try:
        with urllib.request.urlopen(urllib.request.Request(
                prepared.url, data=prepared.body, headers=dict(prepared.headers)), context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# Every action of the installed botocore's model is either served or refused as one keyplane
# does not serve; none is unknown.
for operation in service.operation_names:
    if operation == "CreateKey":  # served (`{}` would make a key)
        continue
    status, body = signed_target(f"TrentService.{operation}")
    check(f"{operation} is an action keyplane knows",
          body.get("__type") != "UnknownOperationException", (status, body))
for operation, call in [
    ("GetKeyLastUsage", lambda: raw.get_key_last_usage(KeyId=key)),
    ("Encapsulate", lambda: raw.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")),
    ("Decapsulate", lambda: raw.decapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM",
                                            SharedSecretCiphertextBlob=b"x")),
]:
    msg = expect_error(f"{operation}, not served", "UnsupportedOperationException", call)
    check(f"...says so ({operation})", operation in msg, msg)

for target in ["TrentService.NoSuchAction", "DynamoDB_20120810.ListTables"]:
    status, body = signed_target(target)
    check(f"{target} is no action of the API", status == 400 and
          body.get("__type") == "UnknownOperationException", (status, body))
print("all boto3 checks passed")
