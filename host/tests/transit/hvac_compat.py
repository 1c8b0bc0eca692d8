"""hvac against keyplane's Vault Transit front, on what Vault accepts or answers in a way a
client may rely on, one section at a time (each a test of host/tests/transit.rs, which runs
`hvac_compat.py <section>` with VAULT_ADDR, VAULT_TOKEN and VAULT_CACERT as for
hvac_transit.py):

  upsert    an encrypt that would create a key of a type that cannot encrypt is refused and
            creates nothing (Vault's path_encrypt.go), single and batch
  signing   the leniencies of Vault's path_sign_verify.go: salt_length as a string or a number,
            "hash"/"auto" in any case, ignored for keys that are not RSA-PSS; an empty
            hash_algorithm or signature_algorithm is the default; an HMAC verify takes
            hash_algorithm before the deprecated algorithm; signature_context (Enterprise's
            Ed25519ctx) refused; verify's signature-or-HMAC decided as pathVerifyWrite does
  hash      `hash` takes the 1 MiB its operation allows (the body limit of other endpoints
            stays)
  key-read  a key read has the fields Vault's formatKeyPolicy writes, and no others

hvac's methods check some parameters before sending (salt_length as a string, known
hash_algorithm values): what they refuse is sent with hvac's adapter, as the vault CLI or
Go's client would send it. Prints one line per check; any failure raises (non-zero exit)."""

import base64
import hashlib
import os
import sys

import hvac
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from hvac import exceptions

from hvac_common import ADDR, CA, TOKEN, b64, check, client, expect, raw_client, transit, unb64  # noqa: F401


def post(path, body):
    return client.adapter.post(f"/v1/transit/{path}", json=body)


def status(path, body):
    """POST without hvac raising on a non-2xx answer: its status."""
    r = raw_client.adapter.request("POST", f"/v1/transit/{path}", json=body, raise_exception=False)
    return r.status_code


def upsert():
    pt = b64(b"upserted")
    for t in ("ed25519", "ecdsa-p256", "rsa-2048", "hmac", "no-such-type"):
        name = f"up-{t}"
        expect(f"encrypt creating a {t} key is refused", exceptions.InvalidRequest,
               transit.encrypt_data, name, pt, type=t)
        expect(f"...and made no {t} key", exceptions.InvalidPath, transit.read_key, name)
        expect(f"a batch creating a {t} key is refused", exceptions.InvalidRequest,
               transit.encrypt_data, name, batch_input=[{"plaintext": pt}], type=t)
        expect(f"...and made no {t} key either", exceptions.InvalidPath, transit.read_key, name)
    for t in ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305"):
        c = transit.encrypt_data(f"up-{t}", pt, type=t)["data"]["ciphertext"]
        check(f"encrypt creates a {t} key", transit.read_key(f"up-{t}")["data"]["type"] == t)
        back = transit.decrypt_data(f"up-{t}", c)["data"]["plaintext"]
        check(f"...that decrypts what it encrypted", back == pt, back)
    # As Vault: `type` is for the key an encrypt creates; a key that exists encrypts whatever
    # it says.
    c = transit.encrypt_data("up-aes256-gcm96", pt, type="ed25519")["data"]["ciphertext"]
    check("type is ignored for a key that exists", c.startswith("vault:v1:"), c)


