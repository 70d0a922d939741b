"""An observer's phone in the console's browser test (tests/tests/console.rs): enrolls with an
invite URI exactly as decoded from a printed card's QR code, captures a real photo of its
precinct and syncs it; after the device was revoked in the console, a new capture's upload is
refused.

    python3 console_enroll.py enroll STORE_DIR URI PRECINCT PHOTO
    python3 console_enroll.py revoked STORE_DIR - PRECINCT PHOTO

PYTHONPATH holds the generated bindings (build/bindings/python). Only the standard library.
"""

import sys

import hattama_ffi as h
from hattama_ffi import HattamaError

KEY = bytes.fromhex("22" * 32)
SETTINGS = h.ClientSettings(backoff_base_ms=10, backoff_cap_ms=200, max_retries=5,
                            connect_timeout_ms=2000, request_timeout_ms=15000)


def main():
    mode, store, uri, precinct, photo = sys.argv[1:6]
    client = h.Client.open(store, KEY, SETTINGS)
    if mode == "enroll":
        info = client.enroll_invite(uri)
        assert info.precincts == [precinct], f"enrolled for {info.precincts}, not {precinct}"
        print(f"enrolled device {info.device_id[:16]} for {info.precincts}")
    with open(photo, "rb") as f:
        captured = client.capture(f.read(), h.CaptureRequest(
            election=info.election.id if mode == "enroll" else "e2e",
            precinct=precinct, utc_offset_min=300))
    try:
        summary = client.sync(None, h.CancelHandle())
    except HattamaError.RejectedByServer as e:
        assert mode == "revoked", f"refused: {e}"
        assert "device_revoked" in str(e), f"refused for another reason: {e}"
        print(f"upload refused: {e}")
        return
    states = {c.id: c.state for c in client.list()}
    print(f"sync: {summary}; states {states}")
    if mode == "enroll":
        assert summary.receipted == 1 and summary.remaining == 0, summary
        assert states[captured.id].is_receipted(), states
    else:
        state = states[captured.id]
        assert state.is_rejected() and "device_revoked" in state.reason, state


if __name__ == "__main__":
    main()
