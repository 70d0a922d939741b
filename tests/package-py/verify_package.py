#!/usr/bin/env python3
"""An independent verifier of Hattama evidence packages.

Written from docs/evidence-package.md and the documents it cites (evidence-format, receipts,
transparency-log) and the C2SP texts (signed-note, tlog-checkpoint, tlog-proof), with nothing
of Hattama's code: the Python standard library and `cryptography` for Ed25519.

    verify_package.py PACKAGE.zip [RECEIPT_KEY_HEX]

Prints `ok    <path>` or `FAIL  <path>: <reason>` for every file, then `VALID` or `NOT VALID`;
exits 0 when valid, 1 when a check failed, 2 when the file is not a package.

Not re-implemented here: the photo's clean rule of evidence-format 6.7 (metadata stripping);
the photo's length and SHA-256 against the signed manifest are checked.
"""

import base64
import hashlib
import json
import re
import sys
import zipfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "hattama-evidence-package/v1"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX128 = re.compile(r"^[0-9a-f]{128}$")
EM_DASH = "\u2014"
MAX_SAFE = 2**53 - 1


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def ed25519_ok(key, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def canonical(obj):
    """The canonical JSON of receipts and manifests (docs/evidence-format.md 4, Python hint)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def one_line(b):
    t = b.decode("utf-8")
    if not t.endswith("\n") or "\n" in t[:-1]:
        raise ValueError("not one line")
    return t[:-1]


class Report:
    def __init__(self, names):
        self.order = list(names)
        self.problems = {}

    def fail(self, path, reason):
        if path not in self.order:
            self.order.append(path)
        self.problems.setdefault(path, reason)


def parse_vkey(vkey):
    """name+keyid+base64: split at the first two '+' only (the base64 may contain '+')."""
    name, key_id, b64 = vkey.split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex()
    if computed != key_id:
        raise ValueError("key id does not match")
    return name, bytes.fromhex(key_id), raw[1:]


def verify_checkpoint(note, vkey):
    """A C2SP signed note from the log: returns (origin, size, root)."""
    name, key_id, key = vkey
    text = note.decode("utf-8")
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise ValueError("no signature block")
    body += "\n"
    ok = False
    for line in sigs.split("\n"):
        if not line:
            continue
        prefix = EM_DASH + " " + name + " "
        if not line.startswith(prefix):
            continue
        raw = base64.b64decode(line[len(prefix):], validate=True)
        if raw[:4] == key_id and len(raw) == 68:
            if not ed25519_ok(key, body.encode(), raw[4:]):
                raise ValueError("the log's signature does not verify")
            ok = True
    if not ok:
        raise ValueError("not signed by the log key")
    lines = body.split("\n")
    if lines[0] != name:
        raise ValueError("origin is not the log key's name")
    return lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)


def root_from_inclusion(index, size, leaf, proof):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        raise ValueError("index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def verify_proof(text, entry, vkey):
    """C2SP tlog-proof@v1: header, index, hashes, blank line, checkpoint. Returns the index."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no checkpoint")
    lines = head.split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1" or not lines[1].startswith("index "):
        raise ValueError("not a tlog-proof")
    index = int(lines[1][6:])
    hashes = [base64.b64decode(h, validate=True) for h in lines[2:]]
    _, size, root = verify_checkpoint(note.encode(), vkey)
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    if root_from_inclusion(index, size, leaf, hashes) != root:
        raise ValueError("the inclusion proof does not lead to the checkpoint's root")
    return index


def check_capture(r, files, cid, receipt_key, vkey, station):
    d = "captures/" + cid + "/"
    manifest_bytes = files.get(d + "manifest.json")
    sig = files.get(d + "manifest.sig")
    if manifest_bytes is None or sig is None:
        r.fail(d + "manifest.json", "missing manifest.json or manifest.sig")
        return
    try:
        m = json.loads(manifest_bytes.decode("utf-8"))
        signature = one_line(sig)
        if not HEX128.match(signature):
            raise ValueError("manifest.sig is not 128 hex digits")
        device_key = bytes.fromhex(m["device_key"])
        if not ed25519_ok(device_key, b"hattama/evidence/v1\n" + manifest_bytes,
                          bytes.fromhex(signature)):
            raise ValueError("the device's signature does not verify")
        if canonical(m) != manifest_bytes:
            raise ValueError("not in canonical form")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        r.fail(d + "manifest.json", str(e))
        return
    if sha256(manifest_bytes) != cid:
        r.fail(d + "manifest.json", "its SHA-256 is not the capture id")
    if station and (m["election"], m["precinct"]) != (station["election"], station["precinct"]):
        r.fail(d + "manifest.json", "about another station")
    ext = {"image/jpeg": "jpg", "image/png": "png"}[m["photo"]["media_type"]]
    photo = files.get(d + "photo." + ext)
    if photo is None:
        r.fail(d + "photo." + ext, "missing")
    elif len(photo) != m["photo"]["bytes"] or sha256(photo) != m["photo"]["sha256"]:
        r.fail(d + "photo." + ext, "not the photo the device signed (length or SHA-256)")

    rpath = d + "receipt.json"
    try:
        sr = json.loads(files[rpath])
        rec = sr["receipt"]
        if set(rec) != {"capture_id", "device_key", "photo_sha256", "received_at_ms",
                        "server_key", "v"}:
            raise ValueError("unexpected members")
        if rec["v"] != 1 or not 0 <= rec["received_at_ms"] <= MAX_SAFE:
            raise ValueError("version or time out of range")
        if rec["server_key"] != receipt_key:
            raise ValueError("signed by another key than the receipt key")
        if not ed25519_ok(bytes.fromhex(receipt_key), b"hattama/receipt/v1\n" + canonical(rec),
                          bytes.fromhex(sr["signature"])):
            raise ValueError("the receipt's signature does not verify")
        if (rec["capture_id"], rec["photo_sha256"], rec["device_key"]) != (
                cid, m["photo"]["sha256"], m["device_key"]):
            raise ValueError("a receipt of another capture")
    except (ValueError, KeyError, TypeError) as e:
        r.fail(rpath, str(e))
        return

    ppath = d + "tlog-proof"
    try:
        proof = files[ppath].decode("utf-8")
        log = sr["log"]
        if proof != log["proof"]:
            raise ValueError("not the proof of receipt.json")
        entry = log["entry"].encode()
        e = json.loads(entry)
        want = {"capture_id": cid, "election": m["election"], "photo_sha256": m["photo"]["sha256"],
                "precinct": m["precinct"], "received_at_ms": rec["received_at_ms"], "v": 1}
        if e != want or canonical(e) != entry:
            raise ValueError("the log entry does not name this capture")
        if verify_proof(proof, entry, vkey) != log["index"]:
            raise ValueError("the proof's index is not the receipt's")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        r.fail(ppath, str(e))


