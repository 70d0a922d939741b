"""The Python bindings of hattama-ffi against the real hattama-server over HTTPS, with a
certificate authority of the test's own (ClientSettings.extra_ca_pem).

Run by tests/tests/tls.rs, which passes, in the environment:
  HATTAMA_URL      the server's https:// URL
  HATTAMA_CODES    two enrollment codes, comma-separated
  HATTAMA_CA_FILE  the test CA's certificate (PEM)
  HATTAMA_PHOTOS   photos, os.pathsep-separated
  HATTAMA_WORK     a scratch directory
"""

import os

import hattama_ffi as h
from hattama_ffi import HattamaError

URL = os.environ["HATTAMA_URL"]
CODES = os.environ["HATTAMA_CODES"].split(",")
CA = open(os.environ["HATTAMA_CA_FILE"]).read()
PHOTOS = os.environ["HATTAMA_PHOTOS"].split(os.pathsep)
WORK = os.environ["HATTAMA_WORK"]

KEY = bytes.fromhex("22" * 32)
FAST = dict(backoff_base_ms=10, backoff_cap_ms=200, max_retries=3, connect_timeout_ms=5000)

# Without the CA, the server's certificate is not trusted: enrollment cannot reach it.
stranger = h.Client.open(os.path.join(WORK, "stranger"), KEY, h.ClientSettings(**FAST))
try:
    stranger.enroll(URL, CODES[1])
    raise AssertionError("enrolled with a server whose certificate nobody vouched for")
except HattamaError.RetryLater as e:
    print("without the CA:", e)

# A PEM that is not one is a mistake to fix, said at once.
try:
    bad = h.Client.open(
        os.path.join(WORK, "bad"), KEY, h.ClientSettings(extra_ca_pem="not a certificate", **FAST)
    )
    bad.enroll(URL, CODES[1])
    raise AssertionError("a broken CA file was accepted")
except HattamaError.FixInput as e:
    print("broken CA:", e)

client = h.Client.open(
    os.path.join(WORK, "observer"), KEY, h.ClientSettings(extra_ca_pem=CA, **FAST)
)
enrollment = client.enroll(URL, CODES[0])
assert enrollment.precincts == ["p0001"], enrollment.precincts
for photo in PHOTOS:
    with open(photo, "rb") as f:
        client.capture(f.read(), h.CaptureRequest(election="e2e", precinct="p0001", utc_offset_min=300))
summary = client.sync(None, h.CancelHandle())
assert summary.remaining == 0, summary
receipted = [c for c in client.list() if c.state.is_receipted()]
assert len(receipted) == len(PHOTOS), client.list()
print(f"{len(receipted)} captures receipted over HTTPS")