def signing():
    msg = b"signed leniently"
    M = b64(msg)
    transit.create_key("s-rsa", key_type="rsa-2048")
    transit.create_key("s-ec", key_type="ecdsa-p256")
    pem = transit.read_key("s-rsa")["data"]["keys"]["1"]["public_key"]
    rsa = serialization.load_pem_public_key(pem.encode())

    def pss(h, salt):
        return padding.PSS(mgf=padding.MGF1(h), salt_length=salt)

    def sig(s):
        return unb64(s.split(":", 2)[2])

    # salt_length: "hash"/"auto" in any case, a number as JSON or as a string (Go's
    # rsa.PSSSaltLengthEqualsHash is -1, PSSSaltLengthAuto 0), the hash's length in bytes.
    for salt, h, n in (("HASH", hashes.SHA256(), "sha2-256"), ("Auto", hashes.SHA256(), "sha2-256"),
                       (32, hashes.SHA256(), "sha2-256"), ("32", hashes.SHA256(), "sha2-256"),
                       (64, hashes.SHA512(), "sha2-512"), (-1, hashes.SHA256(), "sha2-256"),
                       (0, hashes.SHA256(), "sha2-256")):
        body = {"input": M, "hash_algorithm": n, "signature_algorithm": "pss", "salt_length": salt}
        s = post("sign/s-rsa", body)["data"]["signature"]
        rsa.verify(sig(s), msg, pss(h, h.digest_size), h)
        check(f"salt_length {salt!r} with {n} signs (verified by cryptography)", True)
        v = post("verify/s-rsa", dict(body, signature=s))["data"]["valid"]
        check(f"...and verifies with salt_length {salt!r}", v is True, v)
    for salt in (20, "20", 1000):
        expect(f"a salt_length keyplane does not make ({salt!r}) is refused", exceptions.InvalidRequest,
               post, "sign/s-rsa", {"input": M, "salt_length": salt})
    for salt in ("-2", "lots", "", 1.5):
        expect(f"salt_length {salt!r} is refused, whatever the key (as Vault)", exceptions.InvalidRequest,
               post, "sign/s-ec", {"input": M, "salt_length": salt})
    # Ignored where there is no PSS salt: pkcs1v15, ECDSA.
    s = post("sign/s-rsa", {"input": M, "signature_algorithm": "pkcs1v15", "salt_length": 20})["data"]["signature"]
    rsa.verify(sig(s), msg, padding.PKCS1v15(), hashes.SHA256())
    check("salt_length is ignored for pkcs1v15", True)
    ec_pem = transit.read_key("s-ec")["data"]["keys"]["1"]["public_key"]
    s = post("sign/s-ec", {"input": M, "salt_length": 20})["data"]["signature"]
    serialization.load_pem_public_key(ec_pem.encode()).verify(sig(s), msg, ec.ECDSA(hashes.SHA256()))
    check("salt_length is ignored for ECDSA", True)
    v = post("verify/s-ec", {"input": M, "signature": s, "salt_length": "20"})["data"]["valid"]
    check("...on verify too", v is True, v)

    # An empty hash_algorithm, algorithm or signature_algorithm is the default (sha2-256, pss).
    s = post("sign/s-rsa", {"input": M, "hash_algorithm": "", "algorithm": "", "signature_algorithm": ""})
    s = s["data"]["signature"]
    rsa.verify(sig(s), msg, pss(hashes.SHA256(), 32), hashes.SHA256())
    check("empty hash_algorithm and signature_algorithm sign with sha2-256 and pss", True)
    v = post("verify/s-rsa", {"input": M, "signature": s, "hash_algorithm": "", "signature_algorithm": ""})
    check("...and verify so", v["data"]["valid"] is True, v)
    s = post("sign/s-rsa", {"input": M, "hash_algorithm": "", "algorithm": "sha2-512"})["data"]["signature"]
    rsa.verify(sig(s), msg, pss(hashes.SHA512(), 64), hashes.SHA512())
    check("an empty hash_algorithm falls to algorithm, as in Vault", True)
    # Not marshaling_algorithm: Vault refuses an empty one ("invalid marshaling type").
    expect("an empty marshaling_algorithm is refused, as Vault", exceptions.InvalidRequest,
           post, "sign/s-ec", {"input": M, "marshaling_algorithm": ""})

    # HMAC verify: hash_algorithm before the deprecated algorithm (Vault PR #27211, OpenBao
    # #3668); generating reads algorithm, as Vault's hmac endpoint has no hash_algorithm.
    post("keys/s-mac", {"type": "hmac", "key_size": 64})
    mac = transit.generate_hmac("s-mac", M, algorithm="sha2-512")["data"]["hmac"]
    v = post("verify/s-mac", {"input": M, "hmac": mac, "hash_algorithm": "sha2-512", "algorithm": "sha2-256"})
    check("hmac verify takes hash_algorithm before algorithm", v["data"]["valid"] is True, v)
    v = post("verify/s-mac", {"input": M, "hmac": mac, "algorithm": "sha2-512"})
    check("...and algorithm alone", v["data"]["valid"] is True, v)
    v = transit.verify_signed_data("s-mac", M, hmac=mac, hash_algorithm="sha2-512")
    check("...and hvac's verify_signed_data", v["data"]["valid"] is True, v)

    # An empty input is a message, as in Vault (its path_hmac_test has an HMAC of ""): an
    # HMAC and an ed25519 signature of it (both were refused, 400 "1 to 4096 bytes").
    empty = post("hmac/s-mac/sha2-512", {"input": ""})["data"]["hmac"]
    check("an HMAC of an empty input", empty.startswith("vault:v1:") and empty != mac, empty)
    v = post("verify/s-mac/sha2-512", {"input": "", "hmac": empty})["data"]["valid"]
    check("...that verifies", v is True, v)
    v = post("verify/s-mac/sha2-512", {"input": M, "hmac": empty})["data"]["valid"]
    check("...and only for the empty input", v is False, v)
    transit.create_key("s-ed", key_type="ed25519")
    raw_public = base64.b64decode(transit.read_key("s-ed")["data"]["keys"]["1"]["public_key"])
    s = post("sign/s-ed", {"input": ""})["data"]["signature"]
    ed25519.Ed25519PublicKey.from_public_bytes(raw_public).verify(sig(s), b"")
    check("an ed25519 signature of an empty input (verified by cryptography)", True)

    # Vault Enterprise's signature_context (Ed25519ctx/ph) is refused, never dropped: a plain
    # signature would verify where the caller meant a context to be needed.
    expect("signature_context is refused on sign", exceptions.InvalidRequest,
           post, "sign/s-ed", {"input": M, "signature_context": b64(b"ctx")})
    s = post("sign/s-ed", {"input": M})["data"]["signature"]
    expect("...and on verify", exceptions.InvalidRequest,
           post, "verify/s-ed", {"input": M, "signature": s, "signature_context": b64(b"ctx")})
    r = post("sign/s-ed", {"batch_input": [{"input": M, "signature_context": b64(b"ctx")}]})
    item = r["data"]["batch_results"][0]
    check("...and in a batch item (its own error, as Vault's sign batches)",
          "signature_context" in item.get("error", "") and not item.get("signature"), item)

    # verify decides signature or HMAC as Vault's pathVerifyWrite: a signature wins in a single
    # request that has both; a batch mixing them, or missing either, is refused as a whole.
    v = post("verify/s-ed", {"input": M, "signature": s, "hmac": mac})["data"]["valid"]
    check("a request with a signature and an hmac verifies the signature", v is True, v)
    for batch, why in (([{"input": M, "signature": s}, {"input": M, "hmac": mac}], "mixing both"),
                       ([{"input": M, "signature": s}, {"input": M}], "missing a signature"),
                       ([{"input": M, "hmac": mac}, {"input": M}], "missing an hmac"),
                       ([{"input": M}], "with neither")):
        expect(f"a verify batch {why} is refused", exceptions.InvalidRequest,
               post, "verify/s-ed", {"batch_input": batch})
    expect("a verify with neither is refused", exceptions.InvalidRequest,
           post, "verify/s-ed", {"input": M})


