# The public gallery.
g-nav-elections = Elections
g-nav-comparison = Comparison with official results
g-nav-official = Official results
g-nav-data = Open data
g-home-title = Result protocols, photographed at the polling stations
g-home-intro = Observers photograph the result protocol posted at each polling station. Every photo is signed on the phone and kept in a public log, so that nobody can change it afterwards. Here you can see them, compare them with the official figures and download everything.
g-no-elections = No election has been published yet.
g-accepted-of = { $accepted } of { $count } stations have an accepted photo.
g-search-label = Find a polling station
g-search-placeholder = Number or address
g-search-button = Search
g-search-title = Search
g-search-results = { $count ->
    [one] One station found.
   *[other] { $count } stations found.
}
g-stat-accepted = Stations with an accepted photo
g-stat-photographed = Stations photographed
g-stat-captures = Photos
g-stat-verified = Protocols with checked figures
g-stat-differing = Differ from official
g-chart-caption = Coverage: polling stations photographed and accepted
g-col-area = Area
g-by-region = By region
g-by-district = By district
g-precincts = Polling stations
g-no-precincts = No polling station here.
g-precinct-no = Polling station No. { $number }
g-photos = { $count ->
    [one] 1 photo
   *[other] { $count } photos
}
g-no-photo = no photo
g-differs = differs from official
g-official-heading = Official results
g-no-official = No official results have been imported yet.
g-official-versions = { $count ->
    [one] One version of the official results.
   *[other] { $count } versions of the official results.
}
g-official-changes = { $count ->
    [0] No figure changed between versions.
    [one] One figure changed between versions.
   *[other] { $count } figures changed between versions.
}
g-official-broken = { $count ->
    [one] One official protocol breaks the protocol's arithmetic.
   *[other] { $count } official protocols break the protocol's arithmetic.
}
g-official-version = official version { $version }
g-official-history = Changes of the official figures
g-no-changes = The official figures never changed between versions.
g-figures = Figures
g-tr-none = figures from the photo not entered yet
g-tr-pending = figures from the photo being entered
g-tr-disputed = The figures from the photo are still being checked
g-tr-verified = verified by two coordinators
g-inconsistency-note = The protocol itself is inconsistent:
g-differs-notice = The figures on the photographed protocol differ from the official figures.
g-col-line = Line
g-col-observed = Photographed protocol
g-col-official = Official
g-col-difference = Difference
g-col-version = Version
g-col-imported = Imported
g-col-source = Source
g-broken-official = The official figures break these rules of the protocol
g-broken-official-list = Official protocols that break the protocol's arithmetic
g-broken-count = { $count ->
    [one] 1 rule broken
   *[other] { $count } rules broken
}
g-hard = impossible
g-soft = suspicious
g-photos-heading = Photos of the protocol
g-no-photo-yet = No photo of this station's protocol yet.
g-open-full = Open the full photo
g-photo-alt = Photo of the protocol, page { $page }
g-page = Page { $page }
g-captured = Photographed
g-received = Received by the server
g-note = Observer's note:
g-evidence = Evidence
g-photo-sha = Photo SHA-256
g-capture-id = Capture (manifest SHA-256)
g-device = Device key
g-signature = Signature (ed25519)
g-log-index = Public log entry
g-inclusion-proof = inclusion proof
g-not-logged-yet = not in the log yet
g-manifest = signed manifest
g-receipt = server receipt
g-permalink = Permanent address of this page:
g-state-pending = not reviewed yet
g-state-accepted = accepted
g-state-flagged = under review
g-state-rejected = rejected
g-cmp-like-for-like = Stations with both
g-cmp-all = All stations
g-cmp-explain = "Stations with both" compares the same stations. "All stations" adds up every station that has a figure of that kind (the number of stations is in brackets), as the official total does.
g-cmp-drill = Stations where the photographed protocol differs, largest difference first
g-cmp-drill-line = Stations where line { $line } differs, largest difference first
g-cmp-no-diffs = No station differs.
g-more-in-export = { $count } more in
g-none = None.
g-data-intro = Everything shown here can be downloaded and checked independently. Photos are at content-addressed URLs (/photos/SHA-256) that never change.
g-data-precincts = polling stations with their counts
g-data-transcriptions = figures entered from the photos and checked
g-data-official = official figures (every version; CSV in the import format)
g-data-differences = differences between photographed and official figures
g-data-evidence = every capture's signed manifest, signature, receipt and log position
g-data-api = the JSON API (OpenAPI document)
g-verify-heading = Verify it yourself
g-verify-text = Every photo is signed by the observer's phone and recorded in a public append-only log (a Merkle tree, like Certificate Transparency). The auditor recomputes the log, checks its signature and every photo's hash and signature:
g-log-origin = Log name
g-log-key = Log verifier key
g-no-accepted-photo = No accepted photo stands behind these figures yet: they were entered from a photo that a coordinator has not accepted.
g-size-kb = { $size } KB
g-size-mb = { $size } MB
g-check-title = Check this photo yourself
g-check-link = Check this photo yourself
g-check-intro = Download the photo, or use one you were sent, and pick it below. Your browser works out the photo's fingerprint and checks it against what the observer's phone signed and against the public record. Nothing is uploaded.
g-check-download = Download the photo
g-check-no-script = This check needs JavaScript. You can still check the photo with the ordinary tools described below.
g-check-pick = Pick the photo file
g-check-address = Or paste the photo's address on this site
g-check-button = Check
g-check-computed = Fingerprint (SHA-256) of your file:
g-check-same = Yes: this is exactly, byte for byte, the photo the observer's phone signed.
g-check-logged = It is in the public record, which nobody can change afterwards without it showing.
g-check-not-logged = It is not in the public record yet. Try again in a few minutes.
g-check-different = No: this file is not the photo the observer's phone signed. It may have been edited, resized or re-saved.
g-check-bad-signature = The signature does not check out: do not trust this photo, and tell us.
g-check-not-this-site = Only addresses on this site can be checked here. Download the photo and pick the file instead.
g-check-error = The check could not be done (the connection may have dropped). Try again.
g-check-tools-heading = Check it with ordinary tools
g-check-tools-text = On a computer, work out the downloaded file's SHA-256 fingerprint (Linux: sha256sum, macOS: shasum -a 256, Windows: certutil -hashfile FILE SHA256):
g-check-tools-expect = It must be exactly this. If even one character differs, the file is not the signed photo:
g-check-technical = Technical details
g-check-technical-text = The phone signed a statement (the manifest) naming this station and the photo's SHA-256 with its own Ed25519 key; the server recorded it in a public append-only log (a Merkle tree). This page checks the signature, the fingerprint and the log's inclusion proof against the log's published key.
g-search-some = { $count } stations found; the first { $shown } are shown. Add words of the address to narrow it down.
g-open-medium = Open the photo, sized for a phone
g-times-in = Times on this page are in { $zone }.
g-votes-caption = Votes per candidate at the stations with both figures: photographed protocols against official results (count · share of all votes)
g-cmp-total-difference = total difference { $size }
g-chart-all = All stations
g-chart-all-region = The whole region
g-diff-official-more = official: { $n } more
g-diff-official-less = official: { $n } fewer
g-copy = Copy
g-copied = Copied
g-no-photo-help = If you observed at this station, photograph the protocol posted on its wall and send it with the Hattama app; otherwise check back later. Until then the official figures below have nothing to be compared with.
g-cmp-summary = We compare { $both } of { $total } stations: those with both figures checked against the protocol's photo (there are { $observed } such stations) and official figures (there are { $official }).
g-cmp-line-diff = { $name }: photo { $observed }, official { $official }
g-receipt-key = Receipt key (signs every receipt and review decision)
g-package-download = Download the evidence package
g-package-hint = One .zip file: the photos as signed, their signatures, receipts and log proofs, the figures and their history. Anyone can check it offline with “hattama verify-package”.
g-witnesses = Independent witnesses
g-witnessed-yes = Witnessed: { $count } of { $total } independent witnesses cosigned the public log when it held { $size } entries, this photo among them; that is the quorum the election requires
g-witness-cosigned = { $witness } ({ $key }) on { $time }
g-witnessed-not-yet = not yet: the witnesses have not cosigned a log checkpoint that includes this photo
g-set-package-title = Evidence package of the stations that differ
g-set-package-download = { $count ->
    [one] Download the evidence package of 1 station
   *[other] Download the evidence package of { $count } stations
}
g-set-package-hint = One .zip file: a summary (totals observed and official, the stations that differ, largest difference first), then every station’s own evidence package. Anyone can check it offline with “hattama verify-package”.
g-set-package-by-area = By region and district
g-set-package-stations = { $count ->
    [one] 1 station
   *[other] { $count } stations
}
