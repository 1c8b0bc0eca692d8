"""hvac against keyplane's Vault Transit front: every endpoint keyplane serves, the key types
(aes256-gcm96, ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, hmac), batches with per-item
errors, deletion under the shipped guard, and the exceptions hvac raises. Run by
host/tests/transit.rs with:

  VAULT_ADDR      the server (https://localhost:<port>)
  VAULT_TOKEN     a tenant admin's keyplane bearer token
  VAULT_CACERT    the server's certificate
  MEMBER_TOKEN    a member of the same tenant (no grants)
  APPROVER_TOKEN  a second admin of the tenant (approves deletions on the native API)

Signatures are verified independently with `cryptography` against the public keys read_key
returns. Prints one line per check; any failure raises (non-zero exit)."""

import base64
import hashlib
import json
import os
import ssl
import urllib.request

import hvac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hvac import exceptions

from hvac_common import ADDR, CA, TOKEN, b64, check, client, expect, raw_client, transit, unb64  # noqa: F401


def native(op, token, body):
    ctx = ssl.create_default_context(cafile=CA)
    req = urllib.request.Request(
        f"{ADDR}/v1/{op}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.loads(r.read())


def raw(path, body):
    """POST without hvac raising on a non-2xx answer: (status, JSON)."""
    r = raw_client.adapter.request("POST", f"/v1/transit/{path}", json=body, raise_exception=False)
    check(f"{path} answers application/json", r.headers.get("Content-Type") == "application/json",
          r.headers.get("Content-Type"))
    return r.status_code, r.json()


def public_key(name, version="1"):
    d = transit.read_key(name)["data"]
    text = d["keys"][version]["public_key"]
    if d["type"] == "ed25519":
        # Vault shows an ed25519 public key as base64 of its raw bytes, others as PEM.
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
    return serialization.load_pem_public_key(text.encode())


def sig_bytes(sig, jws=False):
    check("signature is vault:v1:", sig.startswith("vault:v1:"), sig)
    payload = sig.split(":", 2)[2]
    if jws:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return unb64(payload)


# --- authentication -------------------------------------------------------------------------
check("is_authenticated", client.is_authenticated())
check("sys.is_initialized", client.sys.is_initialized() is True)
mounts = client.sys.list_mounted_secrets_engines()
check("sys.list_mounted_secrets_engines", mounts["data"]["transit/"]["type"] == "transit", mounts)
enabled = client.sys.enable_secrets_engine("transit")
check("enable_secrets_engine of the mount there is: 204", enabled.status_code == 204, enabled)
bad = hvac.Client(url=ADDR, token="not-a-token", verify=CA)
check("an invalid token is not authenticated", not bad.is_authenticated())

# --- keys: create, read, list -----------------------------------------------------------------
TYPES = ["aes256-gcm96", "ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-2048"]
for t in TYPES:
    transit.create_key(f"k-{t}", key_type=t)
# key_size 0 is "the default", as Terraform's provider sends it.
client.adapter.post("/v1/transit/keys/k-hmac", json={"type": "hmac", "key_size": 0})
status, body = raw("keys/k-sized", {"type": "aes256-gcm96", "key_size": 32})
check("key_size on a non-hmac key is refused, as Vault does", status == 400 and "HMAC" in body["errors"][0], body)
for t in TYPES + ["hmac"]:
    d = transit.read_key(f"k-{t}")["data"]
    check(f"read {t}: type", d["type"] == t, d["type"])
    # As Vault: versions are listed for encryption and signing keys, none for hmac keys.
    check(f"read {t}: one version", list(d.get("keys", ["1"])) == ["1"] and ("keys" in d) == (t != "hmac"), d)
    check(f"read {t}: latest_version", d["latest_version"] == 1, d)
    check(f"read {t}: min_decryption_version", d["min_decryption_version"] == 1, d)
    check(f"read {t}: deletion not allowed", d["deletion_allowed"] is False, d)
    encrypts = t == "aes256-gcm96"
    signs = t not in ("aes256-gcm96", "hmac")
    check(f"read {t}: supports_encryption", d["supports_encryption"] is encrypts, d)
    check(f"read {t}: supports_decryption", d["supports_decryption"] is encrypts, d)
    check(f"read {t}: supports_signing", d["supports_signing"] is signs, d)
    check(f"read {t}: key_size for hmac only", d.get("key_size") == (32 if t == "hmac" else None), d)
    if t == "ed25519":
        # As Vault: base64 of the 32 raw bytes, not PEM.
        check(f"read {t}: public key", len(base64.b64decode(d["keys"]["1"]["public_key"])) == 32, d)
    elif signs:
        check(f"read {t}: public key", "BEGIN PUBLIC KEY" in d["keys"]["1"]["public_key"], d)
    elif t != "hmac":
        check(f"read {t}: creation time", isinstance(d["keys"]["1"], int), d["keys"])
again = transit.create_key("k-aes256-gcm96")
check("create of an existing key answers it with a warning",
      again["data"]["latest_version"] == 1 and "already exists" in " ".join(again["warnings"]),
      again)
# aes128-gcm96 and chacha20-poly1305 (hvac 2.4's create_key does not know them: a raw write,
# as the vault CLI would send it): keyplane's AES_128_GCM and CHACHA20_POLY1305 envelope keys.
for t, spec in [("aes128-gcm96", "AES_128_GCM"), ("chacha20-poly1305", "CHACHA20_POLY1305")]:
    client.adapter.post(f"/v1/transit/keys/k-{t}", json={"type": t})
    d = transit.read_key(f"k-{t}")["data"]
    check(f"read {t}: type and spec", d["type"] == t and d["keyplane"]["key_spec"] == spec, d)
    check(f"read {t}: encrypts", d["supports_encryption"] is True, d)
    c = transit.encrypt_data(f"k-{t}", b64(b"small and fast"), context=b64(b"c"))["data"]
    check(f"{t}: encrypt", c["ciphertext"].startswith("vault:v1:"), c)
    back = transit.decrypt_data(f"k-{t}", c["ciphertext"], context=b64(b"c"))["data"]
    check(f"{t}: decrypt", unb64(back["plaintext"]) == b"small and fast", back)
    transit.rotate_key(f"k-{t}")
    r = transit.rewrap_data(f"k-{t}", c["ciphertext"], context=b64(b"c"))["data"]
    check(f"{t}: rewrap to v2", r["ciphertext"].startswith("vault:v2:"), r)
expect("chacha20-poly1305 in the HSM is refused", exceptions.InvalidRequest,
       client.adapter.post, "/v1/transit/keys/k-chacha-hsm",
       json={"type": "chacha20-poly1305", "protection": "hsm"})
TYPES_ALL = TYPES + ["hmac", "aes128-gcm96", "chacha20-poly1305"]
names = transit.list_keys()["data"]["keys"]
check("list_keys", set(f"k-{t}" for t in TYPES_ALL) <= set(names), names)
check("list via client.list", client.list("transit/keys")["data"]["keys"] == names)

# --- encrypt / decrypt / rotate / rewrap / config -------------------------------------------
K = "k-aes256-gcm96"
pt = b"attack at dawn"
c1 = transit.encrypt_data(K, b64(pt))["data"]
check("encrypt: vault:v1:", c1["ciphertext"].startswith("vault:v1:") and c1["key_version"] == 1, c1)
check("decrypt", unb64(transit.decrypt_data(K, c1["ciphertext"])["data"]["plaintext"]) == pt)
ctx = b64(b"tenant-7")
cc = transit.encrypt_data(K, b64(pt), context=ctx)["data"]["ciphertext"]
check("decrypt with context",
      unb64(transit.decrypt_data(K, cc, context=ctx)["data"]["plaintext"]) == pt)
expect("decrypt with the wrong context", exceptions.InvalidRequest,
       transit.decrypt_data, K, cc, context=b64(b"tenant-8"))
expect("decrypt without the context", exceptions.InvalidRequest, transit.decrypt_data, K, cc)
ad = b64(b"row 42")
ca = transit.encrypt_data(K, b64(pt), associated_data=ad)["data"]["ciphertext"]
check("decrypt with associated_data",
      unb64(transit.decrypt_data(K, ca, associated_data=ad)["data"]["plaintext"]) == pt)
expect("decrypt without associated_data", exceptions.InvalidRequest, transit.decrypt_data, K, ca)

transit.create_key("derived", derived=True)
check("derived key reads derived", transit.read_key("derived")["data"]["derived"] is True)
expect("derived key: encrypt without context", exceptions.InvalidRequest,
       transit.encrypt_data, "derived", b64(pt))
cd = transit.encrypt_data("derived", b64(pt), context=ctx)["data"]["ciphertext"]
check("derived key: decrypt with context",
      unb64(transit.decrypt_data("derived", cd, context=ctx)["data"]["plaintext"]) == pt)

rotated = transit.rotate_key(K)
check("rotate answers the key", rotated["data"]["latest_version"] == 2, rotated)
d = transit.read_key(K)["data"]
check("read after rotate", d["latest_version"] == 2 and sorted(d["keys"]) == ["1", "2"], d)
c2 = transit.encrypt_data(K, b64(pt))["data"]
check("encrypt after rotate: vault:v2:", c2["ciphertext"].startswith("vault:v2:"), c2)
rw = transit.rewrap_data(K, c1["ciphertext"])["data"]
check("rewrap to v2", rw["ciphertext"].startswith("vault:v2:") and rw["key_version"] == 2, rw)
check("rewrapped decrypts", unb64(transit.decrypt_data(K, rw["ciphertext"])["data"]["plaintext"]) == pt)
rwc = transit.rewrap_data(K, cc, context=ctx)["data"]["ciphertext"]
check("rewrap with context", unb64(transit.decrypt_data(K, rwc, context=ctx)["data"]["plaintext"]) == pt)
expect("key_version of an older version on encrypt is refused", exceptions.InvalidRequest,
       transit.encrypt_data, K, b64(pt), key_version=1)
pinned = transit.encrypt_data(K, b64(pt), key_version=2)["data"]
check("key_version of the latest version encrypts with it", pinned["key_version"] == 2, pinned)
pinned = transit.rewrap_data(K, c1["ciphertext"], key_version=2)["data"]
check("...and rewraps to it", pinned["key_version"] == 2, pinned)

cfg = transit.update_key_configuration(K, min_decryption_version=2, auto_rotate_period="720h")
d = cfg["data"]
check("config: min_decryption_version", d["min_decryption_version"] == 2, d)
check("config: auto_rotate_period 720h", d["auto_rotate_period"] == 30 * 86400, d)
d = transit.read_key(K)["data"]
check("read after config", d["min_decryption_version"] == 2 and d["auto_rotate_period"] == 2592000, d)
expect("v1 ciphertext below min_decryption_version", exceptions.InvalidRequest,
       transit.decrypt_data, K, c1["ciphertext"])
expect("auto_rotate_period of hours is refused", exceptions.InvalidRequest,
       transit.update_key_configuration, K, auto_rotate_period="1h")
expect("min_encryption_version is refused", exceptions.InvalidRequest,
       transit.update_key_configuration, K, min_encryption_version=3)
expect("trim is refused", exceptions.InvalidRequest,
       client.adapter.post, f"/v1/transit/keys/{K}/trim", json={"min_available_version": 2})
expect("convergent encryption is refused", exceptions.InvalidRequest,
       transit.create_key, "convergent", derived=True, convergent_encryption=True)

# --- data keys --------------------------------------------------------------------------------
for bits in (128, 256, 512):
    dk = transit.generate_data_key(K, key_type="plaintext", bits=bits)["data"]
    key = unb64(dk["plaintext"])
    check(f"datakey plaintext {bits} bits", len(key) == bits // 8, len(key))
    check(f"datakey {bits}: ciphertext decrypts to it",
          unb64(transit.decrypt_data(K, dk["ciphertext"])["data"]["plaintext"]) == key)
wk = transit.generate_data_key(K, key_type="wrapped", bits=256)["data"]
check("datakey wrapped has no plaintext", "plaintext" not in wk or wk["plaintext"] is None, wk)
check("datakey wrapped decrypts to 32 bytes",
      len(unb64(transit.decrypt_data(K, wk["ciphertext"])["data"]["plaintext"])) == 32)
dkc = transit.generate_data_key(K, key_type="plaintext", context=ctx)["data"]
check("datakey with context", unb64(
    transit.decrypt_data(K, dkc["ciphertext"], context=ctx)["data"]["plaintext"]) == unb64(dkc["plaintext"]))

# --- sign / verify ----------------------------------------------------------------------------
msg = b"the message"
M = b64(msg)
for t, hash_name, h in (("ecdsa-p256", "sha2-256", hashes.SHA256()),
                        ("ecdsa-p384", "sha2-384", hashes.SHA384())):
    name = f"k-{t}"
    pub = public_key(name)
    s = transit.sign_data(name, M, hash_algorithm=hash_name)["data"]["signature"]
    pub.verify(sig_bytes(s), msg, ec.ECDSA(h))
    check(f"{t} asn1 signature verifies with cryptography", True)
    check(f"{t} asn1 verify", transit.verify_signed_data(
        name, M, signature=s, hash_algorithm=hash_name)["data"]["valid"] is True)
    j = transit.sign_data(name, M, hash_algorithm=hash_name, marshaling_algorithm="jws")["data"]["signature"]
    rs = sig_bytes(j, jws=True)
    n = len(rs) // 2
    check(f"{t} jws is r||s", n == (32 if t == "ecdsa-p256" else 48), len(rs))
    pub.verify(encode_dss_signature(int.from_bytes(rs[:n], "big"), int.from_bytes(rs[n:], "big")),
               msg, ec.ECDSA(h))
    check(f"{t} jws signature verifies with cryptography", True)
    check(f"{t} jws verify", transit.verify_signed_data(
        name, M, signature=j, hash_algorithm=hash_name, marshaling_algorithm="jws")["data"]["valid"] is True)
    check(f"{t} wrong message → valid False", transit.verify_signed_data(
        name, b64(b"another"), signature=s, hash_algorithm=hash_name)["data"]["valid"] is False)
expect("ecdsa-p256 with sha2-512 is refused", exceptions.InvalidRequest,
       transit.sign_data, "k-ecdsa-p256", M, hash_algorithm="sha2-512")

pub = public_key("k-rsa-2048")
for alg, pad in (("pss", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=padding.PSS.DIGEST_LENGTH)),
                 ("pkcs1v15", padding.PKCS1v15())):
    s = transit.sign_data("k-rsa-2048", M, hash_algorithm="sha2-256", signature_algorithm=alg)["data"]["signature"]
    pub.verify(sig_bytes(s), msg, pad, hashes.SHA256())
    check(f"rsa {alg} signature verifies with cryptography", True)
    check(f"rsa {alg} verify", transit.verify_signed_data(
        "k-rsa-2048", M, signature=s, hash_algorithm="sha2-256", signature_algorithm=alg)["data"]["valid"] is True)

# As Vault: an input of any length (the front hashes it; keyplane signs the digest), and JWS
# marshaling for RSA too (the signature in unpadded URL-safe base64).
big = os.urandom(10_000)
s = transit.sign_data("k-rsa-2048", b64(big), hash_algorithm="sha2-512",
                      signature_algorithm="pkcs1v15", marshaling_algorithm="jws")["data"]["signature"]
pub.verify(sig_bytes(s, jws=True), big, padding.PKCS1v15(), hashes.SHA512())
check("rsa signs 10 kB as jws", transit.verify_signed_data(
    "k-rsa-2048", b64(big), signature=s, hash_algorithm="sha2-512", signature_algorithm="pkcs1v15",
    marshaling_algorithm="jws")["data"]["valid"] is True)
s = transit.sign_data("k-ecdsa-p256", b64(big))["data"]["signature"]
public_key("k-ecdsa-p256").verify(sig_bytes(s), big, ec.ECDSA(hashes.SHA256()))
check("ecdsa signs 10 kB", True)

expect("rsa pss with a salt_length other than hash/auto is refused", exceptions.InvalidRequest,
       transit.sign_data, "k-rsa-2048", M, signature_algorithm="pss", salt_length="20")
s = transit.sign_data("k-rsa-2048", M, signature_algorithm="pss", salt_length="auto")["data"]["signature"]
pub.verify(sig_bytes(s), msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256())
check("rsa pss salt_length auto signs with the hash's length", True)

s = transit.sign_data("k-ed25519", M)["data"]["signature"]
public_key("k-ed25519").verify(sig_bytes(s), msg)
check("ed25519 signature verifies with cryptography", True)
check("ed25519 verify", transit.verify_signed_data("k-ed25519", M, signature=s)["data"]["valid"] is True)
sig = bytearray(sig_bytes(s))
sig[0] ^= 1
wrong = "vault:v1:" + b64(bytes(sig))
check("a wrong signature → valid False",
      transit.verify_signed_data("k-ed25519", M, signature=wrong)["data"]["valid"] is False)

# --- hmac -------------------------------------------------------------------------------------
mac = transit.generate_hmac("k-hmac", M, algorithm="sha2-256")["data"]["hmac"]
check("hmac is vault:v1: and 32 bytes", mac.startswith("vault:v1:") and len(unb64(mac[9:])) == 32, mac)
check("verify hmac", transit.verify_signed_data("k-hmac", M, hmac=mac)["data"]["valid"] is True)
check("verify hmac, another message", transit.verify_signed_data(
    "k-hmac", b64(b"x"), hmac=mac)["data"]["valid"] is False)
expect("hmac with another hash than the key's is refused", exceptions.InvalidRequest,
       transit.generate_hmac, "k-hmac", M, algorithm="sha2-512")
expect("hmac with an encryption key is refused", exceptions.InvalidRequest,
       transit.generate_hmac, K, M)

# An empty plaintext, as Vault encrypts it.
c = transit.encrypt_data(K, "")["data"]["ciphertext"]
check("encrypt an empty plaintext", transit.decrypt_data(K, c)["data"]["plaintext"] == "", c)

# --- random, hash -----------------------------------------------------------------------------
r = transit.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
check("random hex", len(bytes.fromhex(r)) == 16, r)
r = transit.generate_random_bytes(n_bytes=24, output_format="base64")["data"]["random_bytes"]
check("random base64", len(unb64(r)) == 24, r)
# Up to Vault's 128 KiB (more than AWS's 1024, which the AWS front keeps).
r = transit.generate_random_bytes(n_bytes=128 * 1024)["data"]["random_bytes"]
check("random: Vault's most", len(unb64(r)) == 128 * 1024, len(r))
expect("random: past Vault's most", exceptions.InvalidRequest, transit.generate_random_bytes, n_bytes=128 * 1024 + 1)
h = transit.hash_data(b64(b"hello"), algorithm="sha2-256")["data"]["sum"]
check("hash sha2-256 known answer", h == hashlib.sha256(b"hello").hexdigest(), h)
h = client.adapter.post("/v1/transit/hash/sha3-512", json={"input": b64(b"hello")})["data"]["sum"]
check("hash sha3-512", h == hashlib.sha3_512(b"hello").hexdigest(), h)

# --- batches ----------------------------------------------------------------------------------
items = [{"plaintext": b64(f"item {i}".encode()), "reference": f"ref-{i}"} for i in range(50)]
enc = transit.encrypt_data(K, batch_input=items)["data"]["batch_results"]
check("batch encrypt: 50 results", len(enc) == 50, len(enc))
check("batch encrypt: references echoed", [e["reference"] for e in enc] == [f"ref-{i}" for i in range(50)])
dec_in = [{"ciphertext": e["ciphertext"], "reference": e["reference"]} for e in enc]
dec = transit.decrypt_data(K, batch_input=dec_in)["data"]["batch_results"]
check("batch decrypt", [unb64(d["plaintext"]) for d in dec] == [f"item {i}".encode() for i in range(50)])
check("batch decrypt: references echoed", [d["reference"] for d in dec] == [f"ref-{i}" for i in range(50)])
dec_in[7] = {"ciphertext": "vault:v2:bm90IGEgY2lwaGVydGV4dA==", "reference": "bad"}
status, body = raw(f"decrypt/{K}", {"batch_input": dec_in})
results = body["data"]["batch_results"]
check("batch with one bad item: 400", status == 400, status)
check("batch: the bad item has an error", results[7].get("error") and results[7]["reference"] == "bad",
      results[7])
check("batch: the others decrypt", all(
    unb64(results[i]["plaintext"]) == f"item {i}".encode() for i in range(50) if i != 7))
status, body = raw(f"decrypt/{K}", {"batch_input": dec_in, "partial_failure_response_code": 207})
check("batch partial_failure_response_code 207", status == 207, status)
check("batch 207: 49 plaintexts", sum(bool(r["plaintext"]) for r in body["data"]["batch_results"]) == 49)
check("batch: a failed decrypt item has plaintext \"\" (as Vault's)", body["data"]["batch_results"][7]["plaintext"] == "",
      body["data"]["batch_results"][7])
status, body = raw(f"decrypt/{K}", {"batch_input": [dec_in[7]], "partial_failure_response_code": 207})
check("batch where every item fails: 400", status == 400, status)
# As Vault: an item that is not base64 fails alone, not the whole batch.
status, body = raw(f"encrypt/{K}", {"batch_input": [{"plaintext": b64(b"fine")}, {"plaintext": "not base64!!"}],
                                    "partial_failure_response_code": 207})
results = body["data"]["batch_results"]
check("a batch item that is not base64 fails alone", status == 207 and "ciphertext" in results[0]
      and "base64" in results[1]["error"], body)
# As Vault's: every batch item has `reference`, "" when it had none, failed or not.
status, body = raw(f"decrypt/{K}", {"batch_input": [{"ciphertext": dec_in[0]["ciphertext"]},
                                                   {"ciphertext": dec_in[7]["ciphertext"]}]})
check("batch items without a reference answer one", [r["reference"] for r in body["data"]["batch_results"]]
      == ["", ""], body)
# As Vault: rewrap, sign, verify and hmac batches answer 200 whatever their items; a failed
# verify item still says "valid": false, a failed sign item "key_version": 0.
status, body = raw(f"rewrap/{K}", {"batch_input": [dec_in[0], dec_in[7]]})
results = body["data"]["batch_results"]
check("rewrap batch with a bad item: 200", status == 200 and results[0]["ciphertext"].startswith("vault:v")
      and results[1]["error"], (status, body))
good = transit.sign_data("k-ecdsa-p256", M, hash_algorithm="sha2-256")["data"]["signature"]
status, body = raw("verify/k-ecdsa-p256", {"hash_algorithm": "sha2-256", "batch_input": [
    {"input": M, "signature": good}, {"input": M, "signature": "vault:v1:%%%"}]})
results = body["data"]["batch_results"]
check("verify batch with a malformed signature: 200", status == 200 and results[0]["valid"] is True
      and results[1]["valid"] is False and results[1]["error"], (status, body))
status, body = raw("sign/k-ecdsa-p256", {"hash_algorithm": "sha2-256", "batch_input": [
    {"input": M}, {"input": "not base64!!"}]})
results = body["data"]["batch_results"]
check("sign batch with a bad item: 200", status == 200 and results[0]["signature"].startswith("vault:v1:")
      and results[1]["key_version"] == 0 and results[1]["error"], (status, body))
# As Vault for keys that are not convergent: a nonce sent to decrypt is ignored; one to
# rewrap with is refused, as one to encrypt with (it was ignored).
fresh = transit.encrypt_data(K, b64(b"with a nonce"))["data"]["ciphertext"]
status, body = raw(f"decrypt/{K}", {"ciphertext": fresh, "nonce": b64(b"twelve bytes")})
check("decrypt ignores a nonce", status == 200 and unb64(body["data"]["plaintext"]) == b"with a nonce",
      (status, body))
status, body = raw(f"rewrap/{K}", {"ciphertext": fresh, "nonce": b64(b"twelve bytes")})
check("rewrap refuses a nonce", status == 400 and "nonce" in body["errors"][0], (status, body))
# As Vault: a batch against a key that does not exist is refused whole, not item by item.
status, body = raw("rewrap/no-such-key", {"batch_input": [dec_in[0], dec_in[1]]})
check("a batch on no key is one error", status == 400 and body.get("errors"), (status, body))
status, body = raw("encrypt/no-batch-made", {"batch_input": []})
check("an empty batch is refused", status == 400 and "missing batch input" in body["errors"][0], body)
expect("...and made no key", exceptions.InvalidPath, transit.read_key, "no-batch-made")

# --- errors hvac names ------------------------------------------------------------------------
expect("read_key of an unknown name", exceptions.InvalidPath, transit.read_key, "no-such-key")
# As Vault: 404 only where a key is read; elsewhere a missing key is a bad request.
expect("decrypt with an unknown key", exceptions.InvalidRequest,
       transit.decrypt_data, "no-such-key", c2["ciphertext"])
expect("non-base64 plaintext", exceptions.InvalidRequest, transit.encrypt_data, K, "not base64!!")
expect("a malformed ciphertext", exceptions.InvalidRequest, transit.decrypt_data, K, "vault:v1:%%%")
expect("an unknown key type", exceptions.InvalidRequest,
       client.adapter.post, "/v1/transit/keys/odd", json={"type": "ecdsa-p521"})
member = hvac.Client(url=ADDR, token=os.environ["MEMBER_TOKEN"], verify=CA)
check("the member is authenticated", member.is_authenticated())
# keyplane hides a key from a principal with no grant on it (as the AWS front does).
expect("a member without a grant does not see another's key", exceptions.InvalidRequest,
       member.secrets.transit.encrypt_data, K, b64(pt))
member_id = native("get-caller-identity", os.environ["MEMBER_TOKEN"], {})["principal_id"]
key_id = transit.read_key(K)["data"]["keyplane"]["key_id"]
native("create-grant", TOKEN, {"key_id": key_id, "grantee_principal": member_id,
                               "operations": ["Decrypt", "DescribeKey"]})
check("a member with a Decrypt grant decrypts", unb64(
    member.secrets.transit.decrypt_data(K, c2["ciphertext"])["data"]["plaintext"]) == pt)
expect("a member with a Decrypt grant encrypts", exceptions.Forbidden,
       member.secrets.transit.encrypt_data, K, b64(pt))
expect("a member without a grant creates a key", exceptions.Forbidden,
       member.secrets.transit.create_key, "members-key")
expect("an invalid token", exceptions.Forbidden, bad.secrets.transit.encrypt_data, K, b64(pt))

# --- delete -----------------------------------------------------------------------------------
D = "k-ed25519"
expect("delete while deletion_allowed is false", exceptions.InvalidRequest, transit.delete_key, D)
transit.update_key_configuration(D, deletion_allowed=True)
d = transit.read_key(D)["data"]
check("config deletion_allowed", d["deletion_allowed"] is True, d)
# A second name for the same key: deleting one Transit name would delete the key under both.
native("create-alias", TOKEN, {"alias_name": "alias/k-ed25519-too", "target_key_id": d["keyplane"]["key_id"]})
expect("delete while another name reaches the key", exceptions.InvalidRequest, transit.delete_key, D)
native("delete-alias", TOKEN, {"alias_name": "alias/k-ed25519-too"})
expect("delete without a second admin's approval", exceptions.Forbidden, transit.delete_key, D)
me = native("get-caller-identity", TOKEN, {})
native("approve-key-deletion", os.environ["APPROVER_TOKEN"],
       {"key_id": d["keyplane"]["key_id"], "requester": me["principal_id"]})
gone = transit.delete_key(D)
check("delete after approval: 204, no body (as Vault)", gone.status_code == 204 and gone.content == b"", gone)
state = native("describe-key", TOKEN, {"key_id": d["keyplane"]["key_id"]})["state"]
check("the key is pending deletion", state == "pending-deletion", state)
expect("the deleted name is free", exceptions.InvalidPath, transit.read_key, D)
check("list no longer names it", D not in transit.list_keys()["data"]["keys"])

# A key whose deletion was scheduled but whose name was not freed (the second of the delete's
# two steps failed; here: scheduled on the native API): deleting it again frees the name.
D2 = "k-ecdsa-p256"
transit.update_key_configuration(D2, deletion_allowed=True)
d2 = transit.read_key(D2)["data"]["keyplane"]["key_id"]
native("approve-key-deletion", os.environ["APPROVER_TOKEN"], {"key_id": d2, "requester": me["principal_id"]})
native("schedule-key-deletion", TOKEN, {"key_id": d2, "pending_window_days": 7})
gone = transit.delete_key(D2)
check("delete of a key already pending deletion: 204", gone.status_code == 204, gone)
expect("its name is free", exceptions.InvalidPath, transit.read_key, D2)

print("all hvac checks passed")
