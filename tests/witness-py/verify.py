#!/usr/bin/env python3
"""An independent verifier of Hattama's log checkpoints and their witness cosignatures.

Written from the C2SP specification texts alone (signed-note, tlog-checkpoint,
tlog-cosignature), with nothing of Hattama's code: the Python standard library and
`cryptography` for Ed25519.

    verify.py LOG_VKEY WITNESS_VKEY... < checkpoint

Prints one JSON object: the checkpoint's origin, size and root hash (base64), and, for each
witness key given whose cosignature verifies, its name and timestamp. Exits 1 (with a message
on stderr) if the checkpoint is malformed or the log's signature does not verify.
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH = "\u2014"


class Refused(Exception):
    pass


def parse_vkey(vkey, want_type):
    """A verifier key `<name>+<hex key id>+<base64(type || key)>` (c2sp.org/signed-note)."""
    name, key_id_hex, material_b64 = vkey.split("+", 2)
    material = base64.b64decode(material_b64, validate=True)
    if material[0] != want_type or len(material) != 33:
        raise Refused(f"key {name}: expected type {want_type:#04x} and a 32-byte key")
    key_id = hashlib.sha256(name.encode() + b"\n" + material).digest()[:4]
    if key_id.hex() != key_id_hex:
        raise Refused(f"key {name}: wrong key id")
    return name, key_id, Ed25519PublicKey.from_public_bytes(material[1:])


def parse_note(data):
    """Splits a signed note into its text (with its final newline) and signature lines."""
    text = data.decode("utf-8")
    if "\n\n" not in text or not text.endswith("\n"):
        raise Refused("not a signed note")
    body, sigs = text.rsplit("\n\n", 1)
    body += "\n"
    lines = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise Refused("a signature line does not start with an em dash and a space")
        name, b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        if len(raw) < 5:
            raise Refused("a signature is too short")
        lines.append((name, raw[:4], raw[4:]))
    return body.encode("utf-8"), lines


def main(argv):
    log_name, log_id, log_key = parse_vkey(argv[1], 0x01)
    witnesses = [parse_vkey(v, 0x04) for v in argv[2:]]
    body, sigs = parse_note(sys.stdin.buffer.read())
    # c2sp.org/tlog-checkpoint: origin, size, base64 root hash.
    lines = body.decode().split("\n")
    origin, size, root = lines[0], int(lines[1]), lines[2]
    if origin != log_name or str(size) != lines[1] or len(base64.b64decode(root)) != 32:
        raise Refused("the checkpoint body is not of this log or not well formed")
    log_ok = False
    for name, key_id, sig in sigs:
        if name == log_name and key_id == log_id:
            try:
                log_key.verify(sig, body)
                log_ok = True
            except InvalidSignature:
                pass
    if not log_ok:
        raise Refused("the log's signature does not verify")
    cosigned = []
    for wname, wid, wkey in witnesses:
        for name, key_id, sig in sigs:
            if name != wname or key_id != wid or len(sig) != 8 + 64:
                continue
            (timestamp,) = struct.unpack(">Q", sig[:8])
            if timestamp > 2**63 - 1:
                continue
            message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body
            try:
                wkey.verify(sig[8:], message)
            except InvalidSignature:
                continue
            cosigned.append({"name": wname, "time": timestamp})
            break
    print(json.dumps({"origin": origin, "size": size, "root": root, "cosigned": cosigned}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (Refused, ValueError, UnicodeDecodeError) as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(1)
