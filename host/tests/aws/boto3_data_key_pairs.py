"""boto3 against keyplane's AWS KMS front: GenerateDataKeyPair and
GenerateDataKeyPairWithoutPlaintext for every KeyPairSpec keyplane has, each pair checked with
`cryptography`, and each error AWS clients name, from a real trigger. Run by
host/tests/data_key_pairs.rs with the environment of tests/common/aws.rs (credentials of a
tenant admin, the endpoint, the CA bundle) and:

  ACCOUNT     the tenant's account id
  MEMBER_KEY  "<id>:<secret>" of an access key of a member of the tenant (no grants)

Prints one line per check; any failure raises (non-zero exit)."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ACCOUNT = os.environ["ACCOUNT"]
REGION = os.environ["AWS_DEFAULT_REGION"]

# No retries: an error must come back as it was answered, once.
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client("kms", config=NO_RETRY)
raw = boto3.client(
    "kms", config=Config(parameter_validation=False, retries={"max_attempts": 1})
)

SPECS = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384"]
CURVES = {"ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1}


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def expect_error(name, code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        message = e.response["Error"].get("Message", "")
        check(name, got == code, f"expected {code}, got {got}: {message}")
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(f"{name} (status)", status == 400, f"status {status}")
        return message
    raise AssertionError(f"{name}: {call.__name__} did not fail")


def arn(key_id):
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(name, spec, private_der, public_der):
    """The PKCS#8 private key loads, is of the spec, has the public key, and signs what the
    public key verifies."""
    private = serialization.load_der_private_key(private_der, password=None)
    public = serialization.load_der_public_key(public_der)
    check(f"{name}: the private key's public key is PublicKey", spki(private.public_key()) == public_der)
    # PKCS#8 (what AWS returns), not a traditional SEC1/PKCS#1 encoding.
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    message = f"signed with a {spec} data key pair".encode()
    if spec.startswith("RSA_"):
        check(f"{name}: an RSA key", isinstance(private, rsa.RSAPrivateKey))
        check(f"{name}: of {spec[4:]} bits", private.key_size == int(spec[4:]), private.key_size)
        check(f"{name}: PKCS#8 as written", pkcs8 == private_der)
        signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        check(f"{name}: an EC key", isinstance(private, ec.EllipticCurvePrivateKey))
        check(f"{name}: on its curve", isinstance(private.curve, CURVES[spec]), private.curve.name)
        signature = private.sign(message, ec.ECDSA(hashes.SHA256()))
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    check(f"{name}: signs what PublicKey verifies", True)


key = kms.create_key(Description="data key pairs")["KeyMetadata"]["KeyId"]
ec_ctx = {"purpose": "data-key-pair"}

for spec in SPECS:
    pair = kms.generate_data_key_pair(KeyId=key, KeyPairSpec=spec, EncryptionContext=ec_ctx)
    check(f"{spec}: names the key by ARN", pair["KeyId"] == arn(key), pair["KeyId"])
    check(f"{spec}: names its spec", pair["KeyPairSpec"] == spec, pair["KeyPairSpec"])
    check_pair(spec, spec, pair["PrivateKeyPlaintext"], pair["PublicKey"])
    opened = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext=ec_ctx)
    check(f"{spec}: Decrypt opens PrivateKeyCiphertextBlob",
          opened["Plaintext"] == pair["PrivateKeyPlaintext"] and opened["KeyId"] == arn(key))
    expect_error(f"{spec}: Decrypt without its encryption context", "InvalidCiphertextException",
                 kms.decrypt, CiphertextBlob=pair["PrivateKeyCiphertextBlob"])

    bare = kms.generate_data_key_pair_without_plaintext(
        KeyId=arn(key), KeyPairSpec=spec, EncryptionContext=ec_ctx)
    check(f"{spec} without plaintext: none", "PrivateKeyPlaintext" not in bare, sorted(bare))
    check(f"{spec} without plaintext: names key and spec",
          bare["KeyId"] == arn(key) and bare["KeyPairSpec"] == spec)
    check(f"{spec} without plaintext: a new pair", bare["PublicKey"] != pair["PublicKey"])
    opened = kms.decrypt(CiphertextBlob=bare["PrivateKeyCiphertextBlob"], EncryptionContext=ec_ctx)
    check_pair(f"{spec} without plaintext", spec, opened["Plaintext"], bare["PublicKey"])

kms.create_alias(AliasName="alias/pairs", TargetKeyId=key)
pair = kms.generate_data_key_pair(KeyId="alias/pairs", KeyPairSpec="ECC_NIST_P256")
check("by alias", pair["KeyId"] == arn(key))

# --- errors -------------------------------------------------------------------------------
for spec in ["ECC_NIST_P521", "ECC_SECG_P256K1", "SM2"]:
    expect_error(f"{spec} is not served", "UnsupportedOperationException",
                 kms.generate_data_key_pair, KeyId=key, KeyPairSpec=spec)
    expect_error(f"{spec} is not served (without plaintext)", "UnsupportedOperationException",
                 kms.generate_data_key_pair_without_plaintext, KeyId=key, KeyPairSpec=spec)
msg = expect_error("a KeyPairSpec outside the model", "ValidationException",
                   raw.generate_data_key_pair, KeyId=key, KeyPairSpec="RSA_1024")
check("its message is AWS's",
      msg.startswith("1 validation error detected: Value at 'keyPairSpec' failed to satisfy "
                     "constraint: Member must satisfy enum value set: [RSA_2048, "), msg)
expect_error("no KeyPairSpec (client checks off)", "ValidationException",
             raw.generate_data_key_pair, KeyId=key)
expect_error("no KeyId (client checks off)", "ValidationException",
             raw.generate_data_key_pair_without_plaintext, KeyPairSpec="RSA_2048")
expect_error("a Nitro Enclaves recipient", "UnsupportedOperationException",
             kms.generate_data_key_pair, KeyId=key, KeyPairSpec="RSA_2048",
             Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                        "AttestationDocument": b"not an attestation"})
expect_error("dry run", "DryRunOperationException",
             kms.generate_data_key_pair, KeyId=key, KeyPairSpec="RSA_4096", DryRun=True)
expect_error("dry run (without plaintext)", "DryRunOperationException",
             kms.generate_data_key_pair_without_plaintext, KeyId=key, KeyPairSpec="RSA_4096",
             DryRun=True)

signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
expect_error("an asymmetric key", "InvalidKeyUsageException",
             kms.generate_data_key_pair, KeyId=signer, KeyPairSpec="ECC_NIST_P256")
mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
expect_error("an HMAC key", "InvalidKeyUsageException",
             kms.generate_data_key_pair_without_plaintext, KeyId=mac, KeyPairSpec="RSA_2048")

kms.disable_key(KeyId=key)
expect_error("a disabled key", "DisabledException",
             kms.generate_data_key_pair, KeyId=key, KeyPairSpec="ECC_NIST_P256")
kms.enable_key(KeyId=key)
expect_error("an unknown key", "NotFoundException",
             kms.generate_data_key_pair, KeyId="k-00000000000000000000000000000000",
             KeyPairSpec="ECC_NIST_P256")

member_id, member_secret = os.environ["MEMBER_KEY"].split(":", 1)
member = boto3.client("kms", aws_access_key_id=member_id, aws_secret_access_key=member_secret,
                      config=NO_RETRY)
# A key its caller may not even describe is answered as if it did not exist.
expect_error("a member without a grant does not see the key", "NotFoundException",
             member.generate_data_key_pair, KeyId=arn(key), KeyPairSpec="ECC_NIST_P256")
print("all boto3 data key pair checks passed")
