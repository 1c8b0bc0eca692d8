"""The other side of keyplane's finite-field Diffie-Hellman (FFDHE_2048/3072, RFC 7919), with
Python's `cryptography` (host/tests/algorithms.rs).

    agree PUBLIC_KEY   a fresh key pair in the group of the PEM public key in file
                       PUBLIC_KEY (keyplane's), and the shared secret with it; JSON: the
                       fresh public key (PEM; cryptography writes the X9.42 form, with q)
                       and the secret (base64)
"""

import base64
import json
import sys
import warnings

from cryptography.hazmat.primitives import serialization

# cryptography marks finite-field DH deprecated; the warning would only clutter test output.
warnings.simplefilter("ignore")


def main(argv):
    if argv[1] != "agree":
        sys.exit(f"unknown command {argv[1]}")
    theirs = serialization.load_pem_public_key(open(argv[2], "rb").read())
    mine = theirs.parameters().generate_private_key()
    secret = mine.exchange(theirs)
    public = mine.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    print(
        json.dumps(
            {
                "public_key": public.decode(),
                "shared_secret": base64.b64encode(secret).decode(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv)
