#!/usr/bin/env python3
"""An independent verifier of Hattama evidence packages, of one station or of a set of stations.

Written from docs/evidence-package.md and the documents it cites (evidence-format, receipts,
transparency-log) and the C2SP texts (signed-note, tlog-checkpoint, tlog-proof), with nothing
of Hattama's code: the Python standard library, `cryptography` for Ed25519 and `pypdf` for the
files attached inside report.pdf.

    verify_package.py PACKAGE.zip [RECEIPT_KEY_HEX]

Prints `ok    <path>` or `FAIL  <path>: <reason>` for every file, then `VALID` or `NOT VALID`;
exits 0 when valid, 1 when a check failed, 2 when the file is not a package.

Not re-implemented here: the photo's clean rule of evidence-format 6.7 (metadata stripping);
the photo's length and SHA-256 against the signed manifest are checked.
"""

import base64
import hashlib
import io
import json
import re
import sys
import zipfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pypdf import PdfReader
from pypdf.errors import PyPdfError

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

    def add(self, path, reason):
        """Like fail, but adds to a problem the file already has."""
        if path in self.problems:
            self.problems[path] += "; " + reason
        else:
            self.fail(path, reason)


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


def safe_names(z):
    names = [i.filename for i in z.infolist()]
    if len(set(names)) != len(names) or any(
            n.startswith("/") or "\\" in n or any(p in ("", ".", "..") for p in n.split("/"))
            for n in names):
        raise ValueError("unsafe or repeated names")
    return names


def verify(path, pinned_key=None):
    try:
        z = zipfile.ZipFile(path)
        names = safe_names(z)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        print("not an evidence package: %s" % e)
        return 2
    if any(n.startswith("stations/") for n in names):
        return verify_set(z, names, pinned_key)
    r, station, _ = check_station(z, names, pinned_key)
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


def check_station(z, names, pinned_key):
    """Checks one station's package (sections 2 to 5); returns the report, the station and
    package.json."""
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
    pm = None
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
            if p in ("package.json", "package.sig", "SHA256SUMS", "report.pdf"):
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

    # 7. report.pdf: listed in SHA256SUMS (step 1); the files it carries are the package's
    if "report.pdf" in files:
        problem = check_report(files)
        if problem:
            r.fail("report.pdf", problem)
    if station is None:
        r.fail("package.json", "not a station's package manifest")
    return r, station, pm


def check_report(files):
    """The attachments of report.pdf (section 5, step 7): every entry before it, each byte for
    byte the package's file of the same name. Returns the problem, or None."""
    try:
        attached = PdfReader(io.BytesIO(files["report.pdf"])).attachments
        carried = {}
        for name, contents in attached.items():
            if len(contents) != 1:
                return "it carries %s %d times" % (name, len(contents))
            carried[name] = contents[0]
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        return "not a PDF whose attachments can be read: %s" % e
    for name, data in sorted(carried.items()):
        if name not in files:
            return "it carries %s, which the package does not have" % name
        if files[name] != data:
            return "the %s it carries is not the package's %s" % (name, name)
    for name in files:
        if name not in ("report.pdf", "SHA256SUMS") and name not in carried:
            return "it does not carry %s" % name
    return None


SET_FORMAT = "hattama-evidence-set/v1"
SET_MEMBERS = {"format", "election", "selection", "receipt_key", "log_key", "stations", "files"}


def stream_sha256(z, name):
    """The SHA-256 and length of an entry, read in pieces (a station's package may be large)."""
    h, n = hashlib.sha256(), 0
    with z.open(name) as f:
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                return h.hexdigest(), n
            h.update(chunk)
            n += len(chunk)


def station_figures(inner):
    """Section 6.3: the verified transcription and the newest official figures of a station."""
    t = json.loads(inner.read("station/transcription.json"))
    o = json.loads(inner.read("station/official.json"))
    observed = dict(t["values"]) if t["status"] == "verified" else {}
    newest = o["versions"][-1]["figures"] if o["versions"] else None
    return observed, dict(newest or {})


