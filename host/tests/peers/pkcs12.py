"""PKCS#12 bundles on the other side of keyplane's export-key and import-key-material, made
and opened by Python's `cryptography` (host/tests/import_export.rs).

    open BUNDLE PASSWORD MESSAGE   JSON: the bundle's key (its public half, PEM), its
                                   certificate's public key and subject, how it is
                                   protected, and a signature of the file MESSAGE by the key
                                   (ECDSA or RSASSA-PKCS1-v1_5, SHA-256), base64
    make SPEC PASSWORD OUT [legacy|rounds=N]
                                   a fresh key pair of SPEC and a self-signed certificate
                                   bundled into OUT (AES-256-CBC / HMAC-SHA-256; legacy:
                                   3DES / HMAC-SHA-1); prints the public key, PEM
    certify PUBLIC_KEY             a certificate of the PEM public key in file PUBLIC_KEY,
                                   issued by a throwaway CA; PEM
"""

import base64
import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID


def spki(key):
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(key, message):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def certificate(subject_key, issuer_key, name, issuer_name):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


def generate(spec):
    if spec.startswith("RSA_"):
        return rsa.generate_private_key(65537, int(spec[4:]))
    curve = {"ECC_NIST_P256": ec.SECP256R1(), "ECC_NIST_P384": ec.SECP384R1()}[spec]
    return ec.generate_private_key(curve)


def main(argv):
    command = argv[1]
    if command == "open":
        bundle = open(argv[2], "rb").read()
        key, cert, _ = pkcs12.load_key_and_certificates(bundle, argv[3].encode())
        message = open(argv[4], "rb").read()
        print(
            json.dumps(
                {
                    "public_key": spki(key.public_key()),
                    "certificate_public_key": spki(cert.public_key()),
                    "certificate_subject": cert.subject.rfc4514_string(),
                    "signature": base64.b64encode(sign(key, message)).decode(),
                }
            )
        )
    elif command == "make":
        spec, password, out = argv[2], argv[3].encode(), argv[4]
        options = argv[5:]
        key = generate(spec)
        cert = certificate(key.public_key(), key, "bundled", "bundled")
        if "legacy" in options:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(2048)
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())
                .build(password)
            )
        else:
            rounds = [int(o[7:]) for o in options if o.startswith("rounds=")]
            builder = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
            )
            if rounds:
                builder = builder.kdf_rounds(rounds[0])
            encryption = builder.build(password)
        bundle = pkcs12.serialize_key_and_certificates(b"bundled", key, cert, None, encryption)
        open(out, "wb").write(bundle)
        print(spki(key.public_key()), end="")
    elif command == "certify":
        public = serialization.load_pem_public_key(open(argv[2], "rb").read())
        ca = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(public, ca, "certified", "throwaway CA")
        print(cert.public_bytes(serialization.Encoding.PEM).decode(), end="")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