def hash_():
    for n in (48 * 1024, 64 * 1024, 1 << 20):
        data = os.urandom(n)
        got = transit.hash_data(b64(data), algorithm="sha2-256")["data"]["sum"]
        check(f"hash of {n} bytes", got == hashlib.sha256(data).hexdigest(), got)
    # Wrapped as a shell's base64 wraps (76 characters a line), which Vault reads.
    data = os.urandom(1 << 20)
    text = b64(data)
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    got = post("hash/sha2-512", {"input": wrapped})["data"]["sum"]
    check("hash of 1 MiB as wrapped base64", got == hashlib.sha512(data).hexdigest(), got)
    e = expect("one byte past the operation's limit is refused by it", exceptions.InvalidRequest,
               transit.hash_data, b64(os.urandom((1 << 20) + 1)))
    check("...saying so", "at most" in str(e), e)
    # Past base64 of 1 MiB (with its line breaks) and the JSON around it: the body limit.
    check("a body far past the operation's limit is refused unread (413)",
          status("hash", {"input": "A" * (2 << 20)}) == 413)
    # Other endpoints keep theirs (64 KiB by default; those that batch, the batch limit).
    transit.create_key("h-key")
    for path in ("random", "datakey/plaintext/h-key", "keys/h-key/config"):
        got = status(path, {"context": b64(os.urandom(100 * 1024))})
        check(f"{path} keeps its body limit (413)", got == 413, got)


