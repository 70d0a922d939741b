// Uploads one photo to hattama-server with tus-js-client (its Node.js build), in two runs, so the
// end-to-end test (tests/tests/tus_clients.rs) sees a real third-party client resume after a cut.
//
//   node tus-js-client.js cut    ENDPOINT FILE STATE MANIFEST SIGNATURE
//   node tus-js-client.js resume ENDPOINT FILE STATE MANIFEST SIGNATURE
//
// `cut` creates the upload, sends CUT_AFTER bytes in chunks of CHUNK, then aborts mid-upload and
// exits; the upload URL stays in tus-js-client's own URL storage (the file STATE). `resume` is a
// fresh process and a fresh Upload: it finds the previous upload by the file's fingerprint, asks
// the server for the offset (HEAD) and sends the rest. Each run prints one JSON line on stdout
// with the offsets and every request it made; any error exits 1 with the server's answer.
'use strict'

const fs = require('fs')
const tus = require('tus-js-client')

const CHUNK = 4096
const CUT_AFTER = 2 * CHUNK

function fail(message) {
  process.stderr.write(`tus-js-client.js: ${message}\n`)
  process.exit(1)
}

const [mode, endpoint, file, state, manifest, signature] = process.argv.slice(2)
if (!['cut', 'resume'].includes(mode) || signature === undefined) {
  fail('usage: tus-js-client.js cut|resume ENDPOINT FILE STATE MANIFEST SIGNATURE')
}

// Every request of this run as [method, status, Upload-Offset of the answer].
const requests = []

function report(fields) {
  process.stdout.write(`${JSON.stringify({ ...fields, requests })}\n`)
}

function newUpload(callbacks) {
  // A ReadStream with a path: tus-js-client reads the file by ranges and fingerprints it by
  // path, size and mtime, so a later process finds the same upload.
  return new tus.Upload(fs.createReadStream(file), {
    endpoint,
    chunkSize: CHUNK,
    metadata: { manifest, signature },
    urlStorage: new tus.FileUrlStorage(state),
    removeFingerprintOnSuccess: true,
    // No automatic retries: a refusal must show as a failure, not be retried away.
    retryDelays: null,
    onAfterResponse(req, res) {
      requests.push([req.getMethod(), res.getStatus(), res.getHeader('Upload-Offset') ?? null])
    },
    onError(err) {
      fail(`${err} (requests: ${JSON.stringify(requests)})`)
    },
    ...callbacks,
  })
}

async function cut() {
  const upload = newUpload({
    onChunkComplete(_chunkSize, accepted, total) {
      if (accepted < CUT_AFTER) return
      // The cut: stop the upload in the middle and end the process.
      upload.abort().then(() => {
        report({ cut_at: accepted, total, upload_url: upload.url })
        process.exit(0)
      }, (err) => fail(`abort: ${err}`))
    },
    onSuccess() {
      fail(`the upload finished before the cut at ${CUT_AFTER} bytes`)
    },
  })
  upload.start()
}

async function resume() {
  const upload = newUpload({
    onSuccess() {
      const head = requests.find(([method]) => method === 'HEAD')
      report({ resumed_from: head ? Number(head[2]) : null, upload_url: upload.url })
    },
  })
  const previous = await upload.findPreviousUploads()
  if (previous.length !== 1) fail(`expected 1 stored upload to resume, found ${previous.length}`)
  upload.resumeFromPreviousUpload(previous[0])
  upload.start()
}

;(mode === 'cut' ? cut() : resume()).catch((err) => fail(String(err)))
