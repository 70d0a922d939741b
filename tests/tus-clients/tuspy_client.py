"""Uploads one photo to hattama-server with tuspy, in two runs, so the end-to-end test
(tests/tests/tus_clients.rs) sees a real third-party client resume after a cut.

    python tuspy_client.py cut    ENDPOINT FILE STATE MANIFEST SIGNATURE
    python tuspy_client.py resume ENDPOINT FILE STATE MANIFEST SIGNATURE

`cut` creates the upload, sends CUT_AFTER_CHUNKS chunks of CHUNK bytes and stops there; the upload
URL stays in tuspy's own URL storage (the file STATE). `resume` is a fresh process and a fresh
client: the uploader finds the URL by the file's fingerprint, asks the server for the offset
(HEAD) and sends the rest. Each run prints one JSON line on stdout; any error exits 1 with the
server's answer.
"""

import json
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError
from tusclient.storage import filestorage

CHUNK = 4096
CUT_AFTER_CHUNKS = 2


def fail(message):
    sys.stderr.write(f"tuspy_client.py: {message}\n")
    sys.exit(1)


def main():
    if len(sys.argv) != 7 or sys.argv[1] not in ("cut", "resume"):
        fail("usage: tuspy_client.py cut|resume ENDPOINT FILE STATE MANIFEST SIGNATURE")
    mode, endpoint, path, state, manifest, signature = sys.argv[1:]
    storage = filestorage.FileStorage(state)
    try:
        # With store_url, the constructor looks the upload up in the storage and, when found,
        # asks the server for its offset.
        uploader = client.TusClient(endpoint).uploader(
            file_path=path,
            chunk_size=CHUNK,
            metadata={"manifest": manifest, "signature": signature},
            store_url=True,
            url_storage=storage,
        )
        if mode == "cut":
            if uploader.url is not None:
                fail(f"a stored upload exists before the first run: {uploader.url}")
            for _ in range(CUT_AFTER_CHUNKS):
                uploader.upload_chunk()
            # The cut: the process ends with the upload unfinished.
            print(json.dumps({"cut_at": uploader.offset, "upload_url": uploader.url}))
        else:
            if uploader.url is None:
                fail("no stored upload to resume")
            resumed_from = uploader.offset
            uploader.upload()
            print(
                json.dumps(
                    {
                        "resumed_from": resumed_from,
                        "offset": uploader.offset,
                        "upload_url": uploader.url,
                    }
                )
            )
    except TusCommunicationError as err:
        fail(f"{err} (status {err.status_code}, answer {err.response_content!r})")
    finally:
        storage.close()


if __name__ == "__main__":
    main()