def key_read():
    for t in ("ed25519", "ecdsa-p256", "rsa-2048", "aes256-gcm96"):
        transit.create_key(f"r-{t}", key_type=t)
    post("keys/r-hmac", {"type": "hmac"})
    transit.create_key("r-derived", derived=True)
    for t in ("ed25519", "ecdsa-p256", "rsa-2048"):
        d = transit.read_key(f"r-{t}")["data"]
        entry = d["keys"]["1"]
        check(f"{t}: each version has certificate_chain \"\"", entry.get("certificate_chain") == "", entry)
        check(f"{t}: and name, public_key, creation_time",
              {"name", "public_key", "creation_time"} <= set(entry), entry)
    d = transit.read_key("r-hmac")["data"]
    check("hmac: no keys map, as Vault writes none", "keys" not in d, d)
    check("hmac: latest_version", d["latest_version"] == 1, d)
    d = transit.read_key("r-aes256-gcm96")["data"]
    check("a key that is not derived has no convergent_encryption", "convergent_encryption" not in d, d)
    d = transit.read_key("r-derived")["data"]
    check("a derived key has convergent_encryption false", d.get("convergent_encryption") is False, d)
    # Versions below min_decryption_version are not in `keys` (Vault archives them), and come
    # back when it is lowered.
    for _ in range(2):
        transit.rotate_key("r-aes256-gcm96")
    transit.update_key_configuration("r-aes256-gcm96", min_decryption_version=3)
    d = transit.read_key("r-aes256-gcm96")["data"]
    check("keys from min_decryption_version on", sorted(d["keys"]) == ["3"], d)
    transit.update_key_configuration("r-aes256-gcm96", min_decryption_version=2)
    d = transit.read_key("r-aes256-gcm96")["data"]
    check("...and back when it is lowered", sorted(d["keys"]) == ["2", "3"], d)
    # An RSA key made natively to encrypt (RSA-OAEP): its versions as Vault shows RSA keys, and
    # no Transit encryption or signing claimed (it claimed encryption, which was refused).
    native = requests.post(f"{ADDR}/v1/create-key", verify=CA,
                           headers={"Authorization": f"Bearer {TOKEN}"},
                           json={"key_spec": "RSA_2048", "key_usage": "encrypt-decrypt",
                                 "alias": "alias/r-oaep"})
    check("a native RSA encryption key", native.status_code == 200, native.text)
    d = transit.read_key("r-oaep")["data"]
    claimed = [f for f in ("supports_encryption", "supports_decryption", "supports_derivation",
                           "supports_signing") if d[f]]
    check("rsa encryption key: claims nothing the front does not serve", claimed == [], d)
    check("...and lists its versions with their public keys",
          d["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----"), d)


SECTIONS = {"upsert": upsert, "signing": signing, "hash": hash_, "key-read": key_read}
SECTIONS[sys.argv[1]]()
print(f"all {sys.argv[1]} checks passed")