def verify(path, pinned_key=None):
    try:
        z = zipfile.ZipFile(path)
        infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        print("not an evidence package: %s" % e)
        return 2
    names = [i.filename for i in infos]
    if len(set(names)) != len(names) or any(
            n.startswith("/") or "\\" in n or any(p in ("", ".", "..") for p in n.split("/"))
            for n in names):
        print("not an evidence package: unsafe or repeated names")
        return 2
    files = {n: z.read(n) for n in names}
    r = Report(names)

    # 1. SHA256SUMS
    sums = files.get("SHA256SUMS")
    if sums is None:
        r.fail("SHA256SUMS", "missing")
    else:
        listed = set()
        for n, line in enumerate(sums.decode("utf-8", "replace").split("\n")[:-1], 1):
            h, sep, p = line.partition("  ")
            if not sep or not HEX64.match(h):
                r.fail("SHA256SUMS", "line %d is not `<sha256>  <path>`" % n)
            elif p not in files:
                r.fail("SHA256SUMS", "line %d lists %s, which is missing" % (n, p))
            elif sha256(files[p]) != h:
                r.fail("SHA256SUMS", "line %d (%s): the SHA-256 differs" % (n, p))
            listed.add(p)
        for p in names:
            if p != "SHA256SUMS" and p not in listed:
                r.fail("SHA256SUMS", "%s is not listed" % p)

    # 2. The receipt key
    receipt_key = None
    try:
        receipt_key = one_line(files["keys/receipt-key.txt"])
        if not HEX64.match(receipt_key):
            raise ValueError("not 64 lowercase hex digits")
        if pinned_key and receipt_key != pinned_key:
            raise ValueError("not the key you gave")
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        r.fail("keys/receipt-key.txt", str(e))

    # 3. package.json and package.sig
    station = None
    try:
        pj = files["package.json"]
        pm = json.loads(pj)
        if set(pm) != {"format", "station", "receipt_key", "log_key", "captures", "files"} or \
                pm["format"] != FORMAT:
            raise ValueError("not a %s manifest" % FORMAT)
        station = pm["station"]
        if pm["receipt_key"] != receipt_key:
            raise ValueError("names another receipt key")
        sig = one_line(files["package.sig"])
        if not receipt_key or not HEX128.match(sig) or not ed25519_ok(
                bytes.fromhex(receipt_key), b"hattama/package/v1\n" + pj, bytes.fromhex(sig)):
            r.fail("package.sig", "does not verify under the receipt key")
        by_path = {f["path"]: f for f in pm["files"]}
        for p in names:
            if p in ("package.json", "package.sig", "SHA256SUMS"):
                continue
            f = by_path.get(p)
            if f is None:
                r.fail(p, "not listed in package.json")
            elif f["sha256"] != sha256(files[p]) or f["bytes"] != len(files[p]):
                r.fail(p, "not the file package.json lists (SHA-256 or length)")
        for p in by_path:
            if p not in files:
                r.fail("package.json", "lists %s, which is missing" % p)
        dirs = sorted({n.split("/")[1] for n in names if n.startswith("captures/")})
        if sorted(pm["captures"]) != dirs:
            r.fail("package.json", "its captures are not the capture directories")
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        r.fail("package.json", str(e))

    # 4. The log key
    vkey = None
    try:
        vkey = parse_vkey(one_line(files["keys/log.vkey"]))
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        r.fail("keys/log.vkey", str(e))

    # 5. Each capture
    for cid in sorted({n.split("/")[1] for n in names if n.startswith("captures/")}):
        if receipt_key and vkey:
            check_capture(r, files, cid, receipt_key, vkey, station)

    # 6. The differences against their two sources
    try:
        t = json.loads(files["station/transcription.json"])
        o = json.loads(files["station/official.json"])
        d = json.loads(files["station/differences.json"])
        newest = o["versions"][-1]["figures"] if o["versions"] else None
        for line in d["lines"]:
            lid = line["line"]
            if line["observed"] != t["values"].get(lid) or newest is None or \
                    line["official"] != newest.get(lid):
                r.fail("station/differences.json",
                       "line %s is not what the transcription and official say" % lid)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        r.fail("station/differences.json", str(e))

    for p in r.order:
        if p in r.problems:
            print("FAIL  %s: %s" % (p, r.problems[p]))
        else:
            print("ok    %s" % p)
    if r.problems:
        print("NOT VALID: %d file(s) do not verify" % len(r.problems))
        return 1
    print("VALID: station %s (%s), election %s" % (
        station["number"], station["region"], station["election"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(verify(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
