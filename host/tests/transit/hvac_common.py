"""What the hvac scripts of host/tests/transit share: the clients of the node they are run
against (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT) and their checks. Each check prints one line;
a failure raises (non-zero exit)."""

import base64
import os

import hvac

ADDR = os.environ["VAULT_ADDR"]
TOKEN = os.environ["VAULT_TOKEN"]
CA = os.environ["VAULT_CACERT"]

client = hvac.Client(url=ADDR, token=TOKEN, verify=CA)
# The same, answering every request as it came (hvac's JSON adapter turns a 200 into a dict
# and raises on a non-2xx).
raw_client = hvac.Client(url=ADDR, token=TOKEN, verify=CA, adapter=hvac.adapters.RawAdapter)
transit = client.secrets.transit


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def expect(name, exc, call, *args, **kwargs):
    try:
        got = call(*args, **kwargs)
    except exc as e:
        print(f"ok {name} ({type(e).__name__}: {str(e)[:100]})")
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{name}: expected {exc.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"{name}: expected {exc.__name__}, got an answer: {got}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
