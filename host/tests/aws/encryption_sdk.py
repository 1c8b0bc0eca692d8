"""The AWS Encryption SDK (with its Material Providers Library) encrypting and decrypting a
message with an AWS KMS keyring whose boto3 client points at keyplane. Run by
host/tests/aws_kms.rs; KEY_ARN is the key's ARN. The SDK checks that Decrypt answers with the
key ARN it asked for."""

import os

import aws_encryption_sdk
from cryptography.exceptions import InvalidSignature
import boto3
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput
from aws_encryption_sdk import CommitmentPolicy

key_arn = os.environ["KEY_ARN"]
kms = boto3.client("kms")
sdk = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
providers = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
keyring = providers.create_aws_kms_keyring(
    input=CreateAwsKmsKeyringInput(kms_key_id=key_arn, kms_client=kms)
)

message = os.urandom(100_000)
context = {"purpose": "esdk-test", "tenant": "acme"}
ciphertext, header = sdk.encrypt(source=message, keyring=keyring, encryption_context=context)
assert message not in ciphertext
decrypted, dheader = sdk.decrypt(source=ciphertext, keyring=keyring)
assert decrypted == message, "round trip"
for k, v in context.items():
    assert dheader.encryption_context[k] == v, dheader.encryption_context
# The message's data key is wrapped by keyplane: one encrypted data key, naming the key ARN.
assert len(header.encrypted_data_keys) == 1
edk = next(iter(header.encrypted_data_keys))
assert edk.key_provider.provider_id == "aws-kms", edk.key_provider
assert edk.key_provider.key_info.decode() == key_arn, edk.key_provider.key_info

# A tampered message is refused.
tampered = bytearray(ciphertext)
tampered[-40] ^= 1
try:
    sdk.decrypt(source=bytes(tampered), keyring=keyring)
    raise AssertionError("a tampered message decrypted")
except (aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError, InvalidSignature):
    pass
print("esdk ok")