def recompute(lines, stations):
    """Section 6.3: the totals over the set, the counts and the table of differing stations."""
    keys = ["observed_both", "official_both", "both_stations", "observed_all",
            "observed_stations", "official_all", "official_stations"]
    totals = [dict.fromkeys(keys, 0) for _ in lines]
    counts = {"stations": 0, "observed_stations": 0, "official_stations": 0, "both_stations": 0}
    differing = []
    for st, (obs, off) in stations:
        counts["stations"] += 1
        counts["observed_stations"] += bool(obs)
        counts["official_stations"] += bool(off)
        counts["both_stations"] += bool(obs) and bool(off)
        diff = []
        for t, line in zip(totals, lines):
            o, x = obs.get(line), off.get(line)
            if o is not None:
                t["observed_all"] += o
                t["observed_stations"] += 1
            if x is not None:
                t["official_all"] += x
                t["official_stations"] += 1
            if o is not None and x is not None:
                t["observed_both"] += o
                t["official_both"] += x
                t["both_stations"] += 1
                if o != x:
                    diff.append({"line": line, "observed": o, "official": x,
                                 "difference": o - x})
        if diff:
            row = {k: st[k] for k in ("precinct", "number", "region", "district", "address")}
            row.update(size=sum(abs(d["difference"]) for d in diff), lines=diff, path=st["path"])
            differing.append(row)
    differing.sort(key=lambda d: (-d["size"], d["precinct"]))
    return totals, counts, differing


def check_summary(summary, pm, stations):
    """Section 6.3 and 6.4: the summary is about this set, and its figures over the set are
    the stations' own."""
    if pm is not None:
        if summary["election"] != pm["election"] or summary["selection"] != pm["selection"]:
            raise ValueError("its election or selection is not package.json's")
        if [p["path"] for p in summary["packages"]] != pm["stations"]:
            raise ValueError("its stations are not the set's station packages")
    if summary["packages"] != [st for st, _ in stations]:
        raise ValueError("its stations are not the ones their packages are about")
    sel = summary["selection"]
    lines = [l["line"] for l in summary["lines"]]
    for st, (obs, off) in stations:
        differs = any(obs.get(l) is not None and off.get(l) is not None and obs[l] != off[l]
                      for l in lines)
        if (sel["differing"] and not differs) or \
                (sel["region"] is not None and st["region"] != sel["region"]) or \
                (sel["district"] is not None and st["district"] != sel["district"]) or \
                (sel["precincts"] is not None and st["precinct"] not in sel["precincts"]):
            raise ValueError("station %s (%s) is not of the selection" % (
                st["number"], st["precinct"]))
    if sel["precincts"] is not None and \
            set(sel["precincts"]) - {st["precinct"] for st, _ in stations}:
        raise ValueError("a listed station has no package in the set")
    totals, counts, differing = recompute(lines, stations)
    for l, t in zip(summary["lines"], totals):
        if l["set"] != t:
            raise ValueError("line %s: its totals over the set are not the stations' "
                             "(observed %d in the summary, %d in the packages)" % (
                                 l["line"], l["set"]["observed_all"], t["observed_all"]))
    for k, v in counts.items():
        if summary[k] != v:
            raise ValueError("%s is %s, the packages give %s" % (k, summary[k], v))
    if summary["differing"] != differing or summary["differing_stations"] != len(differing):
        raise ValueError("its table of differing stations is not the packages' differences")


