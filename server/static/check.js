// "Check this photo yourself": checks, in the reader's own browser, that a photo file is byte
// for byte the photo an observer's phone signed, and that the signed capture is in the public
// log. Everything is computed here with the browser's Web Crypto (SHA-256, Ed25519); the only
// requests go to this site: the capture's signed manifest, its receipt with the log proof, and
// (when an address is pasted) the photo. The steps follow docs/evidence-format.md (signature
// over "hattama/evidence/v1\n" + the canonical manifest) and docs/transparency-log.md (RFC 6962
// leaf and node hashes, the C2SP checkpoint signed note, the inclusion proof).
'use strict';
(function () {
  const root = document.getElementById('check');
  if (!root) return;
  const capture = root.dataset.capture;
  const vkey = root.dataset.vkey;
  const enc = new TextEncoder();

  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const unhex = (s) => {
    if (!/^([0-9a-f]{2})*$/.test(s)) throw new Error('bad hex');
    return new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16)));
  };
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const ed25519 = async (publicKey, signature, message) => {
    const key = await crypto.subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
    return crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
  };
  const json = async (path) => {
    const r = await fetch(path, { credentials: 'omit' });
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  };

  /** A checkpoint signed note verified under the verifier key: {size, root} or null. */
  async function checkpoint(note) {
    // <name>+<key id, 8 hex>+<base64(0x01 ‖ key)>: the base64 may itself hold '+'.
    const [name, id, ...rest] = vkey.split('+');
    const key = rest.join('+');
    const keyBytes = unb64(key);
    if (keyBytes[0] !== 1 || keyBytes.length !== 33) return null;
    const split = note.indexOf('\n\n');
    if (split < 0) return null;
    const body = note.slice(0, split + 1);
    const lines = body.split('\n');
    if (lines.length !== 4 || lines[0] !== name) return null;
    for (const line of note.slice(split + 2).split('\n')) {
      const prefix = `\u2014 ${name} `;
      if (!line.startsWith(prefix)) continue;
      const sig = unb64(line.slice(prefix.length));
      if (sig.length !== 68 || hex(sig.slice(0, 4)) !== id) continue;
      if (await ed25519(keyBytes.slice(1), sig.slice(4), enc.encode(body))) {
        return { size: Number(lines[1]), root: unb64(lines[2]) };
      }
    }
    return null;
  }

  /** RFC 9162 2.1.3.2: leaf hash `leaf` is entry `index` of the tree of `size` with `rootHash`. */
  async function included(leaf, index, size, proof, rootHash) {
    if (index >= size) return false;
    let fn = index; let sn = size - 1; let x = leaf;
    for (const p of proof) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        x = await sha256(concat([1], p, x));
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        x = await sha256(concat([1], x, p));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(x, rootHash);
  }

  /** Every check of `photo` (bytes); returns the ids of the result messages to show. */
  async function verify(photo) {
    const shown = [];
    const photoHash = hex(await sha256(photo));
    root.querySelector('#computed-hash').textContent = photoHash;
    const { manifest, signature } = await json(`/api/v1/captures/${capture}`);
    const manifestBytes = enc.encode(manifest);
    const m = JSON.parse(manifest);
    const signed = hex(await sha256(manifestBytes)) === capture
      && await ed25519(unhex(m.device_key), unhex(signature),
        concat(enc.encode('hattama/evidence/v1\n'), manifestBytes));
    if (!signed) return ['result-bad-signature'];
    if (m.photo.sha256 !== photoHash || m.photo.bytes !== photo.length) return ['result-different'];
    shown.push('result-same');
    const receipt = await json(`/api/v1/receipts/${capture}`);
    const log = receipt.log;
    let logged = false;
    if (log) {
      const entry = JSON.parse(log.entry);
      const lines = log.proof.split('\n');
      const blank = lines.indexOf('');
      const index = Number((lines[1] || '').replace(/^index /, ''));
      const cp = await checkpoint(lines.slice(blank + 1).join('\n'));
      logged = entry.capture_id === capture && entry.photo_sha256 === photoHash
        && lines[0] === 'c2sp.org/tlog-proof@v1' && index === log.index && cp !== null
        && await included(await sha256(concat([0], enc.encode(log.entry))), index, cp.size,
          lines.slice(2, blank).map(unb64), cp.root);
    }
    shown.push(logged ? 'result-logged' : 'result-not-logged');
    return shown;
  }

  async function run(getBytes) {
    delete root.dataset.outcome;
    for (const el of root.querySelectorAll('[data-result]')) el.hidden = true;
    root.querySelector('#computed').hidden = true;
    let shown;
    try {
      const bytes = await getBytes();
      root.querySelector('#computed').hidden = false;
      shown = await verify(bytes);
    } catch (e) {
      shown = [e && e.message === 'not-this-site' ? 'result-not-this-site' : 'result-error'];
    }
    for (const id of shown) root.querySelector(`[data-result="${id}"]`).hidden = false;
    root.dataset.outcome = shown.join(' ');
  }

  root.querySelector('#photo-file').addEventListener('change', (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (file) run(async () => new Uint8Array(await file.arrayBuffer()));
  });
  root.querySelector('#address-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = root.querySelector('#photo-address').value.trim();
    run(async () => {
      const address = new URL(value, window.location.href);
      if (address.origin !== window.location.origin) throw new Error('not-this-site');
      const r = await fetch(address.pathname, { credentials: 'omit' });
      if (!r.ok) throw new Error(`photo: ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    });
  });
  root.querySelector('#check-form-area').hidden = false;
  root.querySelector('#no-script').hidden = true;
}());