def verify_set(z, names, pinned_key):
    """Section 6: a set of stations."""
    stations_in_zip = [n for n in names if n.startswith("stations/")]
    r = Report(names)
    hashes = {}
    files = {}
    for n in names:
        if n in stations_in_zip:
            hashes[n] = stream_sha256(z, n)
        else:
            files[n] = z.read(n)
            hashes[n] = (sha256(files[n]), len(files[n]))

    # 6.4 step 1: SHA256SUMS
    sums = files.get("SHA256SUMS")
    if sums is None:
        r.fail("SHA256SUMS", "missing")
    else:
        listed = set()
        for n, line in enumerate(sums.decode("utf-8", "replace").split("\n")[:-1], 1):
            h, sep, p = line.partition("  ")
            if not sep or not HEX64.match(h):
                r.fail("SHA256SUMS", "line %d is not `<sha256>  <path>`" % n)
            elif p not in hashes:
                r.fail("SHA256SUMS", "line %d lists %s, which is missing" % (n, p))
            elif hashes[p][0] != h:
                r.fail("SHA256SUMS", "line %d (%s): the SHA-256 differs" % (n, p))
            listed.add(p)
        for p in names:
            if p != "SHA256SUMS" and p not in listed:
                r.fail("SHA256SUMS", "%s is not listed" % p)

    # step 2: the receipt key
    receipt_key = None
    try:
        receipt_key = one_line(files["keys/receipt-key.txt"])
        if not HEX64.match(receipt_key):
            raise ValueError("not 64 lowercase hex digits")
        if pinned_key and receipt_key != pinned_key:
            raise ValueError("not the key you gave")
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        r.fail("keys/receipt-key.txt", str(e))

    # step 3: package.json and package.sig
    pm = None
    try:
        pj = files["package.json"]
        pm = json.loads(pj)
        if set(pm) != SET_MEMBERS or pm["format"] != SET_FORMAT:
            pm = None
            raise ValueError("not a %s manifest" % SET_FORMAT)
        if pm["receipt_key"] != receipt_key:
            raise ValueError("names another receipt key")
        sig = one_line(files["package.sig"])
        if not receipt_key or not HEX128.match(sig) or not ed25519_ok(
                bytes.fromhex(receipt_key), b"hattama/package-set/v1\n" + pj,
                bytes.fromhex(sig)):
            r.fail("package.sig", "does not verify under the receipt key")
        by_path = {f["path"]: f for f in pm["files"]}
        for p in names:
            if p in ("package.json", "package.sig", "SHA256SUMS"):
                continue
            f = by_path.get(p)
            if f is None:
                r.fail(p, "not listed in package.json")
            elif (f["sha256"], f["bytes"]) != hashes[p]:
                r.fail(p, "not the file package.json lists (SHA-256 or length)")
        for p in by_path:
            if p not in hashes:
                r.fail("package.json", "lists %s, which is missing" % p)
        if pm["stations"] != stations_in_zip:
            r.fail("package.json", "its stations are not the set's station packages")
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        r.fail("package.json", str(e))

    # step 4: the log key
    vkey_text = None
    try:
        vkey_text = one_line(files["keys/log.vkey"])
        parse_vkey(vkey_text)
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        r.fail("keys/log.vkey", str(e))

    # step 5: each station's package, alone and as part of the set
    stations = []
    for n in stations_in_zip:
        try:
            inner = zipfile.ZipFile(z.open(n))
            inner_names = safe_names(inner)
        except (zipfile.BadZipFile, ValueError) as e:
            r.add(n, "not an evidence package: %s" % e)
            continue
        ir, st, ipm = check_station(inner, inner_names, receipt_key)
        problems = ["%s: %s" % (p, ir.problems[p]) for p in ir.order if p in ir.problems]
        if st is not None and ipm is not None:
            if ipm["receipt_key"] != receipt_key:
                problems.append("signed by another receipt key than the set's")
            if ipm["log_key"] != vkey_text:
                problems.append("another log than the set's")
            if pm is not None and st["election"] != pm["election"]:
                problems.append("a station of another election")
            if n != "stations/%s-%s.zip" % (st["number"], st["precinct"]):
                problems.append("the package of station %s (%s)" % (st["number"], st["precinct"]))
            try:
                entry = {k: st[k] for k in ("precinct", "number", "region", "district",
                                            "address")}
                entry["path"] = n
                stations.append((entry, station_figures(inner)))
            except (KeyError, ValueError, TypeError, IndexError) as e:
                problems.append("its figures: %s" % e)
        if problems:
            r.add(n, "; ".join(problems))

    # step 6: the summary against the stations
    try:
        check_summary(json.loads(files["summary.json"]), pm, stations)
    except (KeyError, ValueError, TypeError) as e:
        r.fail("summary.json", str(e))

    for p in r.order:
        if p in r.problems:
            print("FAIL  %s: %s" % (p, r.problems[p]))
        else:
            print("ok    %s" % p)
    if r.problems:
        print("NOT VALID: %d file(s) do not verify" % len(r.problems))
        return 1
    print("VALID: set of %d stations, election %s" % (len(stations), pm["election"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(verify(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
